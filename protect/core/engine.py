"""The protection engine: one image in, a protected image and its measurements out.

:class:`Protector` holds the models (encoders and LPIPS), loaded once and reused over a whole
portfolio. :meth:`Protector.protect` runs the search (whole image, or overlapping tiles for
large images), quantises the result to the output's bit depth, scales it back until LPIPS of
the saved pixels is within the budget (a guarantee, checked in float32), and measures it.
The parts live in modules of their own: the search (:mod:`fixative.core.optimizer`), the measurements
(:mod:`fixative.core.measurement`), the tile batch sizing (:mod:`fixative.core.tilebatch`) and the
full-size side of a search at work resolution (:mod:`fixative.core.fullsize`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from fixative.core.budgets import BudgetPlan, Limit, LpipsLimit, as_limit, budget_plan, jpeg_equivalent
from fixative.core.constraints import quantize
from fixative.core.devices import resolve_device
from fixative.core.encoder import Encoder
from fixative.core.fullsize import SavedFileLpips, ViewedImages, saved_file_estimate
from fixative.core.measurement import STOP_ORDER, Measurer, ProtectionMetrics, view_ratio
from fixative.core.objectives import AwayFromSource, Objective, TowardsTarget
from fixative.core.optimizer import OptimizerSettings, SearchOutcome, StepInfo, search
from fixative.core.perceptual import Perceptual
from fixative.core.tilebatch import plan_tile_batch, tile_batch_size
from fixative.core.tiling import Tile, blend, plan_tiles, tile_weights
from fixative.core.transforms import resize
from fixative.core.views import work_size
from fixative.errors import ConfigError, InputImageError

log = logging.getLogger(__name__)

#: re-exported for callers of the engine: the metrics, the view ratio and the tile batch sizing
__all__ = ["FULL_MEASURE_PIXELS", "MIN_SIDE", "OBJECTIVES", "STRETCH_MAX", "ProtectionMetrics", "ProtectionResult",
           "Protector", "TileProgress", "check_size", "tile_batch_size", "view_ratio"]

OBJECTIVES = ("target", "away")
#: largest factor by which the final step may stretch a perturbation that leaves budget unused
STRETCH_MAX = 1.5
#: with training views, larger images are measured at the training views only (encoding an 18 MP image three
#: times at full size would cost more than its whole search); ``fixative eval strength`` measures any size
FULL_MEASURE_PIXELS = 4_200_000


@dataclass
class ProtectionResult:
    """The protected image (1x3xHxW float, on the quantisation grid), its alpha, and metrics."""

    image: Tensor
    alpha: np.ndarray | None
    metrics: ProtectionMetrics
    settings: dict = field(default_factory=dict)

    def record(self) -> dict:
        """JSON-ready settings and metrics."""
        return {"settings": self.settings, "metrics": asdict(self.metrics)}


@dataclass
class TileProgress(StepInfo):
    """A step of one tile, or of a batch of ``group`` tiles searched together (``tile`` is the batch's
    first tile, counting from 1 to ``tiles``)."""

    tile: int = 1
    tiles: int = 1
    group: int = 1

    @property
    def overall(self) -> float:
        """Progress over the whole image, in [0,1] (tiles done, plus this step's share)."""
        return min(1.0, ((self.tile - 1) + self.group * self.fraction) / self.tiles)


#: the smallest image side that can be protected, in pixels (LPIPS alex, the default metric, needs 31)
MIN_SIDE = 32


def check_size(height: int, width: int) -> None:
    """Raise :class:`~fixative.errors.InputImageError` for an image smaller than :data:`MIN_SIDE` on a side."""
    if min(height, width) < MIN_SIDE:
        raise InputImageError(f"the image is {width}x{height} px; images of at least {MIN_SIDE} px on each side "
                              "can be protected (the perceptual metric needs that much)")


@dataclass
class _Job:
    """One :meth:`Protector.protect` call, planned: the inputs on the device (``target`` only for a target
    objective), the budget's plan, the tiles searched (one work-resolution tile with training views) and how
    many of them per pass."""

    source: Tensor
    target: Tensor | None
    objective: str
    settings: OptimizerSettings
    limit: Limit
    plan: BudgetPlan
    levels: int
    tiles: list[Tile]
    search_source: Tensor
    per_pass: int = 1

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.source.shape[-2:])


@dataclass
class _Found:
    """What the tile loop found: one perturbation per tile, the effort, and the last objective searched."""

    deltas: list[Tensor] = field(default_factory=list)
    steps: int = 0
    stopped: list[str] = field(default_factory=list)
    searched: float = 0.0
    objective: Objective | None = None


class Protector:
    """Encoders + LPIPS on one device, ready to protect any number of images.

    Built from explicit components; :func:`fixative.models.loading.load_protector` loads them from encoder
    specs ("taef2", "sd15", a path, a hub id) and an LPIPS net name.
    """

    def __init__(
        self,
        encoders: Sequence[Encoder],
        perceptual: Perceptual,
        device: torch.device | str = "cpu",
        check_encoders: Sequence[Encoder] = (),
    ):
        """``check_encoders`` are only measured, never optimised against: craft against a tiny
        surrogate (taef2) and report the distance ratio on the full VAE, to see the transfer."""
        if not encoders:
            raise ConfigError("at least one encoder is needed")
        self.device = resolve_device(device)
        self.encoders = [e.to(self.device) for e in encoders]
        names = {getattr(e, "name", None) for e in self.encoders}
        self.check_encoders = [e.to(self.device) for e in check_encoders if getattr(e, "name", None) not in names]
        self.perceptual = perceptual.to(self.device)
        self.align = max(int(getattr(e, "downsample", 8)) for e in self.encoders)

    def set_channels_last(self, enabled: bool) -> None:
        """NHWC (``enabled``) or contiguous memory for the encoders and LPIPS."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for m in [*self.encoders, self.perceptual]:
            m.to(memory_format=fmt)

    def _objective(self, kind: str) -> Objective:
        if kind == "target":
            return TowardsTarget()
        if kind == "away":
            return AwayFromSource()
        raise ConfigError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")

    def protect(
        self,
        image: Tensor,
        target: Tensor | None = None,
        *,
        objective: str = "target",
        budget: float | Limit = 0.07,
        settings: OptimizerSettings | None = None,
        alpha: np.ndarray | None = None,
        levels: int = 255,
        tile_size: int = 1024,
        tile_overlap: int = 64,
        tile_batch: int | None = None,
        callback: Callable[[TileProgress], bool | None] | None = None,
    ) -> ProtectionResult:
        """Protect ``image`` (1x3xHxW or 3xHxW floats in [0,1]) within a ``budget``.

        - ``target``: an image of the same size to move the encoders' view towards
          (objective "target"); ignored for objective "away".
        - ``budget``: a :class:`fixative.core.budgets.VisibilityLimit` (no more visible than the image's own
          JPEG at a quality, by FLIP), or an LPIPS value (alex by default) of the output against the input,
          in (0, 1) (or :class:`fixative.core.budgets.LpipsLimit`); 0.03 is very subtle, 0.1 visible.
        - ``levels``: the output's quantisation (255 for 8-bit files, 65535 for 16-bit).
        - ``tile_size``/``tile_overlap``: images larger than ``tile_size`` on a side are
          protected in overlapping tiles (pixels); not with training views (``settings.views``), where
          the search runs on the largest training view's resolution, whatever the image's size, and the
          perturbation is upsampled (bicubic) to full size before the final check.
        - ``tile_batch``: tiles searched together in one batched pass; None = automatic (as many as
          the free GPU memory holds on CUDA, see :func:`tile_batch_size`; one at a time on the CPU,
          where batching does not pay).
        - ``callback``: called after every step with a :class:`TileProgress`; return False to
          cancel (the best result so far is kept and still checked against the budget).
        """
        settings = settings or OptimizerSettings()
        limit = as_limit(budget)
        source, target = self._inputs(image, target, objective, tile_size, tile_overlap)
        self.set_channels_last(settings.channels_last)
        started = time.perf_counter()
        job = self._plan(source, target, objective, settings, limit, levels, tile_size, tile_overlap, tile_batch)
        found = self._search_tiles(job, callback)
        protected, lp, scale = self._final_check(job, self._full_size(job, found.deltas), found.objective)
        metrics = self._report(job, found, protected, lp, scale, time.perf_counter() - started, tile_size,
                               tile_overlap)
        return ProtectionResult(protected.cpu(), alpha, metrics, {
            "objective": objective,
            **limit.describe(),
            "levels": levels,
            "tile_size": tile_size,
            "tile_overlap": tile_overlap,
            "tile_batch": job.per_pass,
            "work_size": [job.tiles[0].height, job.tiles[0].width] if settings.views is not None else None,
            "device": str(self.device),
            "lpips_net": self.perceptual.net,
            **asdict(settings),
        })

    def _inputs(self, image: Tensor, target: Tensor | None, objective: str, tile_size: int,
                tile_overlap: int) -> tuple[Tensor, Tensor | None]:
        """The image and (for a target objective) the target as 1x3xHxW float32 on the device, checked."""
        if not 0 <= tile_overlap < tile_size // 2:
            raise ConfigError(f"the tile size ({tile_size} px) must be more than twice the tile overlap "
                              f"({tile_overlap} px)")
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ConfigError(f"expected one RGB image (1x3xHxW), got shape {tuple(image.shape)}")
        check_size(*image.shape[-2:])
        source = image.to(self.device, torch.float32)
        if objective != "target":
            self._objective(objective)
            return source, None
        if target is None:
            raise ConfigError("objective 'target' needs a target image")
        if target.dim() == 3:
            target = target[None]
        if target.shape != source.shape:
            raise ConfigError(
                f"target size {tuple(target.shape[-2:])} differs from the image's {tuple(source.shape[-2:])}"
            )
        return source, target.to(self.device, torch.float32)

    def _plan(self, source: Tensor, target: Tensor | None, objective: str, settings: OptimizerSettings,
              limit: Limit, levels: int, tile_size: int, tile_overlap: int, tile_batch: int | None) -> _Job:
        """The tiles to search (with training views: one tile, the largest view's resolution, whatever the
        image's size), the budget's plan and the tiles per pass."""
        height, width = source.shape[-2:]
        if settings.views is not None:
            # what trainers see of the file is at most the largest view: search there, whatever the size
            work = work_size(height, width, settings.views)
            search_source, tiles = resize(source, work), [Tile(0, 0, *work)]
        else:
            search_source, tiles = source, plan_tiles(height, width, tile_size, tile_overlap, self.align)
        plan = budget_plan(limit, self.perceptual, source)
        job = _Job(source, target, objective, settings, limit, plan, levels, tiles, search_source)
        if settings.views is None:
            job.per_pass = plan_tile_batch(tile_batch, tiles, self.device, lambda tile: self._probe(job, tile))
        return job

    def _probe(self, job: _Job, tile: Tile) -> None:
        """One optimisation step on ``tile`` (to measure its memory)."""
        src = tile.crop(job.source)
        obj = self._objective(job.objective)
        obj.prepare(self.encoders, src, tile.crop(job.target) if job.target is not None else None)
        search(src, self.encoders, obj, job.plan.constraint(src, tile.crop), replace(job.settings, steps=1))

    def _search_tiles(self, job: _Job, callback: Callable[[TileProgress], bool | None] | None) -> _Found:
        """Search the tiles, ``job.per_pass`` at a time, each pass with its share of a time limit; a cancelled
        pass leaves the tiles after it unperturbed."""
        tiles, settings, found = job.tiles, job.settings, _Found()
        total_area = sum(t.height * t.width for t in tiles)
        for first in range(0, len(tiles), job.per_pass):
            group = tiles[first : first + job.per_pass]
            tile_settings = settings
            if settings.seconds is not None and len(tiles) > 1:
                share = settings.seconds * sum(t.height * t.width for t in group) / total_area
                tile_settings = replace(settings, seconds=share)

            def relay(info: StepInfo, first: int = first, size: int = len(group)) -> bool | None:
                if callback is None:
                    return None
                return callback(TileProgress(**vars(info), tile=first + 1, tiles=len(tiles), group=size))

            outcome, found.objective = self._search_group(job, group, tile_settings, relay)
            found.deltas.extend(outcome.delta.split(1))
            found.steps += outcome.steps
            found.searched += outcome.seconds
            found.stopped.append(outcome.stopped)
            if outcome.stopped == "cancelled":
                found.deltas.extend(torch.zeros_like(t.crop(job.source)) for t in tiles[first + len(group) :])
                break
        return found

    def _search_group(self, job: _Job, group: list[Tile], settings: OptimizerSettings,
                      relay: Callable[[StepInfo], bool | None]) -> tuple[SearchOutcome, Objective]:
        """Search one pass of tiles (batched); returns its outcome and its objective."""
        views, (height, width) = settings.views, job.size
        src = torch.cat([t.crop(job.search_source) for t in group])
        obj, viewed, calibrate, saved = self._objective(job.objective), None, None, None
        if views is not None:
            obj.bind(self.encoders)
            reference = job.source if job.target is None else job.target
            viewed = ViewedImages(job.source, reference, views, settings.seed, towards=job.target is not None)
        else:
            obj.prepare(self.encoders, src, torch.cat([t.crop(job.target) for t in group])
                        if job.target is not None else None)
        # with training views the search runs on a resized copy: the budget's proxy at that resolution
        crop = None if views is not None else (lambda im: torch.cat([t.crop(im) for t in group]))
        constraint = job.plan.constraint(src, crop)
        if views is not None and tuple(src.shape[-2:]) != (height, width):
            calibrate = saved_file_estimate(job.source, job.plan, job.levels, settings.linf, self.align)
            if isinstance(job.limit, LpipsLimit):
                saved = SavedFileLpips(self.perceptual, job.source, tuple(src.shape[-2:]), settings.linf,
                                       settings.seed)
        return search(src, self.encoders, obj, constraint, settings, relay, viewed, calibrate, saved), obj

    def _full_size(self, job: _Job, deltas: list[Tensor]) -> Tensor:
        """The perturbation of the whole image: the tiles blended, or the work-resolution one upsampled."""
        height, width = job.size
        if len(job.tiles) == 1:
            delta = deltas[0]
        else:
            delta = blend(deltas, job.tiles, tile_weights(job.tiles, height, width, job.source.device), job.source)
        if job.settings.views is not None and tuple(delta.shape[-2:]) != (height, width):
            # the saved file holds the perturbation at full size: bicubic upsampling, cap kept
            delta = resize(delta, (height, width))
            if job.settings.linf is not None:
                delta = delta.clamp(-job.settings.linf, job.settings.linf)
        return delta

    @torch.no_grad()
    def _final_check(self, job: _Job, delta: Tensor, objective: Objective) -> tuple[Tensor, float, float]:
        """The guarantee: quantise, then scale back until the saved pixels are within budget (LPIPS or FLIP).
        Returns (the protected image, its budget measure, the scale)."""
        final, s = job.plan.final(), job.settings
        delta_q, lp, scale = final.scale_back(delta, levels=job.levels)
        if len(job.tiles) == 1 and scale == 1.0 and lp < final.budget * 0.99 and s.linf is None and s.views is None:
            # budget left unused (the search's autocast LPIPS runs a little high): stretch the
            # perturbation into it, and keep the stretch only if the objective agrees
            stretched, lp_s, scale_s = final.scale_back(delta, levels=job.levels, max_scale=STRETCH_MAX)
            if scale_s > 1.0 and self._loss(objective, job.source + stretched) < self._loss(objective,
                                                                                             job.source + delta_q):
                delta_q, lp, scale = stretched, lp_s, scale_s
        return quantize(job.source + delta_q, job.levels), lp, scale

    def _report(self, job: _Job, found: _Found, protected: Tensor, lp: float, scale: float, seconds: float,
                tile_size: int, tile_overlap: int) -> ProtectionMetrics:
        """The metrics of the protected image (measured in cells of ``tile_size`` with training views)."""
        (height, width), views = job.size, job.settings.views
        cells = plan_tiles(height, width, tile_size, tile_overlap, self.align) if views is not None else job.tiles
        full = views is None or height * width <= FULL_MEASURE_PIXELS
        if job.plan.final_value is not None:  # the scale-back measured FLIP; LPIPS is measured for the report
            lp = float(self.perceptual.distance(protected, job.source).max())
        metrics = self._measure(job.source, protected, job.target, lp, cells, found.steps, seconds, scale,
                                found.stopped, full_size=full)
        metrics.tiles, metrics.search_seconds = len(job.tiles), found.searched
        metrics.flip_limit = job.plan.final_value
        metrics.like_jpeg = jpeg_equivalent(job.source, metrics.flip) if full else None
        return metrics

    @torch.no_grad()
    def measure(
        self,
        source: Tensor,
        protected: Tensor,
        target: Tensor | None = None,
        *,
        objective: str = "target",
        tile_size: int = 1024,
        tile_overlap: int = 64,
    ) -> ProtectionMetrics:
        """Measure an already protected image against its original, as :meth:`protect` measures its own
        result: e.g. a saved file decoded again after lossy compression. Images are 1x3xHxW or 3xHxW
        floats in [0,1]; large images are encoded in cells of ``tile_size`` (bounded memory). LPIPS
        is float32; the search fields are 0 and ``stopped`` is "measured"."""
        self._objective(objective)
        source, protected = (im[None] if im.dim() == 3 else im for im in (source, protected))
        source, protected = source.to(self.device, torch.float32), protected.to(self.device, torch.float32)
        if target is not None:
            target = (target[None] if target.dim() == 3 else target).to(self.device, torch.float32)
        elif objective == "target":
            raise ConfigError("objective 'target' needs a target image")
        tiles = plan_tiles(source.shape[-2], source.shape[-1], tile_size, tile_overlap, self.align)
        lp = float(self.perceptual.distance(protected, source).max())
        target = target if objective == "target" else None
        return replace(self._measure(source, protected, target, lp, tiles, 0, 0.0, 1.0, []), stopped="measured")

    @torch.no_grad()
    def _loss(self, objective: Objective, image: Tensor) -> float:
        return float(objective.loss([e(image) for e in self.encoders]))

    def _measure(self, source: Tensor, protected: Tensor, target: Tensor | None, lp: float, tiles: list[Tile],
                 steps: int, seconds: float, scale: float, stopped: Sequence[str],
                 full_size: bool = True) -> ProtectionMetrics:
        """The metrics (:class:`~fixative.core.measurement.Measurer`) with the search's effort filled in."""
        metrics = Measurer(self.encoders, self.check_encoders, self.align).metrics(source, protected, target, lp,
                                                                                   tiles, full_size)
        why = next((w for w in STOP_ORDER if w in stopped), "steps")
        return replace(metrics, steps=steps, seconds=seconds, stopped=why, scale=scale)
