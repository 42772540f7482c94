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

from fixative.core.constraints import LinfCap, LpipsBudget
from fixative.core.robust import Draw, RobustSettings, Sampler, decode_pass, resize, settings_for
from fixative.core.views import TrainingViews, View, ViewSampler, views_for
from fixative.defaults import METHODS, PRECISIONS  # noqa: F401 (re-exported)
from fixative.errors import ConfigError

if TYPE_CHECKING:
    from fixative.core.encoder import Encoder
    from fixative.core.objectives import Objective

log = logging.getLogger(__name__)

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


class ViewedImages:
    """The full-size original and reference image (the target, or the original for "away") as training views.

    The search runs at the work resolution (:func:`fixative.core.views.work_size`); the saved file is the original
    at full size plus the perturbation upsampled to it. A trainer's view of that file is, resizing being
    linear, the view of the original plus the perturbation resized to the view's size: the original's and
    the reference's resized copies are made once per size from the full-size pixels, so a step costs what the
    view costs, whatever the artwork's size.

    ``reference_latents`` of a view (and the chain's shift) are computed without gradients and cached
    (at most 32); ``start`` is, per view size and encoder, the unperturbed squared latent distance per
    latent element, measured on the first view of that size: the objective's normaliser.
    """

    def __init__(self, source: Tensor, reference: Tensor, views: TrainingViews, seed: int, towards: bool):
        if source.shape[0] != 1:
            raise ConfigError("training views protect one image at a time")
        self.source, self.reference, self.towards = source, reference, towards
        self.sampler = ViewSampler(views, source.shape[-2], source.shape[-1], seed)
        self._resized: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        self._latents: OrderedDict[tuple, list[Tensor]] = OrderedDict()
        self._start: dict[tuple[int, int], list[float]] = {}

    def resized(self, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(original, reference) at ``size`` (antialiased bicubic from full size), cached."""
        if size not in self._resized:
            with torch.no_grad():
                self._resized[size] = (resize(self.source, size), resize(self.reference, size))
        return self._resized[size]

    def references(self, view: View, draw: Draw, encoders, amp, device) -> tuple[list[Tensor], list[Tensor]]:
        """Per encoder: the reference latent of this view (after the chain's shift), and the normaliser."""
        key = (view, draw.shift)
        if key not in self._latents:
            src, ref = self.resized(view.size)
            with torch.no_grad(), precision_context(amp, device):
                self._latents[key] = [e(draw.geometry(view.crop(ref))).float() for e in encoders]
                if view.size not in self._start:
                    if self.towards:
                        seen = [e(draw.geometry(view.crop(src))).float() for e in encoders]
                        dist = [((a - b) ** 2).mean() for a, b in zip(seen, self._latents[key], strict=True)]
                    else:
                        dist = [(z**2).mean() for z in self._latents[key]]
                    self._start[view.size] = [max(float(d), 1e-12) for d in dist]
            if len(self._latents) > 32:
                self._latents.popitem(last=False)
        refs = self._latents[key]
        starts = [torch.full((1,), s * r[0].numel(), device=r.device) for s, r in
                  zip(self._start[view.size], refs, strict=True)]
        return refs, starts


class SavedFileLpips:
    """LPIPS of the saved file, as the search sees it when it runs below full size (training views).

    LPIPS is not scale-invariant: a perturbation searched at work resolution and upsampled into an 18 MP
    file puts its texture at the few-pixel scale that LPIPS (alex) weighs most, so its LPIPS on the file
    can be several times its LPIPS at work resolution. :meth:`penalty` measures the real thing on a random
    ``crop`` x ``crop`` px window of the full-size image each step (the perturbation upsampled there,
    differentiably): the search's LPIPS penalty then steers the perturbation towards what the file can
    afford, at the cost of one small LPIPS pass. LPIPS being a spatial mean, the windows estimate the whole
    image's value; the budget itself is still enforced on the whole file by the engine's final check.
    """

    def __init__(self, perceptual, source: Tensor, work: tuple[int, int], cap: float | None, seed: int,
                 crop: int = 512):
        self.perceptual, self.source, self.work, self.cap = perceptual, source, tuple(work), cap
        self.crop = crop
        self.generator = torch.Generator().manual_seed(int(seed) * 7907 + 3)

    def _pick(self, count: int) -> int:
        return int(torch.randint(0, max(1, count), (), generator=self.generator))

    def penalty(self, delta: Tensor) -> Tensor:
        """LPIPS (shape [1]) of one random full-size window of the file ``delta`` (work resolution) gives."""
        height, width = self.source.shape[-2:]
        (h, w), c = self.work, min(self.crop, *self.source.shape[-2:])
        fy, fx = height / h, width / w
        top, left = self._pick(height - c + 1), self._pick(width - c + 1)
        # the work-resolution region under the window, with a margin for the bicubic kernel
        y0, x0 = max(0, math.floor(top / fy) - 3), max(0, math.floor(left / fx) - 3)
        y1, x1 = min(h, math.ceil((top + c) / fy) + 3), min(w, math.ceil((left + c) / fx) + 3)
        up = torch.nn.functional.interpolate(delta[..., y0:y1, x0:x1], scale_factor=(fy, fx), mode="bicubic",
                                             align_corners=False, recompute_scale_factor=False)
        oy, ox = min(top - round(y0 * fy), up.shape[-2] - c), min(left - round(x0 * fx), up.shape[-1] - c)
        part = up[..., oy : oy + c, ox : ox + c]
        if self.cap is not None:
            part = part.clamp(-self.cap, self.cap)
        window = self.source[..., top : top + c, left : left + c]
        return self.perceptual.distance((window + part).clamp(0, 1), window)


class _Search:
    """State shared by the three methods: the models, limits, callback and the per-step forward."""

    def __init__(self, source, encoders, objective, budget, settings, callback, viewed=None, saved=None):
        self.source = source
        self.viewed = viewed
        self.saved = saved
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
        if self.viewed is not None:
            obj = self._viewed_objective(delta)
        elif self.sampler is None:
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
                lp = (self.budget.value(image) if self.saved is None else self.saved.penalty(delta)).float()
        return obj, lp

    def _viewed_objective(self, delta: Tensor) -> Tensor:
        """The objective averaged over this step's training views (each composed with a drawn robust chain)."""
        viewed, terms = self.viewed, []
        draws = self.sampler.draws() if self.sampler is not None else [Draw()]
        for draw in draws:
            view = viewed.sampler.draw()
            src, _ = viewed.resized(view.size)
            seen = view.crop((src + resize(delta, view.size)).clamp(0, 1))
            seen = draw.apply(seen, self.roundtrip).contiguous(memory_format=self.memory_format)
            refs, starts = viewed.references(view, draw, self.encoders, self.amp, self.device)
            with precision_context(self.amp, self.device):
                latents = [e(seen) for e in self.encoders]
            terms.append(self.objective.per_sample(latents, refs, starts).float())
        return torch.stack(terms).mean(0)

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

    def shrink_to(self, delta: Tensor, limit: float, iters: int = 6, values: Tensor | None = None) -> Tensor:
        """In place: scale each image's delta so that its LPIPS is just under ``limit`` (those already
        under it are left alone); returns the per-image scale factors (shape [N]).

        LPIPS grows about as the square of the scale, so the first try is the scale that model predicts
        (usually within the limit: one LPIPS pass); images still over it are bisected below that try.
        ``values``: the LPIPS of ``delta`` if already measured."""
        values = self.measure(delta) if values is None else values
        over = values > limit
        scale = torch.ones(delta.shape[0])
        if not bool(over.any()):
            return scale
        guess = torch.where(over, (limit / values.clamp_min(1e-12)).sqrt() * 0.99, scale)
        ok = self.measure(delta * _per_image(guess, delta)) <= limit
        todo = over & ~ok  # still over at the predicted scale: bisect in [0, guess]
        lo, hi = torch.where(ok, guess, torch.zeros_like(guess)), guess.clone()
        for _ in range(iters if bool(todo.any()) else 0):
            mid = torch.where(todo, (lo + hi) / 2, lo)
            good = self.measure(delta * _per_image(mid, delta)) <= limit
            lo, hi = torch.where(todo & good, mid, lo), torch.where(todo & ~good, mid, hi)
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
    run = _Search(source, encoders, objective, budget, s, callback, viewed, saved)
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
    checkpoints = [k / 10 for k in range(1, 10)] if calibrate is not None else []
    count = source.shape[0]
    mu = torch.zeros(count)  # one LPIPS multiplier per image: the images of a batch are independent
    best = torch.full((count,), math.inf)
    best_delta = delta.detach().clone()
    since_best, stopped, history, step = 0, "steps", [], 0
    # a sampled objective (robust chains, training views): keep the final iterate, no early stop
    robust = run.sampler is not None or viewed is not None
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

        if checkpoints and progress >= checkpoints[0] and s.method != "pgd":
            checkpoints = [c for c in checkpoints if c > progress]
            with torch.no_grad():
                proxy, saved = float(run.measure(delta).max()), calibrate(delta.detach())
            if proxy > 0 and saved > 0:
                # both grow about as the square of the perturbation: keep the proxy where the file meets the budget
                inner = min(max(budget.budget * 0.97 * proxy / saved, budget.budget * 0.05), 0.99)
                log.debug("calibrated at %.0f %%: proxy %.4f, saved file %.4f -> limit %.4f", 100 * progress, proxy,
                          saved, inner)
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
                measured = run.measure(delta)
                overshoot = measured > inner
                # dual update of the LPIPS multiplier: up while steps leave the budget, down inside
                mu = torch.where(overshoot, torch.clamp(mu * MU_UP, min=MU_FLOOR), mu * MU_DOWN)
                if bool(overshoot.any()):
                    run.shrink_to(delta, inner, values=measured)
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
