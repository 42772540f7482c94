"""Time up front: how long one image will take on this machine, measured before a long run.

A *probe* runs the real search on the run's first image for a few steps and stops it there (nothing
is saved): ``seconds_per_step`` is the time of one search step over the whole image (all its tiles),
measured between the 2nd and the last probed step so that warm-up is left out, at that image's pixel
count. It is cached per (encoders, LPIPS net, device, precision, method, robust mix, tile size) and
pixel count in ``<user cache dir>/speed.json``, so the next run starts at once.

The expected time of an image is ``steps x seconds_per_step``, capped by the preset's time limit: the
search ends at whichever comes first. For an image of another size the measured figure is scaled by
the ratio of pixel counts (the probe of the nearest size is used), which holds while a step's cost
follows the pixel count; images of the probed size need no such assumption.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fixative.userdirs import user_cache_dir

log = logging.getLogger("fixative")

#: steps of a probe (the first is warm-up and not counted)
PROBE_STEPS = 3
#: runs with fewer search steps than this are short anyway: no probe
MIN_STEPS_TO_PROBE = 20
#: a portfolio expected to take longer than this gets a warning (seconds)
LONG_RUN_SECONDS = 3600.0
CACHE_NAME = "speed.json"


class _ProbeDone(Exception):
    """Raised from the probe's step callback to stop the search at once."""


@dataclass(frozen=True)
class StepSpeed:
    """A measured search speed: ``seconds_per_step`` (whole image) at ``pixels``; when and how."""

    seconds_per_step: float
    pixels: int
    measured: str
    source: str = "probe"

    def seconds_for(self, pixels: int, steps: int, limit: float | None) -> float:
        """Expected search seconds for an image of ``pixels`` with ``steps`` steps and time ``limit`` (s)."""
        seconds = steps * self.seconds_per_step * (pixels / self.pixels if pixels != self.pixels else 1.0)
        return min(seconds, limit) if limit else seconds


def cache_file() -> Path:
    """Where measured speeds are kept (``<user cache dir>/speed.json``)."""
    return user_cache_dir() / CACHE_NAME


def speed_key(opts, device: str) -> str:
    """The settings a step's time depends on, as a string key."""
    from fixative.batch.settings import robust_entry

    search, models = opts.search, opts.models
    # the visibility budget's model costs more per step than LPIPS alone
    parts = {"encoders": list(models.encoders), "lpips": models.lpips_net, "device": device,
             "precision": search.precision, "budget": "lpips" if search.budget is not None else "visibility",
             "method": search.method, "robust": robust_entry(search), "tile_size": search.tile_size,
             "check": list(models.check_encoders)}
    return json.dumps(parts, sort_keys=True, default=str)


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_speed(key: str, pixels: int) -> StepSpeed | None:
    """The cached speed for ``key`` measured at the pixel count nearest ``pixels`` (within 2x), or None."""
    entries = _read_cache().get(key, [])
    best = None
    for entry in entries:
        try:
            speed = StepSpeed(**entry)
        except TypeError:
            continue
        ratio = max(speed.pixels, pixels) / max(1, min(speed.pixels, pixels))
        if ratio <= 2 and (best is None or abs(speed.pixels - pixels) < abs(best.pixels - pixels)):
            best = speed
    return best


def remember(key: str, speed: StepSpeed) -> None:
    """Add ``speed`` to the cache (one entry per pixel count; written atomically; a cache that cannot be
    written is only logged)."""
    data = _read_cache()
    entries = [e for e in data.get(key, []) if e.get("pixels") != speed.pixels]
    data[key] = [*entries, asdict(speed)][-8:]
    path = cache_file()
    try:
        from fixative.files.atomic import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data, indent=1)
    except OSError as exc:
        log.debug("could not cache the measured speed in %s: %s", path, exc)


def probe(protector, image, target, *, objective: str, budget, settings) -> StepSpeed:
    """Run :data:`PROBE_STEPS` search steps of ``protector`` on ``image`` and return the measured speed.

    ``budget``: the run's budget (an LPIPS value or a :mod:`fixative.core.budgets` limit); ``settings``: the run's
    :class:`~fixative.core.optimizer.OptimizerSettings` (its limits are replaced).
    The search is stopped after the last probed step; nothing is kept.
    """
    from dataclasses import replace

    from fixative.provenance.manifest import now

    stamps: list[float] = []
    per_step = {"callbacks": 1.0}

    def on_step(info) -> None:
        stamps.append(time.perf_counter())
        per_step["callbacks"] = max(1.0, info.tiles / max(1, info.group))
        if len(stamps) > PROBE_STEPS:
            raise _ProbeDone

    quick = replace(settings, steps=10_000, seconds=None, patience=0)
    with contextlib.suppress(_ProbeDone):
        protector.protect(image, target, objective=objective, budget=budget, settings=quick, callback=on_step)
    if len(stamps) < 2:
        raise RuntimeError("the search stopped before the probe could time it")
    seconds = (stamps[-1] - stamps[0]) / (len(stamps) - 1) * per_step["callbacks"]
    pixels = int(image.shape[-2] * image.shape[-1])
    return StepSpeed(seconds, pixels, now())


def _first_image(opts) -> tuple[object | None, list[int]]:
    """The run's first readable image (loaded) and the pixel counts of all its readable images."""
    from fixative.batch.inputs import collect_inputs
    from fixative.errors import FixativeError
    from fixative.files.images import load_image

    items, _, _ = collect_inputs(list(opts.inputs), opts.output.recursive)
    first = None
    sizes: list[int] = []
    for item in items:
        try:
            from PIL import Image

            with Image.open(item.path) as im:
                sizes.append(im.size[0] * im.size[1])
        except Exception:  # unreadable: reported by the batch
            continue
        if first is None:
            try:
                first = load_image(item.path, max_pixels=opts.output.max_pixels)
            except FixativeError:
                continue
    return first, sizes


def _measure(opts, protector, first, key: str) -> StepSpeed | None:
    """Probe the speed on ``first`` and cache it; None (said) when it cannot be measured."""
    from fixative.batch.settings import robust_settings
    from fixative.core.optimizer import OptimizerSettings
    from fixative.errors import FixativeError
    from fixative.targets.patterns import restyle

    log.info("measuring this machine's speed: %d search steps on %s...", PROBE_STEPS, first.path.name)
    search = opts.search
    settings = OptimizerSettings(method=search.method.value, seed=search.seed, linf=search.linf,
                                 precision=search.precision.value,
                                 robust=robust_settings(search, tuple(first.rgb.shape[-2:])))
    spec = opts.target
    objective = "away" if spec.objective == "away" or (spec.mode == "immunize" and spec.image is None
                                                       and spec.made is None) else "target"
    try:
        speed = probe(protector, first.rgb, restyle(first.rgb) if objective == "target" else None,
                      objective=objective, budget=opts.search.budget_limit(), settings=settings)
    except (RuntimeError, FixativeError) as exc:
        log.info("could not measure the speed (%s); no time estimate", exc)
        return None
    remember(key, speed)
    return speed


def _say(opts, speed: StepSpeed, sizes: list[int], pixels: int, device: str, where: str) -> None:
    """Log the expected time per image and for the portfolio (a warning over :data:`LONG_RUN_SECONDS`)."""
    from fixative.presets import QUALITIES

    steps, seconds = opts.search.steps, opts.search.seconds
    preset = next((n for n, q in QUALITIES.items() if (q.steps, q.seconds) == (steps, seconds)), None)
    what = f"search.quality {preset}" if preset else "these settings"
    limit = f"{seconds:.0f} s time limit" if seconds else "no time limit"
    per_image = [speed.seconds_for(p, steps, seconds) for p in sizes or [pixels]]
    mean = sum(per_image) / len(per_image)
    log.info("expected time per image with %s (%d steps, %s) on %s: about %s for a %.2g MP image "
             "(%.3g s per step at %.2g MP, %s)", what, steps, limit, device, duration(mean),
             sum(sizes or [pixels]) / len(sizes or [pixels]) / 1e6, speed.seconds_per_step, speed.pixels / 1e6, where)
    total = sum(per_image)
    if len(per_image) > 1:
        log.info("all %d images: about %s", len(per_image), duration(total))
    if total > LONG_RUN_SECONDS:
        log.warning("warning: this portfolio would take about %s here, over an hour. For less: search.quality fast "
                    "(60 steps, at most 60 s per image), search.seconds per image, or a GPU (models.device cuda). "
                    "Finished images are kept if you stop it (Ctrl+C); rerun to go on.", duration(total))


def announce(opts, cache=None) -> bool:
    """Before a long run: measure (or recall) this machine's speed and log the expected time per image.

    ``opts``: the run's :class:`~fixative.options.ProtectOptions`; the models are got from ``cache`` (a
    :class:`~fixative.models.loading.ProtectorCache`: pass the same one to
    :func:`~fixative.batch.runner.run_batch`, so they load once). Returns whether models were loaded
    (False when nothing was measured: few steps, no readable image, several processes). Never raises for
    a bad input: the batch itself reports those.
    """
    if (opts.search.steps < MIN_STEPS_TO_PROBE or opts.output.shard is not None
            or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return False
    first, sizes = _first_image(opts)
    if first is None:
        return False
    from fixative.models.loading import ProtectorCache

    protector = (cache if cache is not None else ProtectorCache()).get(opts.models.spec())
    device = str(protector.device)
    key = speed_key(opts, device)
    pixels = int(first.rgb.shape[-2] * first.rgb.shape[-1])
    speed = cached_speed(key, pixels)
    where = f"cached in {cache_file()}"
    if speed is None:
        speed = _measure(opts, protector, first, key)
        if speed is None:
            return True
        where = f"measured now, cached in {cache_file()}"
    _say(opts, speed, sizes, pixels, device, where)
    return True


def duration(seconds: float) -> str:
    """``seconds`` in words: "40 s", "3 min", "1 h 5 min"."""
    if seconds < 90:
        return f"{max(seconds, 0.1):.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{int(minutes // 60)} h {int(minutes % 60)} min"
