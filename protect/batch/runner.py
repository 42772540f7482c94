"""Protecting a portfolio: inputs, output names, resume, shards, progress and the summary.

:func:`run_batch` takes files, folders (``recursive`` on request) and glob patterns, plans one
output per image (deterministic names that never land on an input, even when the output folder
is the input folder), skips the images already done with the same settings (recognised by the
input's SHA-256 plus the settings hash in its record), and protects the rest, one bad file never
stopping the others.

Sharding: with ``shard=(i, n)`` (1-based ``--shard i/n`` on the command line), or when started by
``accelerate launch`` (``WORLD_SIZE`` > 1), the planned list is split round-robin: image ``k``
belongs to shard ``k mod n``, so every image is done exactly once. Every shard plans the same
names: a name belongs to whichever input its record names, never to whoever came first.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fixative import __version__
from fixative.errors import (
    ConfigError,
    FixativeError,
    InputImageError,
    ModelNotFoundError,
    OutputError,
    safe_load_message,
)
from fixative.files.formats import (
    DEFAULT_JPEG_QUALITY,
    OUTPUT_FORMATS,
    decode_rgb,
    encode_image,
    output_bits,
    remove_stale_temporaries,
)
from fixative.files.images import IMAGE_SUFFIXES, MAX_PIXELS, load_image
from fixative.provenance.manifest import (
    INDEX_NAME,
    encoder_entry,
    entry_problem,
    environment,
    index_entries,
    index_entry,
    is_record,
    load_index,
    lpips_entry,
    now,
    portable_path,
    portable_paths,
    read_json,
    record_path,
    recorded_path,
    settings_hash,
    sha256_bytes,
    sha256_file,
    update_index,
    write_record,
)
from fixative.provenance.optout import DEFAULT_OPT_OUT, get_opt_out, with_opt_out
from fixative.targets.modes import DEFAULT_MODE, TargetRequest, make_target, target_request

log = logging.getLogger("fixative")

_GLOB_CHARS = set("*?[")
#: smallest --tile-size: more than twice the engine's 64-px tile overlap
MIN_TILE_SIZE = 160


@dataclass
class BatchOptions:
    """Everything a portfolio run needs (the CLI fills it from its flags)."""

    inputs: list[str]
    out: Path
    target: Path | None = None
    mode: str = DEFAULT_MODE
    objective: str | None = None
    encoders: list[str] = field(default_factory=lambda: ["taef2"])
    budget: float | None = None  # an LPIPS budget; None = the visibility budget below
    like_jpeg: int = 75  # no more visible than the image's own JPEG at this quality (FLIP), unless budget is set
    steps: int = 300
    seconds: float | None = None
    seed: int = 0
    method: str = "fixative"
    linf: float | None = None
    precision: str = "auto"
    lpips_net: str = "alex"
    tile_size: int = 1024
    device: str = "auto"
    models_dir: Path | None = None
    format: str = "png"
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_pixels: int = MAX_PIXELS
    recursive: bool = False
    shard: tuple[int, int] | None = None  # (index from 1, count)
    quiet: bool = False
    target_options: dict = field(default_factory=dict)  # made targets (the targets issue)
    # encoders the result is measured on but not crafted against (surrogate transfer); no effect on pixels
    check_encoders: list[str] = field(default_factory=list)
    tile_batch: int | None = None  # tiles per batched pass (None: automatic, see Protector.protect)
    robust: str = "web"  # off | web | strong (fixative.core.robust)
    platform: str | None = None  # --for PLATFORM (fixative.batch.platforms); None with "web" = the generic platform
    views: str = "train"  # train | off (fixative.core.views): protect what a trainer's resized views show
    opt_out: str = DEFAULT_OPT_OUT  # the "do not train" statement (fixative.provenance.optout)
    # a fixative.provenance.identity.Identity: sign every output (fixative.provenance.credentials); None: unsigned
    identity: Any = None
    # records hold paths relative to their own folder unless this is set (--absolute-paths)
    absolute_paths: bool = False


def budget_limit(opts: BatchOptions):
    """The typed budget of a run: LPIPS when ``opts.budget`` is given, else the visibility budget."""
    from fixative.core.budgets import LpipsLimit, VisibilityLimit

    return LpipsLimit(opts.budget) if opts.budget is not None else VisibilityLimit(like_jpeg=opts.like_jpeg)


@dataclass
class BatchHooks:
    """For an app that runs the batch in its own process (the GUI); the command line passes none.

    - ``protector``: an already loaded :class:`~fixative.core.engine.Protector` to use instead of loading
      one. It must come from the options' encoders, LPIPS net, models folder and device (the caller
      keeps it between runs, so models load once).
    - ``on_image(index, count, job)``: called before each image (``index`` from 0); return False to
      stop the run there.
    - ``on_target_step(job, done, total)``: called after every denoising step while the image's made
      target (``--style``/``--anchor``) is generated; return False to cancel there, mid-generation.
    - ``on_step(job, info)``: called after every search step with a :class:`~fixative.core.engine.TileProgress`;
      return False to cancel: that image is not saved, and the run stops.

    Images a stopped run did not do are listed with status ``cancelled``; nothing half-done is written.
    """

    protector: Any = None
    on_image: Callable[[int, int, Job], bool | None] | None = None
    on_target_step: Callable[[Job, int, int], bool | None] | None = None
    on_step: Callable[[Job, Any], bool | None] | None = None


class Cancelled(Exception):
    """Raised inside a run when a hook asked it to stop (never escapes :func:`run_batch`)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl+C (or SIGTERM, see :mod:`fixative.cli.main`) during :func:`run_batch`; its message says what was saved."""


@dataclass(frozen=True)
class InputItem:
    """An input file and where its output goes, relative to the output folder (``sub/x.jpg``)."""

    path: Path
    rel: Path


@dataclass(frozen=True)
class Job:
    input: Path
    output: Path
    record: Path


@dataclass
class Outcome:
    """What happened to one input: ``done``, ``skipped`` (already done), ``failed`` (with ``reason``) or
    ``cancelled`` (a :class:`BatchHooks` hook stopped the run before it was done)."""

    input: str
    status: str
    output: str | None = None
    record: str | None = None
    reason: str | None = None
    lpips: float | None = None
    mean_ratio: float | None = None
    seconds: float | None = None
    compressed: dict | None = None
    checked: dict | None = None  # distance ratio on each check encoder (transfer from the crafting ones)
    view_ratio: dict | None = None  # distance ratio at each evaluation training view (fixative.core.views)


@dataclass
class BatchSummary:
    out: Path
    outcomes: list[Outcome]
    ignored: int = 0
    shard: str | None = None
    settings_hash: str | None = None
    report: bool = True  # False on the non-main processes of an accelerate run

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_json(self) -> dict:
        return {
            "fixative": __version__,
            "out": str(self.out),
            "index": str(self.out / INDEX_NAME),
            "shard": self.shard,
            "settings_hash": self.settings_hash,
            "counts": {s: self.count(s) for s in ("done", "skipped", "failed")} | {"ignored": self.ignored},
            "images": [{k: v for k, v in asdict(o).items() if v is not None} for o in self.outcomes],
            "failures": [{"input": o.input, "reason": o.reason} for o in self.failures],
            "exit_code": self.exit_code,
        }


# --- inputs -------------------------------------------------------------------------------------


def _hidden(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
    return any(p.startswith(".") for p in parts)


def _is_recorded_output(path: Path) -> bool:
    """True for a file a Fixative run wrote (its record beside it names it as the output)."""
    data = read_json(record_path(path))
    return is_record(data) and Path(data["output"]["name"]).name == path.name


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether path components ``parts`` match glob components ``pattern`` (``**`` = any number of folders)."""
    if not pattern:
        return not parts
    head, tail = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(parts[k:], tail) for k in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _matches(parts[1:], tail)


def glob_files(pattern: str) -> list[Path]:
    """The files matching a glob pattern (``**`` = any folders), sorted, each once.

    Symlinked folders are followed, but each real folder is entered once, so a symlink loop
    (``loop/self -> loop``) ends instead of listing paths for ever.
    """
    parts = Path(pattern).parts
    first = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), len(parts))
    if "**" not in parts[first:]:
        return sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    root = Path(*parts[:first]) if first else Path(".")
    rest = parts[first:]
    found: list[Path] = []
    entered: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        try:
            stat = os.stat(folder)
        except OSError:
            subfolders[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in entered:
            subfolders[:] = []
            continue
        entered.add((stat.st_dev, stat.st_ino))
        subfolders.sort()
        base = Path(folder).relative_to(root).parts if Path(folder) != root else ()
        found += [Path(folder) / name for name in files if _matches((*base, name), rest)]
    return sorted(found)


def collect_inputs(specs: list[str], recursive: bool = False) -> tuple[list[InputItem], list[Outcome], int]:
    """Expand files, folders and globs into images, in a fixed order.

    Folders and globs keep files with image suffixes that are not hidden and not outputs of an
    earlier run; a file named explicitly is taken whatever its name (and fails later if it is
    not an image). Returns (items, failures for names that match nothing, count ignored).
    """
    items: list[InputItem] = []
    failures: list[Outcome] = []
    seen: set[Path] = set()
    ignored = 0

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(InputItem(path, rel))

    def expand(candidates: list[Path], root: Path | None) -> int:
        nonlocal ignored
        taken = 0
        for path in candidates:
            if not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES or _hidden(path, root or path.parent):
                ignored += 1
                continue
            if _is_recorded_output(path):
                ignored += 1
                continue
            add(path, path.relative_to(root) if root else Path(path.name))
            taken += 1
        return taken

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(path.rglob("*") if recursive else path.iterdir())
            if not expand(found, path):
                failures.append(Outcome(str(spec), "failed", reason="the folder holds no images"
                                        + ("" if recursive else " (add --recursive for subfolders)")))
        elif path.exists():
            add(path, Path(path.name))
        elif _GLOB_CHARS & set(str(spec)):
            if not expand(glob_files(str(spec)), None):
                failures.append(Outcome(str(spec), "failed", reason="the pattern matched no images"))
        else:
            failures.append(Outcome(str(spec), "failed", reason="no such file or folder"))
    return items, failures, ignored


# --- output names -------------------------------------------------------------------------------


def _record_owner(record: Path) -> Path | None | bool:
    """The input that a record at ``record`` belongs to; None if there is no file; False if foreign (or damaged)."""
    if not record.exists():
        return None
    data = read_json(record)
    if not is_record(data):
        return False
    return recorded_path(data["input"].get("path"), record.parent) or False


def _restore_record(dest: Path, record: Path, entry: dict, out_dir: Path) -> bool:
    """Give a renamed record (``zzz.json`` for ``Wood.png``) back its name, if its bytes are the ones the
    index holds for ``dest``; True if it did. A record that differs from the index is never taken."""
    if entry.get("record") != record.relative_to(out_dir).as_posix():
        return False
    for candidate in sorted(dest.parent.glob("*.json")):
        if candidate in (record, out_dir / INDEX_NAME) or sha256_file(candidate) != entry["record_sha256"]:
            continue
        data = read_json(candidate)
        if not is_record(data) or Path(data["output"]["name"]).name != dest.name:
            continue
        try:
            os.link(candidate, record)  # fails rather than overwrite a record that appeared meanwhile
            candidate.unlink()
        except OSError:
            return False
        log.warning("%s: the record of %s was renamed; given back its name %s", candidate, dest.name, record.name)
        return True
    return False


def plan_outputs(items: list[InputItem], out_dir: Path, suffix: str = ".png") -> list[Job]:
    """One output (and record) path per input, deterministic, never an input and never a stranger's file.

    ``out/<rel dir>/<stem><suffix>``; on a clash ``<stem>_2``, ``<stem>_3``... A name clashes with
    an input file, a name given to an earlier input, or a file in the folder that belongs to
    something else (an image without a record, or a record of another input). A name whose
    record belongs to this input is its own (an earlier run's), so reruns and shards agree.
    """
    inputs = {item.path.resolve() for item in items}
    entries = index_entries(out_dir)
    assigned: set[Path] = set()
    jobs: list[Job] = []
    for item in items:
        own = item.path.resolve()
        base = out_dir / item.rel.parent
        n = 1
        while True:
            stem = item.path.stem if n == 1 else f"{item.path.stem}_{n}"
            dest = base / f"{stem}{suffix}"
            record = record_path(dest)
            n += 1
            keys = {dest.resolve(), record.resolve()}
            if keys & inputs or keys & assigned:
                continue
            owner = _record_owner(record)
            if owner is not None and owner is not False and owner != own:
                continue
            if owner is False or (owner is None and dest.exists()):
                # no record, or a damaged one: the name is still this input's if the index lists it so (the
                # record renamed, lost or damaged: the image is done again); else it belongs to something else
                entry = entries.get(dest.relative_to(out_dir).as_posix())
                if entry is None or recorded_path(entry.get("input"), out_dir) != own:
                    continue
                if owner is None:
                    _restore_record(dest, record, entry, out_dir)
            break
        assigned |= keys
        jobs.append(Job(item.path, dest, record))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as exc:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 1/2") from exc
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {text!r}: I must be between 1 and N")
    return index, count


@dataclass
class _Process:
    """This process's place among the shards."""

    index: int = 0  # from 0
    count: int = 1
    state: Any = None  # accelerate's PartialState when launched by accelerate
    device: str | None = None

    @property
    def main(self) -> bool:
        return self.state is None or self.state.is_main_process

    @property
    def label(self) -> str | None:
        return f"{self.index + 1}/{self.count}" if self.count > 1 else None


def _this_process(opts: BatchOptions) -> _Process:
    if opts.shard is not None:
        return _Process(opts.shard[0] - 1, opts.shard[1])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        try:
            from accelerate import PartialState
        except ImportError as exc:
            raise ConfigError("started as one of several processes, but 'accelerate' is not installed; "
                              "pip install 'fixative[multi]', or use --shard I/N") from exc
        cpu = opts.device == "cpu" or not torch.cuda.is_available()
        state = PartialState(cpu=cpu, timeout=timedelta(days=7))
        device = str(state.device) if opts.device == "auto" else opts.device
        return _Process(state.process_index, state.num_processes, state, device)
    return _Process()


# --- one image ----------------------------------------------------------------------------------


def _run_settings(opts: BatchOptions, request: TargetRequest, models: list[dict], lpips: dict) -> dict:
    """The settings that decide an output's pixels and file (hashed to recognise finished work)."""
    return {
        "target": request.describe(),
        **budget_limit(opts).describe(),
        "method": opts.method,
        "steps": opts.steps,
        "seconds": opts.seconds,
        "seed": opts.seed,
        "linf": opts.linf,
        "precision": opts.precision,
        "lpips_net": opts.lpips_net,
        "tile_size": opts.tile_size,
        "robust": _robust_entry(opts),
        "views": _views_entry(opts),
        "encoders": [{"spec": m["spec"], "sha256": [f["sha256"] for f in m["files"]]} for m in models],
        "lpips": [f["sha256"] for f in lpips["files"]],
        "format": opts.format,
        "jpeg_quality": opts.jpeg_quality if opts.format == "jpeg" else None,
        "bits": "as input where the format allows",
        "opt_out": opts.opt_out,
        "credentials": opts.identity.fingerprint if opts.identity is not None else None,
    }


def platform_for(opts: BatchOptions) -> str | None:
    """The platform protected for: ``opts.platform``, else the generic one for ``robust="web"``, else None."""
    from fixative.batch.platforms import DEFAULT_PLATFORM

    return opts.platform or (DEFAULT_PLATFORM if opts.robust == "web" else None)


def _robust_entry(opts: BatchOptions) -> dict | str:
    """The robust mix as recorded and hashed: "off", or the preset's data (and the platform's)."""
    from fixative.core.robust import settings_for

    base = settings_for(opts.robust)
    platform = platform_for(opts)
    if platform is None:
        return "off" if base is None else base.describe()
    from fixative.batch.platforms import get_platform

    return {"level": opts.robust, "platform": get_platform(platform).describe(),
            "base": base.describe() if base is not None else None}


def _views_entry(opts: BatchOptions) -> dict | str:
    """The training views as recorded and hashed: "off", or the preset's data."""
    from fixative.core.views import views_for

    views = views_for(opts.views)
    return "off" if views is None else views.describe()


def robust_settings(opts: BatchOptions, size: tuple[int, int]):
    """The :class:`~fixative.core.robust.RobustSettings` for one image of ``size`` (H, W), or None (off).

    With training views the encoders already see the image shrunk to a trainer's size, smaller than any
    platform's limit, so the platform's own downscale is not drawn again on top of it."""
    from fixative.core.robust import settings_for

    platform = platform_for(opts)
    if platform is None:
        return settings_for(opts.robust)
    from fixative.batch.platforms import get_platform, robust_for

    return robust_for(get_platform(platform), None if opts.views != "off" else size, opts.robust)


def _already_done(job: Job, input_sha: str, shash: str) -> dict | None:
    data = read_json(job.record)
    if not is_record(data) or data.get("settings_hash") != shash or data["input"].get("sha256") != input_sha:
        return None
    if not job.output.is_file() or sha256_file(job.output) != data["output"].get("sha256"):
        return None
    return data


def remeasure(protector, source, saved, target, objective: str, tile_size: int) -> dict:
    """LPIPS, PSNR, SSIM, L-inf and the distance ratio of a re-decoded (compressed) file against the original."""
    m = protector.measure(source, saved, target, objective=objective, tile_size=tile_size)
    keys = ("lpips", "flip", "psnr", "ssim", "linf", "distance_after", "ratio", "mean_ratio", "views", "view_ratio")
    return {k: getattr(m, k) for k in keys}


class _Runner:
    """Holds the models (loaded on first need) and the run's fixed parts."""

    def __init__(self, opts: BatchOptions, proc: _Process, request: TargetRequest, models: list[dict],
                 lpips: dict, run_settings: dict, shash: str, hooks: BatchHooks | None = None):
        self.opts, self.proc, self.request = opts, proc, request
        self.models, self.lpips, self.run_settings, self.shash = models, lpips, run_settings, shash
        self.hooks = hooks or BatchHooks()
        self.protector = self.hooks.protector
        self.environment = environment()

    def _protector(self):
        if self.protector is None:
            from fixative.models.loading import load_protector

            self.protector = load_protector(
                self.opts.encoders, lpips_net=self.opts.lpips_net, models_dir=self.opts.models_dir,
                device=self.proc.device or self.opts.device, check_encoders=self.opts.check_encoders,
            )
        return self.protector

    def _target_progress(self, job: Job) -> Callable[[int, int], None] | None:
        """The made target's step callback for ``job``: relays to the hook and raises Cancelled when it says so."""
        hook = self.hooks.on_target_step
        if hook is None:
            return None

        def on_step(done: int, total: int) -> None:
            if hook(job, done, total) is False:
                raise Cancelled

        return on_step

    def _indexed(self, job: Job, done: dict) -> bool:
        """Whether a finished image's record agrees with the index (then it is skipped).

        No entry: a run killed after writing the files but before the index; the entry is added now. An
        entry that disagrees (a run killed between a re-protection's record and its index entry, two runs
        racing, or an edit): the record is not trusted and the image is protected again, never re-blessed.
        """
        out = self.opts.out
        name = job.output.relative_to(out).as_posix()
        record_sha = sha256_file(job.record)
        entry = ((load_index(out) or {}).get("entries") or {}).get(name)
        if entry is None:
            update_index(out, name, index_entry(done, job.record.relative_to(out).as_posix(), record_sha,
                                                self._index_input(job)),
                         replace=False, expect={job.record: record_sha, job.output: done["output"]["sha256"]},
                         identity=self.opts.identity)
            return True
        if (entry_problem(entry) is None and entry["record_sha256"] == record_sha
                and entry["output_sha256"] == done["output"]["sha256"]):
            return True
        log.warning("%s: its record %s differs from %s (an interrupted or racing run, or an edit); protecting it "
                    "again", job.input, job.record.name, INDEX_NAME)
        return False

    def _index_input(self, job: Job) -> str:
        return portable_path(job.input, self.opts.out, self.opts.absolute_paths)

    def run(self, job: Job, bar_factory) -> Outcome:
        opts = self.opts
        started_at, started = now(), time.perf_counter()
        for path in (job.output, job.record):
            remove_stale_temporaries(path)
        input_sha = sha256_file(job.input)
        if self.request.kind == "image" and input_sha == self.request.image_sha256:
            raise ConfigError(f"this image is the --target itself ({self.request.image}); moving it towards itself "
                              "protects nothing: choose another target")
        done = _already_done(job, input_sha, self.shash)
        if done is not None and self._indexed(job, done):
            metrics = done.get("metrics") if isinstance(done.get("metrics"), dict) else {}
            return Outcome(str(job.input), "skipped", str(job.output), str(job.record),
                           lpips=metrics.get("lpips"), mean_ratio=metrics.get("mean_ratio"),
                           view_ratio=metrics.get("view_ratio"))

        loaded = load_image(job.input, max_pixels=opts.max_pixels)
        from fixative.core.engine import check_size

        try:
            check_size(*loaded.size)
        except InputImageError as exc:
            raise InputImageError(f"{job.input}: {exc}") from exc
        if loaded.alpha is not None and opts.format == "jpeg":
            raise ConfigError("the image has transparency, which JPEG cannot hold; use --format png, webp or tiff")
        target = make_target(self.request, loaded, on_step=self._target_progress(job))
        if self.request.kind == "image" and target.tensor is not None and target.tensor.equal(loaded.rgb):
            raise ConfigError(f"the --target {self.request.image} has the same pixels as this image; moving it "
                              "towards itself protects nothing: choose another target")
        bits = output_bits(opts.format, loaded.bits)
        protector = self._protector()
        from fixative.core.optimizer import OptimizerSettings

        settings = OptimizerSettings(method=opts.method, steps=opts.steps, seconds=opts.seconds, seed=opts.seed,
                                     linf=opts.linf, precision=opts.precision,
                                     robust=robust_settings(opts, tuple(loaded.rgb.shape[-2:])), views=opts.views)
        bar = bar_factory(job.input.name, opts.steps)

        def progress(info) -> bool | None:
            bar.total = info.max_steps * info.tiles
            bar.n = (info.tile - 1) * info.max_steps + info.step * info.group
            bar.set_postfix(lpips=f"{info.lpips:.3f}", refresh=False)
            bar.refresh()
            return self.hooks.on_step(job, info) if self.hooks.on_step else None

        try:
            result = protector.protect(
                loaded.rgb, target.tensor, objective=self.request.objective, budget=budget_limit(opts),
                settings=settings, alpha=loaded.alpha, levels=65535 if bits == 16 else 255, tile_size=opts.tile_size,
                tile_batch=opts.tile_batch, callback=progress,
            )
        finally:
            bar.close()
        if result.metrics.stopped == "cancelled":
            raise Cancelled
        opt_out = get_opt_out(opts.opt_out)
        info = {**loaded.info, "xmp": with_opt_out(loaded.info.get("xmp"), opt_out)}
        data = encode_image(result.image, result.alpha, fmt=opts.format, bits=bits, info=info,
                            quality=opts.jpeg_quality)
        compressed = None
        if opts.format == "jpeg":
            compressed = {"format": "jpeg", "quality": opts.jpeg_quality, **remeasure(
                protector, loaded.rgb, decode_rgb(data), target.tensor, self.request.objective, opts.tile_size)}
        record = {
            "fixative": __version__,
            "record_version": 1,
            "created": started_at,
            "finished": now(),
            "mode": self.request.mode,
            "input": {
                "path": portable_path(job.input, job.record.parent, opts.absolute_paths),
                "name": job.input.name,
                "sha256": input_sha,
                "bytes": job.input.stat().st_size,
                "size": list(loaded.size),
                "format": loaded.format,
                "mode": loaded.mode,
                "bits": loaded.bits,
                "alpha": loaded.alpha is not None,
                "orientation": loaded.orientation,
                "notes": loaded.notes,
            },
            "output": {
                "path": portable_path(job.output, job.record.parent, opts.absolute_paths),
                "name": job.output.relative_to(opts.out).as_posix(),
                "format": opts.format,
                "bits": bits,
                "alpha": result.alpha is not None,
                "metadata": sorted(k for k in ("icc_profile", "exif", "xmp", "dpi") if info.get(k)),
            },
            "opt_out": opt_out.describe(),
            "target": target.recipe if opts.absolute_paths else portable_paths(target.recipe, job.record.parent),
            "encoders": list(opts.encoders),
            "models": {"encoders": self.models, "lpips": self.lpips} if opts.absolute_paths else portable_paths(
                {"encoders": self.models, "lpips": self.lpips}, job.record.parent),
            "settings_hash": self.shash,
            "run_settings": self.run_settings,
            **result.record(),
            "compressed": compressed,
            "environment": {**self.environment, "device": str(protector.device)},
        }
        data = finish_output(data, record, job.input, opts.identity, opt_out)
        # the record first: an output never exists without one (see fixative.provenance.manifest)
        from fixative.files.formats import atomic_write

        writing = job.record
        try:
            record_sha = write_record(job.record, record)
            writing = job.output
            atomic_write(job.output, data)
        except OSError as exc:
            raise OutputError(f"{writing}: cannot be written ({exc.strerror or exc})") from exc
        if not update_index(opts.out, record["output"]["name"],
                            index_entry(record, job.record.relative_to(opts.out).as_posix(), record_sha,
                                        self._index_input(job)),
                            expect={job.record: record_sha, job.output: record["output"]["sha256"]},
                            identity=opts.identity):
            log.warning("%s: another run rewrote %s meanwhile; its files are kept and not indexed (rerun to check)",
                        job.input, job.output.name)
        m = result.metrics
        checked = {n: m.ratio[n] for n in m.checked} if m.checked and m.ratio else None
        return Outcome(str(job.input), "done", str(job.output), str(job.record), lpips=m.lpips,
                       mean_ratio=m.mean_ratio, view_ratio=m.view_ratio,
                       seconds=round(time.perf_counter() - started, 2), compressed=compressed,
                       checked=checked)


def finish_output(data: bytes, record: dict, original: Path, identity, opt_out) -> bytes:
    """The output's final bytes: ``data`` signed with ``identity`` (when given); fills ``record``'s
    ``credentials`` and the output's SHA-256, size and pixel hash (taken after signing)."""
    from fixative.provenance.credentials import pixels_sha256, protection_assertion, sign_image

    credentials = None
    if identity is not None:
        data, credentials = sign_image(data, record["output"]["format"], original, identity,
                                       title=Path(record["output"]["name"]).name,
                                       protection=protection_assertion(record), opt_out=opt_out)
    record["credentials"] = credentials
    record["output"].update(sha256=sha256_bytes(data), bytes=len(data), pixels_sha256=pixels_sha256(data))
    return data


def _describe(outcome: Outcome) -> str:
    parts = [f"{outcome.input} -> {outcome.output}"]
    if outcome.lpips is not None:
        parts.append(f"LPIPS {outcome.lpips:.4f}")
    if outcome.mean_ratio is not None:
        parts.append(f"distance ratio {outcome.mean_ratio:.3f}")
    if outcome.view_ratio:
        parts.append("at training views: " + ", ".join(f"{n} {r:.3f}" for n, r in outcome.view_ratio.items()))
    if outcome.checked:
        parts.append("on check encoders: " + ", ".join(f"{n} {r:.3f}" for n, r in outcome.checked.items()))
    if outcome.seconds is not None:
        parts.append(f"{outcome.seconds:.1f} s")
    text = ", ".join(parts)
    if outcome.compressed:
        c = outcome.compressed
        ratio = f", distance ratio {c['mean_ratio']:.3f}" if c.get("mean_ratio") is not None else ""
        text += f"; after JPEG q{c['quality']}: LPIPS {c['lpips']:.4f}{ratio} (compression weakens protection)"
    return text


def run_batch(opts: BatchOptions, hooks: BatchHooks | None = None) -> BatchSummary:
    """Protect every image of ``opts.inputs`` that is not done yet; see the module docs.

    ``hooks``: progress, cancelling and a preloaded model for an app embedding the batch (see :class:`BatchHooks`).
    """
    from fixative.models.store import ModelStore

    if opts.format not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown --format {opts.format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    get_opt_out(opts.opt_out)  # an unknown --opt-out: say so before any work
    budget_limit(opts)  # a clear error for a bad budget or JPEG quality, before any model loads
    if opts.tile_size < MIN_TILE_SIZE:
        raise ConfigError(f"--tile-size must be at least {MIN_TILE_SIZE} pixels, got {opts.tile_size}")
    if opts.platform is not None:
        from fixative.batch.platforms import get_platform, robust_for

        robust_for(get_platform(opts.platform), None, opts.robust)  # unknown platform or --robust off: say so now
    else:
        from fixative.core.robust import settings_for

        settings_for(opts.robust)
    proc = _this_process(opts)
    request = target_request(opts.mode, opts.objective, opts.target, opts.target_options)
    if request.image is not None:
        if not request.image.is_file():
            raise ConfigError(f"--target {request.image}: no such file")
        try:  # once, up front: a target that cannot be read would fail every image
            load_image(request.image)
        except InputImageError as exc:
            raise ConfigError(f"--target {exc}") from exc
        request = TargetRequest(request.mode, request.objective, request.kind, request.image,
                                sha256_file(request.image), request.options)
    store = ModelStore(opts.models_dir)
    models = [encoder_entry(spec, store) for spec in opts.encoders]
    lpips = lpips_entry(opts.lpips_net, store)
    run_settings = _run_settings(opts, request, models, lpips)
    shash = settings_hash(run_settings)

    items, failures, ignored = collect_inputs(opts.inputs, opts.recursive)
    if not items:  # nothing can be done: say why once, and leave no empty output folder behind
        raise ConfigError("nothing to protect: " + "; ".join(f"{f.input}: {f.reason}" for f in failures))
    if request.kind == "image" and all(_same_file(item.path, request) for item in items):
        # checked before the output folder is made: a run that can do nothing leaves nothing behind
        raise ConfigError(f"--target {request.image} is the image to protect; moving an image towards itself "
                          "protects nothing: choose another target")
    prepare_output_folder(opts.out)
    jobs = plan_outputs(items, opts.out, OUTPUT_FORMATS[opts.format])
    mine = jobs[proc.index :: proc.count]
    outcomes: list[Outcome] = failures if proc.index == 0 else []
    for failure in outcomes:
        log.error("%s: %s", failure.input, failure.reason)
    runner = _Runner(opts, proc, request, models, lpips, run_settings, shash, hooks)
    show = not opts.quiet and proc.main
    if proc.label:
        log.info("shard %s: %d of %d images", proc.label, len(mine), len(jobs))
    try:
        _run_jobs(mine, runner, outcomes, show)
    except KeyboardInterrupt as exc:
        raise Interrupted(_interrupted(outcomes, mine, opts.out)) from exc
    summary = BatchSummary(opts.out, outcomes, ignored, proc.label, shash)
    if proc.state is not None:  # accelerate: the main process reports for all
        from accelerate.utils import gather_object

        proc.state.wait_for_everyone()
        gathered = gather_object([outcomes])
        if proc.main:
            summary.outcomes = [o for part in gathered for o in part]
            summary.shard = None
        else:
            summary.report = False
    return summary


def _run_jobs(mine: list[Job], runner: _Runner, outcomes: list[Outcome], show: bool) -> None:
    """Run ``mine`` in order, appending each outcome to ``outcomes`` (see :func:`run_batch`)."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    def bar_factory(name: str, steps: int):
        return tqdm(total=steps, desc=name[:30], unit="step", leave=False, position=1, disable=not show)

    with logging_redirect_tqdm(), tqdm(
        total=len(mine), desc="portfolio", unit="image", position=0, disable=not show
    ) as overall:
        for number, job in enumerate(mine):
            try:
                if runner.hooks.on_image and runner.hooks.on_image(number, len(mine), job) is False:
                    raise Cancelled
                outcome = runner.run(job, bar_factory)
                if outcome.status == "done":
                    log.info("%s", _describe(outcome))
                else:
                    log.info("%s: already done with these settings, skipped", job.input)
            except Cancelled:
                outcomes += [Outcome(str(j.input), "cancelled", reason="cancelled before it was done")
                             for j in mine[number:]]
                log.warning("cancelled: %d image(s) not done", len(mine) - number)
                break
            except ModelNotFoundError:
                raise
            except FixativeError as exc:
                outcome = Outcome(str(job.input), "failed", reason=_reason(exc, job.input))
                log.error("%s: %s", job.input, outcome.reason)
            except MemoryError:
                outcome = Outcome(str(job.input), "failed", reason="out of memory (try a smaller --tile-size)")
                log.error("%s: %s", job.input, outcome.reason)
            except Exception as exc:  # one image's unexpected failure never stops the portfolio
                kind = "out of GPU memory (try a smaller --tile-size)" if "OutOfMemory" in type(exc).__name__ else (
                    f"unexpected error: {type(exc).__name__}: {safe_load_message(exc)}")
                outcome = Outcome(str(job.input), "failed", reason=kind)
                log.error("%s: %s", job.input, kind)
                log.debug("details", exc_info=True)
            outcomes.append(outcome)
            overall.update(1)


def _interrupted(outcomes: list[Outcome], mine: list[Job], out: Path) -> str:
    """What an interrupted run says: what is saved, what is not, and how to finish."""
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    finished = {o.input for o in outcomes}
    left = [job for job in mine if str(job.input) not in finished]
    text = f"{done} image(s) protected and saved in {out}" + (f" ({skipped} already done)" if skipped else "")
    if left:
        text += (f"; {left[0].input} was in progress and is not saved (no partial file is left), "
                 f"{len(left)} image(s) not done")
    return text + "; rerun the same command to do the rest"


def _same_file(path: Path, request: TargetRequest) -> bool:
    """Whether ``path`` holds exactly the bytes of the request's target image (size first, then SHA-256)."""
    try:
        return path.stat().st_size == request.image.stat().st_size and sha256_file(path) == request.image_sha256
    except OSError:
        return False


def _blocking(path: Path) -> str | None:
    """The first existing ancestor of ``path`` that is a file, not a folder (why it cannot be created), or None."""
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else str(parent)
    return None


def prepare_output_folder(out: Path) -> None:
    """Create the output folder if needed and check that files can be written in it.

    Before any image is computed: a folder that cannot hold the results fails the whole run at once, in
    one line naming it, rather than each image after its search.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = _blocking(out)
        why = f"{blocking} is a file, not a folder" if blocking else (exc.strerror or str(exc))
        raise OutputError(f"--out {out}: cannot be created ({why})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".fixative-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write files there ({exc.strerror or exc})") from exc


def _reason(exc: Exception, path: Path) -> str:
    """The error's message without the file name it repeats (the log line names the file)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
