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

All three share the engine's final guarantee (quantise, then scale back until the saved
pixels are within the LPIPS budget), so benchmarks compare them on equal terms.

Robust protection (``OptimizerSettings.robust``, see :mod:`protect.robust`): at every step the
image goes through ``samples`` randomly drawn chains of countermeasures (JPEG, resizing, noise,
blur, shifts, encode-decode) before the encoders and the objective is their mean (expectation over
transformation); LPIPS stays on the untransformed image. The objective is then a random sample, so
the search keeps its final iterate (the cosine schedule has settled it) instead of the best-scoring
one, and does not stop early.

Mixed precision: the encoders and LPIPS run under ``torch.autocast`` (bf16) when the settings
ask for it; the final budget check in the engine always runs in float32.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from protect.constraints import LinfCap, LpipsBudget
from protect.errors import ConfigError
from protect.robust import RobustSettings, Sampler, decode_pass, settings_for

if TYPE_CHECKING:
    from protect.encoders import Encoder
    from protect.objectives import Objective

log = logging.getLogger(__name__)

METHODS = ("fixative", "glaze", "pgd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PGD_EPS = 0.04
GLAZE_ALPHA = 100.0
#: the LPIPS multiplier of the fixative method: x MU_UP after a step that left the budget (at least
#: MU_FLOOR), x MU_DOWN after one that stayed inside
MU_UP, MU_DOWN, MU_FLOOR = 1.15, 0.9, 0.05


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
    - ``robust``: countermeasures to average over at each step (:class:`protect.robust.RobustSettings`,
      or a preset name "off", "web", "strong"); None = off. Its draws are seeded by ``seed``.
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

    def __post_init__(self) -> None:
        self.robust = settings_for(self.robust)
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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain float32."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type == "cpu":
            raise ConfigError("fp16 is for GPUs; use bf16 or fp32 on the CPU")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 where it is native (Ampere+ GPUs, CPUs with AVX512-BF16/AMX), else fp32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def precision_context(dtype: torch.dtype | None, device: torch.device):
    """Autocast for the encoders and LPIPS forwards, or a no-op for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Search:
    """State shared by the three methods: the models, limits, callback and the per-step forward."""

    def __init__(self, source, encoders, objective, budget, settings, callback):
        self.source = source
        self.encoders = list(encoders)
        self.objective = objective
        self.budget = budget
        self.settings = settings
        self.callback = callback
        self.device = source.device
        self.amp = autocast_dtype(settings.precision, self.device)
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.cap = LinfCap(settings.linf) if settings.linf else None
        robust = settings.robust
        self.roundtrip = decode_pass(self.encoders) if robust is not None and robust.vae_prob > 0 else None
        self.sampler = (Sampler(robust, settings.seed, can_decode=self.roundtrip is not None)
                        if robust is not None else None)
        self._shifted: OrderedDict[tuple[int, int], list[Tensor]] = OrderedDict()

    def forward(self, delta: Tensor, with_lpips: bool) -> tuple[Tensor, Tensor | None]:
        """Per-image objective (and LPIPS) of x + delta, shapes [N]; differentiable w.r.t. delta. With robust
        settings the objective is the mean over this step's drawn countermeasures; LPIPS is of x + delta itself."""
        image = (self.source + delta).clamp(0, 1).contiguous(memory_format=self.memory_format)
        if self.sampler is None:
            with precision_context(self.amp, self.device):
                latents = [e(image) for e in self.encoders]
            obj = self.objective.per_sample(latents).float()
        else:
            terms = []
            for draw in self.sampler.draws():
                seen = draw.apply(image, self.roundtrip).contiguous(memory_format=self.memory_format)
                with precision_context(self.amp, self.device):
                    latents = [e(seen) for e in self.encoders]
                terms.append(self.objective.per_sample(latents, self._references(draw.shift)).float())
            obj = torch.stack(terms).mean(0)
        lp = None
        if with_lpips:
            with precision_context(self.amp, self.device):
                lp = self.budget.value(image).float()
        return obj, lp

    def _references(self, shift: tuple[int, int] | None) -> list[Tensor] | None:
        """The objective's reference latents for an image shifted by ``shift`` px (cached, at most 16)."""
        ref = getattr(self.objective, "reference_image", None)
        if shift is None or ref is None:
            return None
        if shift not in self._shifted:
            moved = torch.roll(ref, shifts=shift, dims=(-2, -1))
            with torch.no_grad(), precision_context(self.amp, self.device):
                self._shifted[shift] = [e(moved).float() for e in self.encoders]
            if len(self._shifted) > 16:
                self._shifted.popitem(last=False)
        return self._shifted[shift]

    def measure(self, delta: Tensor) -> Tensor:
        """LPIPS of each image of x + delta (shape [N], on the CPU), without gradients."""
        image = (self.source + delta).clamp(0, 1).contiguous(memory_format=self.memory_format)
        with torch.no_grad(), precision_context(self.amp, self.device):
            return self.budget.value(image).float().cpu()

    def project_box(self, delta: Tensor) -> None:
        """In place: keep x + d in [0,1] and |d| under the L-inf cap."""
        if self.cap is not None:
            delta.clamp_(-self.cap.eps, self.cap.eps)
        delta.copy_((self.source + delta).clamp(0, 1) - self.source)

    def shrink_to(self, delta: Tensor, limit: float, iters: int = 6) -> Tensor:
        """In place: scale each image's delta so that its LPIPS is just under ``limit`` (those already
        under it are left alone); returns the per-image scale factors (shape [N])."""
        over = self.measure(delta) > limit
        scale = torch.ones(delta.shape[0])
        if not bool(over.any()):
            return scale
        lo, hi = torch.zeros(delta.shape[0]), torch.ones(delta.shape[0])
        for _ in range(iters):
            mid = (lo + hi) / 2
            ok = self.measure(delta * _per_image(mid, delta)) <= limit
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        scale = torch.where(over, lo, scale)
        delta.mul_(_per_image(scale, delta))
        return scale


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """[N] values shaped to multiply an NCHW tensor image by image."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _cosine(progress: float, start: float, end: float) -> float:
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, progress)))


def search(
    source: Tensor,
    encoders: Sequence[Encoder],
    objective: Objective,
    budget: LpipsBudget,
    settings: OptimizerSettings,
    callback: StepCallback | None = None,
) -> SearchOutcome:
    """Find a perturbation of ``source`` (Nx3xHxW in [0,1]) for ``objective`` within ``budget``.

    ``objective`` and ``budget`` must already be prepared for this source. The N images (tiles of one
    image, batched on a GPU) are independent problems solved in one pass: each has its own LPIPS
    multiplier, projection and best iterate; only the step/time limits and early stop are shared.
    The callback is called after every step with a :class:`StepInfo` (objective: the batch's mean;
    LPIPS: its largest); returning ``False`` cancels the search (the best result so far is returned).
    """
    s = settings
    run = _Search(source, encoders, objective, budget, s, callback)
    start = time.perf_counter()

    if s.method == "pgd":
        delta = torch.zeros_like(source)
        step_size = s.lr or PGD_EPS / 10
        eps = min(PGD_EPS, s.linf) if s.linf else PGD_EPS
    else:
        # every image of a batch starts from the noise it would get alone (same seed, same start)
        noise = torch.cat([
            (torch.rand((1, *source.shape[1:]), generator=torch.Generator().manual_seed(s.seed)) * 2 - 1) / 255
            for _ in range(source.shape[0])
        ])
        delta = noise.to(source.device, source.dtype)
        lr0 = s.lr or (0.01 if s.method == "fixative" else 0.005)
    delta.requires_grad_(True)
    adam = torch.optim.Adam([delta], lr=lr0, betas=(0.9, 0.99)) if s.method != "pgd" else None

    inner = budget.budget * 0.97  # margin for autocast error; the engine's fp32 check is exact
    count = source.shape[0]
    mu = torch.zeros(count)  # one LPIPS multiplier per image: the images of a batch are independent
    best = torch.full((count,), math.inf)
    best_delta = delta.detach().clone()
    since_best, stopped, history, step = 0, "steps", [], 0
    robust = run.sampler is not None  # a sampled objective: keep the final iterate, no early stop
    last_step_time = 0.0
    while step < s.steps:
        elapsed = time.perf_counter() - start
        if s.seconds is not None and elapsed + last_step_time > s.seconds:
            stopped = "seconds"
            break
        t0 = time.perf_counter()
        progress = step / s.steps
        if s.seconds:
            progress = max(progress, elapsed / s.seconds)

        obj, lp = run.forward(delta, with_lpips=s.method != "pgd")
        values = obj.detach().cpu()
        lp_value = float(lp.detach().max()) if lp is not None else float("nan")
        if s.method == "fixative":
            # the iterate is feasible (projected at the end of the previous step): track the best
            since_best = 0 if bool((values < best - 1e-3 * best.abs()).any()) else since_best + 1
            better = values < best
            if bool(better.any()):
                best = torch.where(better, values, best)
                if not robust:  # a sampled (robust) objective is noisy: the final iterate is kept instead
                    best_delta[better.to(delta.device)] = delta.detach()[better.to(delta.device)]
            loss = (obj + mu.to(obj.device) * lp / budget.budget).sum()
        elif s.method == "glaze":
            best = torch.minimum(best, values)
            loss = (obj + GLAZE_ALPHA * torch.relu(lp - budget.budget)).sum()
        else:
            best = torch.minimum(best, values)
            loss = obj.sum()
        history.append(float(values.mean()))

        if delta.grad is not None:
            delta.grad = None
        loss.backward()
        with torch.no_grad():
            if s.method == "pgd":
                delta -= step_size * delta.grad.sign()
                delta.clamp_(-eps, eps)
                run.project_box(delta)
            elif s.method == "glaze":
                adam.step()
                run.project_box(delta)
            else:
                for group in adam.param_groups:
                    group["lr"] = _cosine(progress, lr0, lr0 * 0.05)
                adam.step()
                run.project_box(delta)
                overshoot = run.measure(delta) > inner
                # dual update of the LPIPS multiplier: up while steps leave the budget, down inside
                mu = torch.where(overshoot, torch.clamp(mu * MU_UP, min=MU_FLOOR), mu * MU_DOWN)
                if bool(overshoot.any()):
                    run.shrink_to(delta, inner)
        step += 1
        last_step_time = time.perf_counter() - t0

        if callback is not None:
            info = StepInfo(step, s.steps, time.perf_counter() - start, s.seconds, float(values.mean()), lp_value,
                            float(best.mean()))
            if callback(info) is False:
                stopped = "cancelled"
                break
        if s.method == "fixative" and s.patience and since_best >= s.patience and not robust:
            stopped = "early-stop"
            break

    if s.method == "fixative" and robust:
        result = delta.detach().clone()
    elif s.method == "fixative":
        # the final iterate has not been scored yet
        with torch.no_grad():
            obj, _ = run.forward(delta, with_lpips=False)
        better = obj.cpu() < best
        best = torch.where(better, obj.cpu(), best)
        best_delta[better.to(delta.device)] = delta.detach()[better.to(delta.device)]
        result = best_delta
    else:
        result = delta.detach().clone()
    best_obj = float(best.mean())
    seconds = time.perf_counter() - start
    log.debug("%s: %d steps in %.1f s (%s), best objective %.4f", s.method, step, seconds, stopped, best_obj)
    return SearchOutcome(result, step, seconds, stopped, best_obj, history)
