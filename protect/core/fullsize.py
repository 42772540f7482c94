"""The full-size images behind a search that runs below full size (training views).

- :class:`ViewedImages`: the original and reference at full size, as the training views a trainer makes of
  the saved file (the objective's side);
- :class:`SavedFileLpips`: LPIPS of the saved file on random full-size windows (the budget's side);
- :func:`saved_file_estimate`: the budget's measure of the saved file, estimated on a few full-size cells
  (what the search calibrates its limit with).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fixative.core.constraints import quantize
from fixative.core.precision import precision_context
from fixative.core.robust import Draw
from fixative.core.tiling import plan_tiles
from fixative.core.transforms import resize
from fixative.core.views import TrainingViews, View, ViewSampler
from fixative.errors import ConfigError

if TYPE_CHECKING:
    from fixative.core.budgets import BudgetPlan


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




def saved_file_estimate(source: Tensor, plan: BudgetPlan, levels: int, cap: float | None, align: int,
                        cells: int = 4, size: int = 768) -> Callable[[Tensor], float]:
    """delta at work resolution -> the budget's measure (LPIPS or FLIP) of the file it gives, estimated on
    ``cells`` cells of ``size`` px spread over the full-size image (both are spatial means: the cells' mean
    estimates the whole image's at a fraction of its cost; the engine's final check is exact). ``align``: the
    cells' alignment in px; ``levels``: the file's quantisation; ``cap``: the L-inf cap, if any."""
    height, width = source.shape[-2:]
    grid = plan_tiles(height, width, size, 0, align)
    picked = [grid[round(i * (len(grid) - 1) / max(1, cells - 1))] for i in range(min(cells, len(grid)))]
    checks = [(t, plan.constraint(t.crop(source), t.crop)) for t in dict.fromkeys(picked)]

    @torch.no_grad()
    def estimate(delta: Tensor) -> float:
        up = resize(delta, (height, width))
        if cap is not None:
            up = up.clamp(-cap, cap)
        values = [check.measure(quantize(t.crop(source) + t.crop(up), levels)) for t, check in checks]
        return sum(v * t.height * t.width for (t, _), v in zip(checks, values, strict=True)) / sum(
            t.height * t.width for t, _ in checks)

    return estimate
