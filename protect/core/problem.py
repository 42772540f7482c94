"""One search problem: the models, the budget and the per-step forward that the optimisation methods share.

:class:`SearchProblem` computes the objective (under robust countermeasures and training views when the
settings ask for them) and LPIPS of ``source + delta``, and projects a perturbation onto the pixel box, the
L-inf cap and an LPIPS limit; the methods of :mod:`fixative.core.steps` decide what to do with them.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from fixative.core.constraints import LinfCap
from fixative.core.precision import autocast_dtype, precision_context
from fixative.core.robust import Draw, Sampler, decode_pass
from fixative.core.transforms import resize


class SearchProblem:
    """State shared by the methods: the models, limits, callback and the per-step forward."""

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


