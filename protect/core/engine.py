"""The protection engine: one image in, a protected image and its measurements out.

:class:`Protector` holds the models (encoders and LPIPS), loaded once and reused over a whole
portfolio. :meth:`Protector.protect` runs the search (whole image, or overlapping tiles for
large images), quantises the result to the output's bit depth, scales it back until LPIPS of
the saved pixels is within the budget (a guarantee, checked in float32), and measures it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from fixative.core.budgets import Limit, LpipsLimit, as_limit, budget_plan, jpeg_equivalent
from fixative.core.constraints import quantize
from fixative.core.devices import resolve_device
from fixative.core.encoder import Encoder
from fixative.core.metrics import linf, psnr, ssim
from fixative.core.objectives import AwayFromSource, Objective, TowardsTarget
from fixative.core.optimizer import OptimizerSettings, SavedFileLpips, StepInfo, ViewedImages, search
from fixative.core.perceptual import Perceptual
from fixative.core.tiling import Tile, blend, plan_tiles, tile_weights
from fixative.core.transforms import resize
from fixative.core.views import View, evaluation_views, work_size
from fixative.core.visibility import VisibilityModel
from fixative.errors import ConfigError, InputImageError

log = logging.getLogger(__name__)

OBJECTIVES = ("target", "away")
#: largest factor by which the final step may stretch a perturbation that leaves budget unused
STRETCH_MAX = 1.5
#: with training views, larger images are measured at the training views only (encoding an 18 MP image three
#: times at full size would cost more than its whole search); ``fixative eval strength`` measures any size
FULL_MEASURE_PIXELS = 4_200_000


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


def tile_batch_size(free_bytes: int, per_tile_bytes: int, tiles: int, use: float = 0.7) -> int:
    """Tiles per batched pass: as many as ``use`` of the free memory holds, at least 1, at most ``tiles``.

    ``per_tile_bytes`` is the peak memory of one tile's optimisation step (bytes), measured by a probe.
    """
    if per_tile_bytes <= 0:
        return tiles
    return max(1, min(tiles, int(free_bytes * use // per_tile_bytes)))


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
        if not 0 <= tile_overlap < tile_size // 2:
            raise ConfigError(f"the tile size ({tile_size} px) must be more than twice the tile overlap "
                              f"({tile_overlap} px)")
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ConfigError(f"expected one RGB image (1x3xHxW), got shape {tuple(image.shape)}")
        check_size(*image.shape[-2:])
        source = image.to(self.device, torch.float32)
        if objective == "target":
            if target is None:
                raise ConfigError("objective 'target' needs a target image")
            if target.dim() == 3:
                target = target[None]
            if target.shape != source.shape:
                raise ConfigError(
                    f"target size {tuple(target.shape[-2:])} differs from the image's {tuple(source.shape[-2:])}"
                )
            target = target.to(self.device, torch.float32)
        self.set_channels_last(settings.channels_last)
        height, width = source.shape[-2:]
        views = settings.views
        started = time.perf_counter()
        if views is not None:
            # what trainers see of the file is at most the largest view: search there, whatever the size
            work = work_size(height, width, views)
            search_source = resize(source, work)
            tiles = [Tile(0, 0, *work)]
        else:
            search_source = source
            tiles = plan_tiles(height, width, tile_size, tile_overlap, self.align)

        plan = budget_plan(limit, self.perceptual, source)
        deltas, steps, stopped, searched = [], 0, [], 0.0
        total_area = sum(t.height * t.width for t in tiles)
        per_pass = 1 if views is not None else self._tile_batch(tile_batch, tiles, source, target, objective,
                                                                 plan, settings)
        viewed = None
        for first in range(0, len(tiles), per_pass):
            group = tiles[first : first + per_pass]
            tile_settings = settings
            if settings.seconds is not None and len(tiles) > 1:
                share = settings.seconds * sum(t.height * t.width for t in group) / total_area
                tile_settings = replace(settings, seconds=share)
            src = torch.cat([t.crop(search_source) for t in group])
            tgt = torch.cat([t.crop(target) for t in group]) if target is not None and objective == "target" else None
            obj = self._objective(objective)
            if views is not None:
                obj.bind(self.encoders)
                viewed = ViewedImages(source, target if objective == "target" else source, views, settings.seed,
                                      towards=objective == "target")
            else:
                obj.prepare(self.encoders, src, tgt)
            # with training views the search runs on a resized copy: the budget's proxy at that resolution
            crop = None if views is not None else (lambda im, group=group: torch.cat([t.crop(im) for t in group]))
            constraint = plan.constraint(src, crop)

            def relay(info: StepInfo, first: int = first, size: int = len(group)) -> bool | None:
                if callback is None:
                    return None
                return callback(TileProgress(**vars(info), tile=first + 1, tiles=len(tiles), group=size))

            calibrate = saved = None
            if views is not None and tuple(src.shape[-2:]) != (height, width):
                calibrate = self._saved_file_estimate(source, plan, levels, settings.linf)
                if isinstance(limit, LpipsLimit):
                    saved = SavedFileLpips(self.perceptual, source, tuple(src.shape[-2:]), settings.linf,
                                           settings.seed)

            outcome = search(src, self.encoders, obj, constraint, tile_settings, relay, viewed, calibrate, saved)
            deltas.extend(outcome.delta.split(1))
            steps += outcome.steps
            searched += outcome.seconds
            stopped.append(outcome.stopped)
            if outcome.stopped == "cancelled":
                deltas.extend(torch.zeros_like(t.crop(source)) for t in tiles[first + len(group) :])
                break
        del src, tgt, constraint, viewed, saved

        if len(tiles) == 1:
            delta = deltas[0]
        else:
            delta = blend(deltas, tiles, tile_weights(tiles, height, width, source.device), source)
        if views is not None and tuple(delta.shape[-2:]) != (height, width):
            # the saved file holds the perturbation at full size: bicubic upsampling, cap kept
            delta = resize(delta, (height, width))
            if settings.linf is not None:
                delta = delta.clamp(-settings.linf, settings.linf)

        # the guarantee: quantise, then scale back until the saved pixels are within budget (LPIPS or FLIP)
        final = plan.final()
        with torch.no_grad():
            delta_q, lp, scale = final.scale_back(delta, levels=levels)
            if (len(tiles) == 1 and scale == 1.0 and lp < final.budget * 0.99 and settings.linf is None
                    and views is None):
                # budget left unused (the search's autocast LPIPS runs a little high): stretch the
                # perturbation into it, and keep the stretch only if the objective agrees
                stretched, lp_s, scale_s = final.scale_back(delta, levels=levels, max_scale=STRETCH_MAX)
                if scale_s > 1.0 and self._loss(obj, source + stretched) < self._loss(obj, source + delta_q):
                    delta_q, lp, scale = stretched, lp_s, scale_s
        protected = quantize(source + delta_q, levels)
        seconds = time.perf_counter() - started
        cells = plan_tiles(height, width, tile_size, tile_overlap, self.align) if views is not None else tiles
        full = views is None or height * width <= FULL_MEASURE_PIXELS
        if plan.final_value is not None:  # the scale-back measured FLIP; LPIPS is measured for the report
            lp = float(self.perceptual.distance(protected, source).max())
        metrics = self._measure(source, protected, target, objective, lp, cells, steps, seconds, scale, stopped,
                                full_size=full)
        metrics.tiles, metrics.search_seconds = len(tiles), searched
        metrics.flip_limit = plan.final_value
        metrics.like_jpeg = jpeg_equivalent(source, metrics.flip) if full else None
        return ProtectionResult(
            protected.cpu(),
            alpha,
            metrics,
            {
                "objective": objective,
                **limit.describe(),
                "levels": levels,
                "tile_size": tile_size,
                "tile_overlap": tile_overlap,
                "tile_batch": per_pass,
                "work_size": [tiles[0].height, tiles[0].width] if views is not None else None,
                "device": str(self.device),
                "lpips_net": self.perceptual.net,
                **asdict(settings),
            },
        )

    def _saved_file_estimate(self, source: Tensor, plan, levels: int, cap: float | None,
                             cells: int = 4, size: int = 768) -> Callable[[Tensor], float]:
        """delta at work resolution -> the budget's measure (LPIPS or FLIP) of the file it gives, estimated on
        ``cells`` cells of ``size`` px spread over the full-size image (both are spatial means: the cells' mean
        estimates the whole image's at a fraction of its cost; the engine's final check is exact)."""
        height, width = source.shape[-2:]
        grid = plan_tiles(height, width, size, 0, self.align)
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
        return replace(self._measure(source, protected, target, objective, lp, tiles, 0, 0.0, 1.0, []),
                       stopped="measured")

    def _tile_batch(self, requested, tiles, source, target, objective, plan, settings) -> int:
        """How many tiles to search per pass: ``requested``, else 1 on the CPU/MPS or for one tile,
        else as many as the free CUDA memory holds (measured with one probe step on one tile)."""
        if requested is not None:
            if requested < 1:
                raise ConfigError(f"tile_batch must be at least 1, got {requested}")
            return min(requested, len(tiles))
        if len(tiles) == 1 or self.device.type != "cuda":
            return 1
        probe = tiles[0]
        src = probe.crop(source)
        tgt = probe.crop(target) if target is not None and objective == "target" else None
        torch.cuda.synchronize(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        obj = self._objective(objective)
        obj.prepare(self.encoders, src, tgt)
        search(src, self.encoders, obj, plan.constraint(src, probe.crop), replace(settings, steps=1))
        per_tile = torch.cuda.max_memory_allocated(self.device) - base
        del obj
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        size = tile_batch_size(free, per_tile, len(tiles))
        log.info("tile batch: %d tiles per pass (%.2f GiB per tile, %.1f GiB free)", size, per_tile / 2**30,
                 free / 2**30)
        return size

    @torch.no_grad()
    def _loss(self, objective: Objective, image: Tensor) -> float:
        return float(objective.loss([e(image) for e in self.encoders]))

    @torch.no_grad()
    def _latents(self, encoder: Encoder, image: Tensor, tiles: list[Tile]) -> list[Tensor]:
        """E(image), whole, or per non-overlapping cell for tiled images (bounded memory)."""
        if len(tiles) == 1:
            return [encoder(image).float()]
        size = max(max(t.height, t.width) for t in tiles)
        cells = plan_tiles(image.shape[-2], image.shape[-1], size, 0, self.align)
        return [encoder(c.crop(image)).float() for c in cells]

    @staticmethod
    def _distance(a: list[Tensor], b: list[Tensor]) -> float:
        return sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True)) ** 0.5

    def _measure(self, source, protected, target, objective, lp, tiles, steps, seconds, scale, stopped,
                 full_size: bool = True):
        names = [getattr(e, "name", type(e).__name__) for e in self.encoders]
        checked = [getattr(e, "name", type(e).__name__) for e in self.check_encoders]
        before, after, ratio = {}, {}, None
        for name, enc in zip(names + checked, self.encoders + self.check_encoders, strict=True):
            if not full_size:
                break
            reference = self._latents(enc, target if objective == "target" else source, tiles)
            moved = self._latents(enc, protected, tiles)
            after[name] = self._distance(moved, reference)
            before[name] = 0.0
            if objective == "target":
                before[name] = self._distance(self._latents(enc, source, tiles), reference)
        if objective == "target" and full_size:
            ratio = {n: after[n] / before[n] if before[n] > 0 else 1.0 for n in before}
        views = self._view_figures(source, protected, target if objective == "target" else None)
        flip = float(VisibilityModel()(protected, source).max())
        order = ("cancelled", "seconds", "early-stop", "steps")
        why = next((w for w in order if w in stopped), "steps")
        return ProtectionMetrics(
            lpips=float(lp),
            psnr=float(psnr(protected, source)),
            ssim=float(ssim(protected, source)),
            linf=float(linf(protected, source)),
            distance_before=before,
            distance_after=after,
            ratio=ratio,
            mean_ratio=(sum(ratio[n] for n in names) / len(names)) if ratio else None,
            steps=steps,
            seconds=seconds,
            stopped=why,
            scale=scale,
            tiles=len(tiles),
            encoders=names,
            checked=checked,
            views=views,
            view_ratio={v: sum(r[n] for n in names) / len(names) for v, r in views.items()}
            if objective == "target" else None,
            full_size=full_size,
            flip=flip,
        )

    @torch.no_grad()
    def _view_figures(self, source: Tensor, protected: Tensor, target: Tensor | None) -> dict[str, dict[str, float]]:
        """Per evaluation view (:func:`fixative.core.views.evaluation_views`), per encoder (crafting and checked):
        the distance ratio to ``target`` of that view of the images, or with no target the relative shift
        ``||E(V(x')) - E(V(x))|| / ||E(V(x))||``."""
        out: dict[str, dict[str, float]] = {}
        encoders = self.encoders + self.check_encoders
        names = [getattr(e, "name", type(e).__name__) for e in encoders]
        for label, view in evaluation_views(*source.shape[-2:]).items():
            figures = {}
            for name, enc in zip(names, encoders, strict=True):
                figures[name] = view_ratio(enc, view, source, protected, target)
            out[label] = figures
        return out
