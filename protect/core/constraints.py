"""Constraints that keep a perturbation imperceptible, separate from the objective.

- :class:`LpipsBudget`: LPIPS(x + d, x) <= budget (typical budgets 0.03-0.10 with LPIPS alex).
- :class:`LinfCap`: |d| <= eps per pixel, eps in [0,1] units (0.04 ~ 10/255).
- The valid pixel range: x + d stays inside [0,1].

The visibility budget (a human-vision model, :mod:`fixative.core.visibility`) has the same interface.

The budget is a guarantee: :func:`scale_back` (used by every budget's ``scale_back``) shrinks a perturbation, after
quantisation to the output's bit depth, until the saved pixels are within the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fixative.core.perceptual import LpipsReference, Perceptual


def quantize(image: Tensor, levels: int = 255) -> Tensor:
    """Round an image in [0,1] to ``levels`` steps (255 for 8-bit, 65535 for 16-bit output)."""
    return torch.round(image.clamp(0, 1) * levels) / levels


@dataclass
class LinfCap:
    """Per-pixel cap on the perturbation, ``eps`` in [0,1] units."""

    eps: float

    def project(self, delta: Tensor) -> Tensor:
        return delta.clamp(-self.eps, self.eps)


class MeasuredBudget:
    """``metric(x + d, x) <= budget`` against a fixed original whose reference is computed once.

    ``metric`` has ``reference(source)`` and a differentiable ``distance_to(candidate, reference)`` (shape
    [N]); ``growth``: how the metric grows with the scale of a change (for :func:`scale_back`'s first guess).
    The interface the search and the final check use: ``budget``, ``value``, ``measure``, ``scale_back``.
    """

    growth = 1.0
    name = "budget"

    def __init__(self, metric, source: Tensor, budget: float):
        if not (math.isfinite(budget) and 0 < budget < 1):
            raise ValueError(f"{self.name} must be in (0, 1), got {budget}")
        self.metric = metric
        self.source = source
        self.budget = float(budget)
        self.reference = metric.reference(source)

    def value(self, candidate: Tensor) -> Tensor:
        """The metric of a candidate image against the original, differentiable; shape [N]."""
        return self.metric.distance_to(candidate, self.reference)

    @torch.no_grad()
    def measure(self, candidate: Tensor) -> float:
        return float(self.value(candidate).max())

    @torch.no_grad()
    def scale_back(
        self,
        delta: Tensor,
        limit: float | None = None,
        levels: int | None = None,
        iters: int = 12,
        max_scale: float = 1.0,
        tolerance: float = 0.005,
    ) -> tuple[Tensor, float, float]:
        """Largest scale s in [0, max_scale] with metric(q(x + s*d), x) <= limit (default: the budget);
        see :func:`scale_back`."""
        return scale_back(self.measure, self.source, delta, self.budget if limit is None else limit, levels, iters,
                          max_scale, tolerance, growth=self.growth)


class LpipsBudget(MeasuredBudget):
    """LPIPS(x + d, x) <= budget (LPIPS grows about as the square of a change's scale)."""

    growth = 2.0
    name = "LPIPS budget"
    reference: LpipsReference

    def __init__(self, perceptual: Perceptual, source: Tensor, budget: float):
        super().__init__(perceptual, source, budget)
        self.perceptual = perceptual


@torch.no_grad()
def scale_back(
    measure: Callable[[Tensor], float],
    source: Tensor,
    delta: Tensor,
    limit: float,
    levels: int | None = None,
    iters: int = 12,
    max_scale: float = 1.0,
    tolerance: float = 0.005,
    growth: float = 2.0,
) -> tuple[Tensor, float, float]:
    """Largest scale s in [0, max_scale] with measure(q(x + s*d)) <= limit, for any budget's ``measure``.

    ``q`` quantises to ``levels`` when given, so the check is on exactly the pixels that
    will be saved. With ``max_scale`` > 1 a perturbation that leaves budget unused is
    stretched to use it. Returns (s * d after the range clamp and quantisation, its measure,
    s). A bracket search (the measure grows with s in practice): each next scale is where the
    measured end of the bracket predicts the limit, the measure growing about as s ** ``growth``
    (2 for LPIPS), kept inside the bracket; it stops once the bracket is within ``tolerance``
    (relative) or after ``iters`` measurements, so a full-size check of a large image costs a few
    passes. The returned candidate is always one that was measured within the limit.
    """

    def make(s: float) -> Tensor:
        out = (source + s * delta).clamp(0, 1)
        return quantize(out, levels) if levels else out

    full = measure(make(1.0))
    if full <= limit:
        if max_scale <= 1.0:
            return make(1.0) - source, full, 1.0
        top = measure(make(max_scale))
        if top <= limit:
            return make(max_scale) - source, top, max_scale
        lo, hi, lo_val, hi_val = 1.0, max_scale, full, top
    else:
        lo, hi, lo_val, hi_val = 0.0, 1.0, 0.0, full
    for _ in range(iters):
        if hi - lo <= tolerance * hi:
            break
        guess = hi * (limit / hi_val) ** (1 / growth) * (1 - tolerance / 2) if hi_val > 0 else (lo + hi) / 2
        margin = 0.1 * (hi - lo)
        mid = min(max(guess, lo + margin), hi - margin)
        v = measure(make(mid))
        if v <= limit:
            lo, lo_val = mid, v
        else:
            hi, hi_val = mid, v
    if lo == 0.0:
        return torch.zeros_like(delta), 0.0, 0.0
    return make(lo) - source, lo_val, lo
