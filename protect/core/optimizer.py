"""The optimizer that finds the perturbation, and the two baselines it is compared with.

Methods (``--method``):

- ``fixative`` (default): Adam on the objective plus an adaptive LPIPS penalty (a Lagrange
  multiplier that rises while steps overshoot the budget and decays while they stay inside), a
  cosine learning-rate schedule over the step/time budget, and a cheap LPIPS projection after
  every step (bisection on the perturbation's scale, LPIPS forwards only) so that every iterate
  is feasible. The best feasible iterate is kept, so a time limit or early stop never returns
  a worse result than one seen before. Handling the budget inside the loop, rather than
  scaling back an over-budget result at the end, is where most of the gain comes from.
- ``glaze``: the Glaze paper's formulation, Adam on
  ``objective + alpha * max(LPIPS - budget, 0)`` with fixed alpha = 100 and lr = 0.005.
- ``pgd``: the Nightshade research release's style, L-inf sign-gradient PGD with eps = 0.04
  and step eps/10, no LPIPS in the loop.

Each method is a step class of :mod:`fixative.core.steps` (its start, loss, update, projection and
schedule), picked once from :data:`fixative.core.steps.METHOD_STEPS`; :func:`search` runs the loop they
share on a :class:`fixative.core.problem.SearchProblem`.

All three share the engine's final guarantee (quantise, then scale back until the saved
pixels are within the LPIPS budget), so benchmarks compare them on equal terms.

Robust protection (``OptimizerSettings.robust``, see :mod:`fixative.core.robust`): at every step the
image goes through ``samples`` randomly drawn chains of countermeasures (JPEG, resizing, noise,
blur, shifts, encode-decode) before the encoders and the objective is their mean (expectation over
transformation); LPIPS stays on the untransformed image. The objective is then a random sample, so
the search keeps its final iterate (the cosine schedule has settled it) instead of the best-scoring
one, and does not stop early.

Mixed precision: the encoders and LPIPS run under ``torch.autocast`` (bf16) when the settings
ask for it; the final budget check in the engine always runs in float32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fixative.core.constraints import LpipsBudget
from fixative.core.fullsize import SavedFileLpips, ViewedImages
from fixative.core.precision import autocast_dtype, precision_context
from fixative.core.problem import SearchProblem
from fixative.core.robust import RobustSettings, settings_for
from fixative.core.steps import GLAZE_ALPHA, METHOD_STEPS, MU_DOWN, MU_FLOOR, MU_UP, PGD_EPS
from fixative.core.views import TrainingViews, views_for
from fixative.errors import ConfigError
from fixative.vocabulary import Method, Precision

if TYPE_CHECKING:
    from fixative.core.encoder import Encoder
    from fixative.core.objectives import Objective

log = logging.getLogger(__name__)

#: re-exported: the methods' constants (:mod:`fixative.core.steps`), mixed precision
#: (:mod:`fixative.core.precision`), the full-size images of a search below full size (:mod:`fixative.core.fullsize`)
#: the search methods and precisions by name (the vocabularies :class:`~fixative.vocabulary.Method`, ``Precision``)
METHODS = tuple(m.value for m in Method)
PRECISIONS = tuple(p.value for p in Precision)
__all__ = ["GLAZE_ALPHA", "METHODS", "MU_DOWN", "MU_FLOOR", "MU_UP", "PGD_EPS", "PRECISIONS", "OptimizerSettings",
           "SavedFileLpips", "SearchOutcome", "StepCallback", "StepInfo", "ViewedImages", "autocast_dtype",
           "precision_context", "search"]

_Search = SearchProblem  # the old private name (tests reach the per-image projection through it)


@dataclass
class OptimizerSettings:
    """How long and how to search. ``steps`` and ``seconds`` are limits; whichever comes first wins.

    - ``method``: one of :data:`METHODS`.
    - ``steps``: at most this many gradient steps (each = one encoder forward + backward).
    - ``seconds``: wall-clock limit for the search, in seconds (None = no limit).
    - ``lr``: step size in [0,1] pixel units (None = the method's default).
    - ``patience``: early stop after this many steps without a 0.1 % improvement (0 = never).
    - ``seed``: seeds the random start; with a step limit (and no time limit) the result is
      deterministic on the CPU.
    - ``linf``: optional per-pixel cap in [0,1] units, on top of the LPIPS budget.
    - ``precision``: "auto" (bf16 where the hardware computes it natively), "fp32", "bf16",
      "fp16" (GPU only).
    - ``channels_last``: NHWC memory layout for the convolutions (faster with oneDNN/cuDNN).
    - ``robust``: countermeasures to average over at each step (:class:`fixative.core.robust.RobustSettings`,
      or a preset name "off", "web", "strong"); None = off. Its draws are seeded by ``seed``.
    - ``views``: training views (:class:`fixative.core.views.TrainingViews`, or a preset name "train", "off"):
      the encoders see a trainer's resized, cropped, flipped views of the image instead of the image
      at its own size, and the search runs at the largest view's resolution; None = off.
    """

    method: str = "fixative"
    steps: int = 300
    seconds: float | None = None
    lr: float | None = None
    patience: int = 60
    seed: int = 0
    linf: float | None = None
    precision: str = "auto"
    channels_last: bool = True
    robust: RobustSettings | None = None
    views: TrainingViews | None = None

    def __post_init__(self) -> None:
        self.robust = settings_for(self.robust)
        self.views = views_for(self.views)
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.seconds is not None and self.seconds <= 0:
            raise ConfigError(f"seconds must be positive, got {self.seconds}")
        if self.linf is not None and not 0 < self.linf <= 1:
            raise ConfigError(f"the L-inf cap must be in (0, 1], got {self.linf}")


@dataclass
class StepInfo:
    """What a per-step callback receives. ``objective`` is the method's loss (lower is better)."""

    step: int
    max_steps: int
    elapsed: float
    seconds: float | None
    objective: float
    lpips: float
    best_objective: float

    @property
    def fraction(self) -> float:
        """Progress in [0,1]: the larger of the step and time fractions."""
        f = self.step / self.max_steps
        if self.seconds:
            f = max(f, self.elapsed / self.seconds)
        return min(1.0, f)


StepCallback = Callable[[StepInfo], "bool | None"]


@dataclass
class SearchOutcome:
    """The perturbation found (before the engine's final quantise-and-scale-back)."""

    delta: Tensor
    steps: int
    seconds: float
    stopped: str  # "steps", "seconds", "early-stop" or "cancelled"
    best_objective: float
    history: list[float] = field(default_factory=list)


def search(
    source: Tensor,
    encoders: Sequence[Encoder],
    objective: Objective,
    budget: LpipsBudget,
    settings: OptimizerSettings,
    callback: StepCallback | None = None,
    viewed: ViewedImages | None = None,
    calibrate: Callable[[Tensor], float] | None = None,
    saved: SavedFileLpips | None = None,
) -> SearchOutcome:
    """Find a perturbation of ``source`` (Nx3xHxW in [0,1]) for ``objective`` within ``budget``.

    ``objective`` and ``budget`` must already be prepared for this source. The N images (tiles of one
    image, batched on a GPU) are independent problems solved in one pass: each has its own LPIPS
    multiplier, projection and best iterate; only the step/time limits and early stop are shared.
    The callback is called after every step with a :class:`StepInfo` (objective: the batch's mean;
    LPIPS: its largest); returning ``False`` cancels the search (the best result so far is returned).
    ``viewed``: with training views, the full-size images the views are made from (``source`` is then the
    work-resolution copy that the budget is measured on, and the objective a random sample, as robust).
    ``calibrate``: delta -> the budget's measure of the file it would give (at full size, after quantising);
    called at every tenth of the search, it rescales the limit the search projects onto (the budget at work
    resolution is a proxy for the one on the saved file), so that the final check needs little or no
    scaling back; ``saved``: the LPIPS penalty is then taken on the saved file (:class:`SavedFileLpips`).
    """
    s = settings
    problem = SearchProblem(source, encoders, objective, budget, s, callback, viewed, saved)
    # a sampled objective (robust chains, training views): keep the final iterate, no early stop
    sampled = problem.sampler is not None or viewed is not None
    method = METHOD_STEPS[s.method](problem, budget, s, sampled, calibrate)
    start = time.perf_counter()
    delta = method.start()
    stopped, history, step, last_step_time = "steps", [], 0, 0.0
    while step < s.steps:
        elapsed = time.perf_counter() - start
        if s.seconds is not None and elapsed + last_step_time > s.seconds:
            stopped = "seconds"
            break
        t0 = time.perf_counter()
        progress = max(step / s.steps, elapsed / s.seconds) if s.seconds else step / s.steps
        method.schedule(delta, progress)
        obj, lp = problem.forward(delta, with_lpips=method.uses_lpips)
        values = obj.detach().cpu()
        loss = method.loss(delta, obj, lp, values)
        history.append(float(values.mean()))
        delta.grad = None
        loss.backward()
        with torch.no_grad():
            method.step(delta)
        step += 1
        last_step_time = time.perf_counter() - t0
        if callback is not None:
            lp_value = float(lp.detach().max()) if lp is not None else float("nan")
            info = StepInfo(step, s.steps, time.perf_counter() - start, s.seconds, float(values.mean()), lp_value,
                            float(method.best.mean()))
            if callback(info) is False:
                stopped = "cancelled"
                break
        if method.converged():
            stopped = "early-stop"
            break
    result = method.result(delta)
    best_obj = float(method.best.mean())
    seconds = time.perf_counter() - start
    log.debug("%s: %d steps in %.1f s (%s), best objective %.4f", s.method, step, seconds, stopped, best_obj)
    return SearchOutcome(result, step, seconds, stopped, best_obj, history)
