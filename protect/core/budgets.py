"""Which budget keeps a protection invisible: the typed option and the one place that builds it.

- :class:`VisibilityLimit` (the default, chosen by ``--intensity``): the saved file may be no more
  visible than the same image saved as JPEG at ``like_jpeg`` quality, both scored by FLIP (the
  human-vision model of :mod:`fixative.core.visibility`, exactly FLIP when ``masking`` is 0). The budget
  is measured per image: FLIP(original, its own JPEG at that quality).
- :class:`LpipsLimit` (``--budget``): LPIPS(x + d, x) <= value, the guarantee of earlier versions.

:func:`budget_plan` turns either into a :class:`BudgetPlan` for one image, which makes the
constraint the search uses (for a tile, a batch of tiles, or a reduced-resolution copy of them)
and the final one checked on the saved pixels at full size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from fixative.core.constraints import LpipsBudget
from fixative.core.visibility import DEFAULT_PPD, ViewingModel, VisibilityBudget, VisibilityModel, jpeg_reference
from fixative.errors import ConfigError

if TYPE_CHECKING:
    from fixative.core.perceptual import Perceptual

#: the contrast-masking strength of the visibility budget's second test (1/C0, C0 in L* units): besides FLIP
#: itself, the change must be no more visible than the JPEG's under FLIP with masking, which counts the
#: JPEG's errors (in texture, where they hide) less than a change on flat areas (where nothing hides it)
DEFAULT_MASKING = 1.0
#: the viewings the visibility budget holds under: the image at its own size and at 200 % (zoomed in, as an
#: artist inspects a file); FLIP at 67 ppd alone lets fine pixel patterns through that show when zoomed in
DEFAULT_ZOOMS = (1.0, 2.0)
#: the final check aims this far under the reference JPEG's FLIP (float32 rounding and flip-evaluator's own
#: arithmetic differ in the 5th decimal)
FINAL_MARGIN = 0.998


@dataclass(frozen=True)
class LpipsLimit:
    """LPIPS (alex by default) of the output against the input at most ``value``, in (0, 1)."""

    value: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and 0 < self.value < 1):
            raise ConfigError(f"the LPIPS budget must be between 0 and 1 (exclusive), got {self.value}")

    def describe(self) -> dict:
        return {"budget": self.value, "budget_kind": "lpips"}


@dataclass(frozen=True)
class VisibilityLimit:
    """No more visible than the image saved as JPEG at quality ``like_jpeg`` (1-100; lower = more visible
    allowed), scored by FLIP for a viewer at ``ppd`` pixels per degree, at each of ``zooms`` (1.0 first), by
    FLIP itself and by FLIP with contrast masking of strength ``masking`` (>= 0; 0 = FLIP alone)."""

    like_jpeg: int = 75
    ppd: float = DEFAULT_PPD
    masking: float = DEFAULT_MASKING
    zooms: tuple[float, ...] = DEFAULT_ZOOMS

    def __post_init__(self) -> None:
        if isinstance(self.like_jpeg, bool) or not isinstance(self.like_jpeg, int) or not 1 <= self.like_jpeg <= 99:
            raise ConfigError(f"the JPEG quality of a visibility budget must be a whole number from 1 to 99, "
                              f"got {self.like_jpeg!r}")
        if not (math.isfinite(self.ppd) and self.ppd > 0):
            raise ConfigError(f"pixels per degree must be positive, got {self.ppd}")
        if not (math.isfinite(self.masking) and self.masking >= 0):
            raise ConfigError(f"the masking strength must be 0 or more, got {self.masking}")
        if not self.zooms or not all(math.isfinite(z) and z > 0 for z in self.zooms) or self.zooms[0] != 1.0:
            raise ConfigError(f"zooms must start with 1.0 (the image at its own size), got {self.zooms}")

    def describe(self) -> dict:
        return {"budget_kind": "visibility", "like_jpeg": self.like_jpeg, "ppd": self.ppd, "masking": self.masking,
                "zooms": list(self.zooms)}


Limit = LpipsLimit | VisibilityLimit
Budget = LpipsBudget | VisibilityBudget


def as_limit(budget: float | Limit) -> Limit:
    """A bare number is an LPIPS budget (the engine's historical argument)."""
    if isinstance(budget, LpipsLimit | VisibilityLimit):
        return budget
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise ConfigError(f"a budget is an LPIPS value or a VisibilityLimit, got {budget!r}")
    return LpipsLimit(float(budget))


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


class BudgetPlan:
    """The budget of one image (1x3xHxW at full size): its constraints for the search and for the final check.

    For a visibility limit the reference JPEG of the whole image is made once; a tile's budget is the
    FLIP of its crop of that JPEG, and a reduced-resolution copy is scored by the model at the matching
    pixels per degree against the equally reduced JPEG (a proxy; the final check is at full size).
    """

    def __init__(self, limit: Limit, perceptual: Perceptual, source: Tensor):
        self.limit = limit
        self.perceptual = perceptual
        self.source = source
        self.reference: Tensor | None = None
        self.final_value: float | None = None
        if isinstance(limit, VisibilityLimit):
            self.reference = jpeg_reference(source, limit.like_jpeg)
            self.flip = self._model(1.0).normalised(self.reference, source)
            self.final_value = float(self.flip.models[0](self.reference, source).max()) * FINAL_MARGIN

    def _model(self, scale: float) -> ViewingModel:
        """FLIP itself at the image's own size (the independent measure's guarantee), and FLIP with masking at
        every zoom (where the change may not show more than the JPEG's errors, hidden in texture, do)."""
        m = self.limit.masking
        models = [VisibilityModel(self.limit.ppd * scale / z, (0.0, m) if k == 0 else (m,)) if m > 0
                  else VisibilityModel(self.limit.ppd * scale / z) for k, z in enumerate(self.limit.zooms)]
        return ViewingModel(models)

    def constraint(self, src: Tensor, crop: Callable[[Tensor], Tensor] | None = None) -> Budget:
        """The search's constraint for ``src`` (Nx3xhxw): the image, tiles of it (``crop`` maps a full-size
        image to the same tiles), or a resized copy of those (its size tells the scale)."""
        if isinstance(self.limit, LpipsLimit):
            return LpipsBudget(self.perceptual, src, self.limit.value)
        ref = crop(self.reference) if crop is not None else self.reference
        scale = src.shape[-1] / ref.shape[-1]
        ref = _resize(ref, tuple(src.shape[-2:]))
        model = self._model(scale).normalised(ref, src)
        budget = model.models[0](ref, src).clamp(1e-4, 0.99)
        return VisibilityBudget(model, src, float(budget.min()))  # a batch of tiles: the strictest tile's

    def final(self) -> Budget:
        """The guarantee on the saved pixels at full size: LPIPS, or no more visible than the reference JPEG by
        FLIP itself and by FLIP with masking, under each viewing (zoom)."""
        if isinstance(self.limit, LpipsLimit):
            return LpipsBudget(self.perceptual, self.source, self.limit.value)
        return VisibilityBudget(self.flip, self.source, self.final_value)


def budget_plan(budget: float | Limit, perceptual: Perceptual, source: Tensor) -> BudgetPlan:
    """The factory the engine calls once per image."""
    return BudgetPlan(as_limit(budget), perceptual, source)


@torch.no_grad()
def jpeg_equivalent(source: Tensor, flip_value: float, ppd: float = DEFAULT_PPD,
                    measure: Callable[[Tensor, Tensor], float] | None = None) -> int:
    """The JPEG quality (1-100) whose re-encoding of ``source`` (1x3xHxW) is about as visible as ``flip_value``:
    the lowest quality whose FLIP is at most ``flip_value`` (100 if even quality 100 is more visible).
    ``measure(original, other)``: the FLIP to use (default: :class:`VisibilityModel`, which agrees with
    flip-evaluator; pass :func:`fixative.core.visibility.flip_of_file` for the package itself). Bisection over the
    quality (FLIP falls as quality rises)."""
    if measure is None:
        model = VisibilityModel(ppd)
        ref = model.reference(source)

        def measure(_: Tensor, other: Tensor) -> float:
            return float(model.distance_to(other, ref).max())

    def flip_at(q: int) -> float:
        return measure(source, jpeg_reference(source, q))

    lo, hi = 1, 100  # answer in [lo, hi]
    if flip_at(hi) > flip_value:
        return 100
    while lo < hi:
        mid = (lo + hi) // 2
        if flip_at(mid) <= flip_value:
            hi = mid
        else:
            lo = mid + 1
    return lo
