"""Measuring a protection: what the protected image changes, to the eye and to the encoders.

:class:`ProtectionMetrics` holds the figures; :class:`Measurer` computes them for a set of encoders (the
crafting ones and the ``checked`` ones, measured for transfer): LPIPS is given, PSNR, SSIM, L-inf and FLIP
are measured on the pixels, the encoders' distances whole or per cell of a tiled image (bounded memory),
and the ratios on the training views of :func:`fixative.core.views.evaluation_views`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fixative.core.encoder import Encoder
from fixative.core.metrics import linf, psnr, ssim
from fixative.core.tiling import Tile, plan_tiles
from fixative.core.views import View, evaluation_views
from fixative.core.visibility import VisibilityModel

#: why a search stopped, most telling first: a protection of several tiles reports the first that occurred
STOP_ORDER = ("cancelled", "seconds", "early-stop", "steps")


@dataclass
class ProtectionMetrics:
    """What the protection achieved, measured on the quantised output.

    - ``lpips``: LPIPS of the output against the input (<= the budget, guaranteed, for an LPIPS budget).
    - ``flip``: FLIP of the output against the input (0 = no visible difference; <= ``flip_limit``,
      guaranteed, for a visibility budget); ``flip_limit``: that of the reference JPEG (visibility budget
      only); ``like_jpeg``: the JPEG quality of equal visibility (the lowest whose FLIP is at most ours;
      None where the image is measured at the training views only).
    - ``psnr`` (dB), ``ssim`` (1 = identical), ``linf`` (largest pixel change, [0,1] units).
    - ``distance_before`` / ``distance_after``: per encoder, ||E(x) - E(t)|| and ||E(x') - E(t)||
      for a target objective; for "away", the distance of E(x') from E(x) (before = 0).
    - ``ratio``: per encoder, after / before (target objective only; lower is stronger); includes the
      ``checked`` encoders, which were measured but not crafted against (transfer).
    - ``mean_ratio``: the mean of ``ratio`` over the crafting encoders (None for "away").
    - ``full_size``: whether the figures above were measured at full size; with training views, images over
      :data:`FULL_MEASURE_PIXELS` are measured at the training views only (the distances are then empty
      and the ratios None).
    - ``views``: per training view of :func:`fixative.core.views.evaluation_views` ("512 crop", "1024 px"), per
      encoder, the same ratio (target) or shift (away) measured on that view of the images: what a
      model trained on the saved file sees; ``view_ratio``: per view, the mean over the crafting
      encoders (target objective only).
    - ``steps``, ``seconds``: search effort (all tiles; seconds from the start to the saved pixels, the final
      check included); ``search_seconds``: the search alone (what a time limit bounds); ``stopped``: why
      the search ended.
    - ``scale``: the final scale factor (1 = the search's result kept as is; < 1 scaled back into the
      budget; > 1 stretched into budget the search left unused).
    """

    lpips: float
    psnr: float
    ssim: float
    linf: float
    distance_before: dict[str, float]
    distance_after: dict[str, float]
    ratio: dict[str, float] | None
    mean_ratio: float | None
    steps: int
    seconds: float
    stopped: str
    scale: float
    tiles: int
    encoders: list[str]
    checked: list[str] = field(default_factory=list)
    views: dict[str, dict[str, float]] = field(default_factory=dict)
    view_ratio: dict[str, float] | None = None
    full_size: bool = True
    search_seconds: float = 0.0
    flip: float | None = None
    flip_limit: float | None = None
    like_jpeg: int | None = None


@torch.no_grad()
def view_ratio(encoder: Encoder, view: View, source: Tensor, protected: Tensor, target: Tensor | None) -> float:
    """What a model trained on ``view`` of the protected image sees: with a ``target``, the distance ratio
    ``||E(V(x')) - E(V(t))|| / ||E(V(x)) - E(V(t))||`` (1 = no effect, lower is stronger); without, the
    relative shift ``||E(V(x')) - E(V(x))|| / ||E(V(x))||`` (0 = no effect). Images are 1x3xHxW in [0,1]."""
    moved, seen = encoder(view(protected)).float(), encoder(view(source)).float()
    if target is None:
        return float((moved - seen).norm() / seen.norm().clamp_min(1e-12))
    ref = encoder(view(target)).float()
    before = float((seen - ref).norm())
    return float((moved - ref).norm()) / before if before > 0 else 1.0


def encoder_name(encoder: Encoder) -> str:
    """The name records use for ``encoder``."""
    return getattr(encoder, "name", type(encoder).__name__)


def _distance(a: list[Tensor], b: list[Tensor]) -> float:
    return sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True)) ** 0.5


class Measurer:
    """Measures protected images for ``encoders`` (crafting) and ``checked`` (transfer); ``align``: the cell
    alignment of tiled images (the encoders' downsampling factor)."""

    def __init__(self, encoders: Sequence[Encoder], checked: Sequence[Encoder], align: int):
        self.encoders, self.checked, self.align = list(encoders), list(checked), align

    @torch.no_grad()
    def latents(self, encoder: Encoder, image: Tensor, tiles: list[Tile]) -> list[Tensor]:
        """E(image), whole, or per non-overlapping cell for tiled images (bounded memory)."""
        if len(tiles) == 1:
            return [encoder(image).float()]
        size = max(max(t.height, t.width) for t in tiles)
        cells = plan_tiles(image.shape[-2], image.shape[-1], size, 0, self.align)
        return [encoder(c.crop(image)).float() for c in cells]

    @torch.no_grad()
    def distances(self, source: Tensor, protected: Tensor, target: Tensor | None,
                  tiles: list[Tile]) -> tuple[dict[str, float], dict[str, float]]:
        """Per encoder (crafting and checked): (distance before, distance after) to the target's latent, or
        with no ``target`` from the source's (before = 0)."""
        before, after = {}, {}
        for enc in self.encoders + self.checked:
            name = encoder_name(enc)
            reference = self.latents(enc, source if target is None else target, tiles)
            after[name] = _distance(self.latents(enc, protected, tiles), reference)
            before[name] = 0.0 if target is None else _distance(self.latents(enc, source, tiles), reference)
        return before, after

    @torch.no_grad()
    def view_figures(self, source: Tensor, protected: Tensor, target: Tensor | None) -> dict[str, dict[str, float]]:
        """Per evaluation view (:func:`fixative.core.views.evaluation_views`), per encoder (crafting and checked):
        the distance ratio to ``target`` of that view of the images, or with no target the relative shift
        ``||E(V(x')) - E(V(x))|| / ||E(V(x))||``."""
        return {label: {encoder_name(enc): view_ratio(enc, view, source, protected, target)
                        for enc in self.encoders + self.checked}
                for label, view in evaluation_views(*source.shape[-2:]).items()}

    @torch.no_grad()
    def metrics(self, source: Tensor, protected: Tensor, target: Tensor | None, lp: float, tiles: list[Tile],
                full_size: bool = True) -> ProtectionMetrics:
        """The figures of ``protected`` against ``source`` (1x3xHxW in [0,1]); ``target``: the target image for
        a target objective, None for "away"; ``lp``: its LPIPS; the search fields are left at zero for the
        caller to fill (``stopped`` "steps")."""
        names = [encoder_name(e) for e in self.encoders]
        before, after = self.distances(source, protected, target, tiles) if full_size else ({}, {})
        ratio = ({n: after[n] / before[n] if before[n] > 0 else 1.0 for n in before}
                 if target is not None and full_size else None)
        views = self.view_figures(source, protected, target)
        return ProtectionMetrics(
            lpips=float(lp), psnr=float(psnr(protected, source)), ssim=float(ssim(protected, source)),
            linf=float(linf(protected, source)), distance_before=before, distance_after=after, ratio=ratio,
            mean_ratio=(sum(ratio[n] for n in names) / len(names)) if ratio else None,
            steps=0, seconds=0.0, stopped="steps", scale=1.0, tiles=len(tiles), encoders=names,
            checked=[encoder_name(e) for e in self.checked], views=views,
            view_ratio={v: sum(r[n] for n in names) / len(names) for v, r in views.items()}
            if target is not None else None,
            full_size=full_size, flip=float(VisibilityModel()(protected, source).max()),
        )
