"""The desktop app's event handlers, as plain functions and classes (no gradio here, testable directly).

A job goes through the same path as ``fixative protect``: :func:`protect_argv` writes the
equivalent command line, :func:`fixative.cli.main.parse_protect_args` and
:func:`fixative.cli.main.protect_options` turn it into batch options, and :func:`fixative.batch.runner.run_batch`
protects the images, writes each output, its provenance record and the portfolio index. The
downloaded files are those files, byte for byte, so a GUI run and the same command with the same
settings and seed give identical PNGs.

:class:`Workbench` is the app's one piece of shared state: the loaded models (loaded lazily, on the
first job, and kept while the settings that chose them stay the same), a lock that lets one
protection run at a time, the cancel flags of running jobs, the measured speed, and the temporary
folder every upload and result lives in (deleted at exit).
"""

from __future__ import annotations

import atexit
import logging
import re
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fixative.errors import FixativeError, safe_load_message
from fixative.files.images import IMAGE_SUFFIXES, MAX_PIXELS
from fixative.gui.explain import JobProgress, SpeedTable, metrics_words, plain_error
from fixative.presets import INTENSITIES, QUALITIES
from fixative.provenance.optout import DEFAULT_OPT_OUT, OPT_OUTS
from fixative.targets.modes import MODES

log = logging.getLogger("fixative.gui")

#: default upload limit per file, in bytes (also given to gradio's launch as max_file_size)
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024
#: where an immunization's target comes from (besides the user's own image)
IMMUNIZE_TARGETS = ("away", "texture", "gray")
#: images smaller than this (pixels) are not used to estimate speed: fixed costs dominate their time
MIN_SPEED_PIXELS = 250_000
#: the first encoders offered (any spec the command line takes works)
DEFAULT_ENCODERS = ("taef2",)
#: the style cloak's default: a target made by code on this computer (:func:`fixative.targets.patterns.restyle`; no
#: diffusion model, no download; ``fixative protect`` without --target or --style does the same)
BUILTIN_STYLE = "built-in"


# --- uploads ---------------------------------------------------------------------------------------


@dataclass
class UploadCheck:
    """The result of checking uploaded files: ``accepted`` paths, and (file name, problem) for the others."""

    accepted: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # (height, width) of accepted files

    @property
    def megapixels(self) -> float | None:
        """The accepted images' average size in megapixels (None when there are none)."""
        if not self.sizes:
            return None
        return sum(h * w for h, w in self.sizes.values()) / len(self.sizes) / 1e6

    def message(self) -> str:
        """Markdown: how many images are ready, and each refused file with its reason."""
        lines = []
        if self.accepted:
            n = len(self.accepted)
            lines.append(f"{n} image{'s' if n != 1 else ''} ready.")
        elif not self.problems:
            lines.append("Drop one image or many (PNG, JPEG, WebP, TIFF, BMP).")
        for name, problem in self.problems:
            lines.append(f"- **{name}** cannot be used: {problem}")
        return "\n".join(lines)


def _display_name(path: Path) -> str:
    return path.name


def average_megapixels(paths: list[str | Path] | None) -> float | None:
    """The images' average size in megapixels from their headers alone (no decoding; unreadable ones left out)."""
    from PIL import Image

    sizes = []
    for path in paths or []:
        try:
            with Image.open(path) as im:
                sizes.append(im.size[0] * im.size[1])
        except Exception:  # a bad file is reported by check_uploads, not here
            continue
    return sum(sizes) / len(sizes) / 1e6 if sizes else None


def check_uploads(paths: list[str | Path] | None, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                  max_pixels: int = MAX_PIXELS) -> UploadCheck:
    """Check uploaded files: present, not empty, at most ``max_bytes``, and a readable still image.

    Images are read the way the engine reads them (header checks before decoding, so an image over
    ``max_pixels`` is refused without being decoded). Never raises for a bad file: it is listed in
    ``problems`` with the reason.
    """
    from fixative.files.images import load_image

    check = UploadCheck()
    for raw in paths or []:
        path = Path(raw)
        name = _display_name(path)
        try:
            size = path.stat().st_size
        except OSError:
            check.problems.append((name, "the upload is missing (upload it again)"))
            continue
        if size == 0:
            check.problems.append((name, "the file is empty"))
            continue
        if size > max_bytes:
            check.problems.append((name, f"the file is {size / 1e6:.1f} MB, over the limit of "
                                         f"{max_bytes / 1e6:.0f} MB"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            check.problems.append((name, f"'{path.suffix or 'no extension'}' is not an image type this app "
                                         f"reads ({kinds})"))
            continue
        try:
            loaded = load_image(path, max_pixels=max_pixels)
        except FixativeError as exc:
            text = str(exc)
            check.problems.append((name, text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text))
            continue
        except Exception as exc:  # a decoder's own failure: still one line, never a traceback
            check.problems.append((name, f"it could not be read as an image ({type(exc).__name__}: {exc})"))
            continue
        check.accepted.append(path)
        check.sizes[path] = loaded.size
    return check


# --- settings -> the equivalent command line --------------------------------------------------------


@dataclass
class JobSettings:
    """What the artist chose. Strings are the command line's values.

    - ``mode``: ``cloak``, ``poison`` or ``immunize``.
    - ``target_image``: a target picture of the user's (any mode); else the mode's made target:
      ``style`` (cloak: :data:`BUILTIN_STYLE`, the default, made by code in seconds; or, made by a diffusion
      model, a named style, a description or ``auto``), ``anchor``/``concept`` (poison:
      the anchor concept is required), ``immunize`` (``away`` from the image itself, or the built-in
      ``texture``/``gray`` pattern).
    - ``intensity``: low/medium/high; ``quality``: fast/standard/best; ``steps``/``seconds``: override the
      quality's step and time limits (None = the preset's; a time limit makes runs non-reproducible).
    - ``posting``: where the image will be posted: a platform key of ``protect/platforms.toml``
      (``generic`` = any site: the CLI's default), or ``off`` for no robust layer (strongest on the
      untouched file, weakest after re-encoding).
    - ``encoders``: encoder specs (short names, files, folders, hub ids); ``seed``; ``device``;
      ``precision``; ``target_model``/``clip_model``: for made targets (None = the defaults).
    """

    mode: str = "cloak"
    target_image: str | None = None
    style: str = BUILTIN_STYLE
    concept: str = ""
    anchor: str = ""
    immunize: str = "away"
    intensity: str = "medium"
    quality: str = "standard"
    posting: str = "generic"
    steps: int | None = None
    seconds: float | None = None
    encoders: list[str] = field(default_factory=lambda: list(DEFAULT_ENCODERS))
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    target_model: str | None = None
    clip_model: str | None = None
    credentials: bool = True  # sign with the user's identity (when they have one), as the command line does
    opt_out: str = DEFAULT_OPT_OUT

    def problems(self) -> list[str]:
        """What is missing or wrong, in words (empty when the settings can run)."""
        out = []
        if self.mode not in MODES:
            out.append(f"unknown mode {self.mode!r}")
        if self.opt_out not in OPT_OUTS:
            out.append(f"unknown opt-out {self.opt_out!r}")
        if self.intensity not in INTENSITIES:
            out.append(f"unknown intensity {self.intensity!r}")
        if self.quality not in QUALITIES:
            out.append(f"unknown quality {self.quality!r}")
        from fixative.batch.platforms import platforms

        if self.posting != "off" and self.posting not in platforms():
            out.append(f"unknown platform {self.posting!r}")
        if not self.encoders:
            out.append("choose at least one encoder (Advanced options)")
        if self.target_image is None:
            if self.mode == "poison" and not self.anchor.strip():
                out.append("concept poison needs an anchor: what the images should teach a model instead "
                           "(e.g. 'cat'), or your own target image")
            if self.mode == "cloak" and not self.style.strip():
                out.append(f"style cloak needs a style ('{BUILTIN_STYLE}' needs no download), or your own target "
                           "image")
            if self.mode == "immunize" and self.immunize not in IMMUNIZE_TARGETS:
                out.append(f"unknown immunization target {self.immunize!r}")
        if self.steps is not None and self.steps < 1:
            out.append("steps must be at least 1")
        if self.seconds is not None and self.seconds <= 0:
            out.append("the time limit must be positive")
        return out


def parse_encoders(text: str) -> list[str]:
    """Encoder specs from a text field: separated by commas or new lines, blanks dropped."""
    return [part.strip() for part in re.split(r"[,\n]", text or "") if part.strip()]


def protect_argv(settings: JobSettings, inputs: list[Path], out: Path, *, models_dir: Path | None = None,
                 max_pixels: int = MAX_PIXELS, target_cache: Path | None = None) -> list[str]:
    """The ``fixative protect`` arguments (without ``protect``) that do what ``settings`` ask.

    Values are attached with ``=`` so that text starting with ``-`` is never read as an option.
    """
    argv = [str(p) for p in inputs] + [f"--out={out}", f"--mode={settings.mode}",
                                       f"--intensity={settings.intensity}", f"--quality={settings.quality}"]
    argv += ["--robust=off"] if settings.posting == "off" else ["--robust=web", f"--for={settings.posting}"]
    if settings.steps is not None:
        argv.append(f"--steps={int(settings.steps)}")
    if settings.seconds is not None:
        argv.append(f"--seconds={float(settings.seconds):g}")
    for spec in settings.encoders:
        argv.append(f"--encoder={spec}")
    argv += [f"--seed={int(settings.seed)}", f"--device={settings.device}", f"--precision={settings.precision}",
             f"--max-pixels={int(max_pixels)}", "--format=png", "--quiet", f"--opt-out={settings.opt_out}"]
    if not settings.credentials:
        argv.append("--no-credentials")
    if models_dir is not None:
        argv.append(f"--models-dir={models_dir}")
    made = False
    if settings.target_image:
        argv.append(f"--target={settings.target_image}")
    elif settings.mode == "cloak" and settings.style.strip().lower() != BUILTIN_STYLE:
        argv.append(f"--style={settings.style.strip()}")
        made = True
    elif settings.mode == "poison":
        argv.append(f"--anchor={settings.anchor.strip()}")
        if settings.concept.strip():
            argv.append(f"--concept={settings.concept.strip()}")
        made = True
    elif settings.immunize != "away":
        argv.append(f"--pattern={settings.immunize}")
        made = True
    if made:
        if settings.target_model and settings.mode != "immunize":
            argv.append(f"--target-model={settings.target_model}")
        if settings.clip_model and settings.mode != "immunize":
            argv.append(f"--clip-model={settings.clip_model}")
        if target_cache is not None:
            argv.append(f"--target-cache={target_cache}")
    return argv


def command_line(argv: list[str]) -> str:
    """``fixative protect ...`` for display, with full paths: it runs as shown (the app's copies of the uploads
    and its output folder, which last while the app runs; put your own files' paths in their place to run it
    later). The app's target cache and ``--quiet`` are left out."""
    words = ["fixative", "protect"]
    for arg in argv:
        if arg.startswith("--target-cache=") or arg == "--quiet":
            continue
        words.append(arg)
    return shlex.join(words)


# --- the app's shared state -------------------------------------------------------------------------


@dataclass
class ImageResult:
    """One protected image and what the app shows about it (all paths are PNG files in the job folder)."""

    name: str
    output: Path
    record_file: Path
    record: dict
    before: Path
    difference: Path
    difference_caption: str
    model_original: Path | None
    model_protected: Path | None
    model_note: str
    metrics: str
    skipped: bool = False


@dataclass
class JobResult:
    """What a job gave: ``images`` (protected), ``failures`` ((name, reason)), how many were ``cancelled``,
    the ``zip`` of outputs + records + index, the equivalent ``command`` and a ``message`` in Markdown."""

    images: list[ImageResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    cancelled: int = 0
    zip: Path | None = None
    command: str = ""
    message: str = ""
    folder: Path | None = None
    signer: str | None = None  # whose Content Credentials the images carry (None: unsigned)
    unsigned_reason: str | None = None

    @property
    def outputs(self) -> list[Path]:
        return [image.output for image in self.images]


class Workbench:
    """The app's shared state; one per app (see the module docs).

    - ``models_dir``: the model store's folder (as ``--models-dir``); ``max_pixels``, ``max_bytes``:
      the limits uploads are checked against.
    - ``root``: the temporary folder for uploads and results (made here unless given; deleted at exit
      when made here, or by :meth:`cleanup`).
    """

    def __init__(self, *, models_dir: Path | None = None, max_pixels: int = MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_FILE_BYTES, root: Path | None = None,
                 target_cache: Path | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser().resolve() if models_dir else None
        self.max_pixels, self.max_bytes = max_pixels, max_bytes
        self.own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fixative-gui-"))
        self.root.mkdir(parents=True, exist_ok=True)
        if self.own_root:
            atexit.register(self.cleanup)
        # made targets are re-rendered copies of the artwork: kept in the temporary folder (deleted at exit)
        # unless the user chose a cache
        self.target_cache = Path(target_cache).expanduser() if target_cache else self.root / "targets"
        self.speed = SpeedTable()
        self.lock = threading.Lock()  # one protection (one GPU job) at a time, whoever asks
        self._protector = None
        self._protector_key: tuple | None = None
        self._maker = None
        self._maker_key: tuple | None = None
        self._cancels: dict[str, threading.Event] = {}
        self._cancel_guard = threading.Lock()
        self._jobs = 0
        self.models_status = "Models: not loaded yet (they load when the first job starts)."

    # --- temporary files ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete the temporary folder and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)

    def new_job_folder(self) -> Path:
        self._jobs += 1
        folder = self.root / "jobs" / f"{self._jobs:04d}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    # --- cancelling -------------------------------------------------------------------------------

    def new_token(self) -> str:
        """A fresh job token (the app makes one per click, before the job is queued)."""
        token = uuid.uuid4().hex
        with self._cancel_guard:
            self._cancels[token] = threading.Event()
        return token

    def cancel(self, token: str | None) -> bool:
        """Ask the job with ``token`` to stop (a queued job stops before it starts). True if it was known."""
        with self._cancel_guard:
            event = self._cancels.get(token or "")
        if event is None:
            return False
        event.set()
        return True

    def cancel_event(self, token: str | None) -> threading.Event:
        """The cancel flag of the job with ``token`` (a fresh, unregistered one without a token)."""
        if not token:
            return threading.Event()
        with self._cancel_guard:
            return self._cancels.setdefault(token, threading.Event())

    def forget(self, token: str | None) -> None:
        with self._cancel_guard:
            self._cancels.pop(token or "", None)

    # --- models -------------------------------------------------------------------------------------

    def protector_for(self, opts, report: Callable[[str], None] | None = None):
        """The loaded :class:`~fixative.core.engine.Protector` for these batch options (loaded now if needed)."""
        key = (tuple(opts.encoders), opts.lpips_net, str(opts.models_dir), opts.device)
        if self._protector is not None and self._protector_key == key:
            return self._protector
        from fixative.models.loading import load_protector

        self._protector = None  # free the previous models first
        what = f"{', '.join(opts.encoders)} and LPIPS ({opts.lpips_net}) on {opts.device}"
        self.models_status = f"Models: loading {what}..."
        if report:
            report(self.models_status)
        started = time.perf_counter()
        try:
            protector = load_protector(opts.encoders, lpips_net=opts.lpips_net, models_dir=opts.models_dir,
                                             device=opts.device)
        except Exception:
            self.models_status = "Models: not loaded (the last attempt failed; see the message)."
            raise
        self._protector, self._protector_key = protector, key
        self.models_status = (f"Models: {', '.join(opts.encoders)} and LPIPS loaded on {protector.device} "
                              f"in {time.perf_counter() - started:.1f} s.")
        if report:
            report(self.models_status)
        return protector

    def maker_for(self, args):
        """The :class:`~fixative.targets.made.TargetMaker` for a parsed command line with a made target (kept)."""
        from fixative.targets.made import GenerationSettings, TargetMaker

        key = (args.target_model, args.device, args.precision, str(args.models_dir), str(args.target_cache),
               args.clip_model)
        if self._maker is None or self._maker_key != key:
            self._maker = TargetMaker(args.target_model, device=args.device, precision=args.precision,
                                      models_dir=args.models_dir, cache_dir=args.target_cache,
                                      clip_model=args.clip_model, settings=GenerationSettings(),
                                      progress=False)
            self._maker_key = key
        return self._maker

    def device_name(self, device: str) -> str:
        """The device ``device`` ("auto", "cpu"...) resolves to here ("cpu", "cuda"...)."""
        from fixative.core.devices import resolve_device

        try:
            return str(resolve_device(device))
        except FixativeError:
            return device


# --- running a job ----------------------------------------------------------------------------------


def _copy_inputs(files: list[Path], folder: Path) -> tuple[list[Path], list[str]]:
    """Copy the uploads into ``folder/<k>/<name>`` (the user's originals are never touched)."""
    copies, names = [], []
    for k, path in enumerate(files, start=1):
        dest = folder / f"{k:03d}" / path.name
        dest.parent.mkdir(parents=True)
        shutil.copyfile(path, dest)
        copies.append(dest)
        names.append(path.name)
    return copies, names


def _image_result(bench: Workbench, protector, outcome, name: str, views: Path) -> ImageResult:
    from fixative.gui.views import difference_map, load_pair, model_view, original_preview
    from fixative.provenance.manifest import read_json

    output, record_file = Path(outcome.output), Path(outcome.record)
    record = read_json(record_file) or {}
    original, protected = load_pair(Path(outcome.input), output, bench.max_pixels)
    stem = f"{len(list(views.glob('*.before.png'))):03d}-{output.stem}"
    before = original_preview(original, views / f"{stem}.before.png")
    diff = difference_map(original.rgb, protected.rgb, views / f"{stem}.difference.png")
    view = model_view(protector.encoders, original.rgb, protected.rgb, views, stem,
                      cell=int(record.get("settings", {}).get("tile_size", 1024)))
    return ImageResult(name, output, record_file, record, before, diff.path, diff.caption(), view.original,
                       view.protected, view.note, metrics_words(record), skipped=outcome.status == "skipped")


def run_job(bench: Workbench, files: list[str | Path] | None, settings: JobSettings, *,
            progress: JobProgress | None = None, cancel: threading.Event | None = None) -> JobResult:
    """Protect ``files`` with ``settings``; never raises for bad input (the result's message says what happened).

    ``progress`` is updated as the job goes (phase, image, step); setting ``cancel`` stops it at the
    next step (the image in progress is not saved; finished ones are kept and offered).
    """
    from fixative.batch.runner import BatchHooks, run_batch
    from fixative.cli.main import parse_protect_args, protect_options

    progress = progress or JobProgress()
    cancel = cancel or threading.Event()
    result = JobResult()

    def fail(message: str) -> JobResult:
        progress.phase, progress.message = "failed", message
        result.message = message
        return result

    problems = settings.problems()
    if problems:
        return fail("Cannot start: " + "; ".join(problems) + ".")
    check = check_uploads(files, max_bytes=bench.max_bytes, max_pixels=bench.max_pixels)
    result.failures += check.problems
    if not check.accepted:
        return fail(check.message() if check.problems else "Drop at least one image first.")
    if settings.target_image:
        tcheck = check_uploads([settings.target_image], max_bytes=bench.max_bytes, max_pixels=bench.max_pixels)
        if not tcheck.accepted:
            name, problem = tcheck.problems[0]
            return fail(f"The target image {name} cannot be used: {problem}")

    progress.phase, progress.count, progress.message = "waiting", len(check.accepted), "Waiting for the engine..."
    with bench.lock:  # one protection at a time, even if the web server lets two through
        if cancel.is_set():
            progress.phase, progress.message = "cancelled", "Cancelled before it started."
            result.cancelled = len(check.accepted)
            result.message = progress.message
            return result
        folder = bench.new_job_folder()
        inputs, names = _copy_inputs(check.accepted, folder / "in")
        out = folder / "out"
        argv = protect_argv(settings, inputs, out, models_dir=bench.models_dir, max_pixels=bench.max_pixels,
                            target_cache=bench.target_cache)
        result.command, result.folder = command_line(argv), folder
        name_of = {str(p): n for p, n in zip(inputs, names, strict=True)}
        try:
            args = parse_protect_args(argv)
            maker = bench.maker_for(args) if any(a.startswith(("--style=", "--anchor=", "--pattern="))
                                                 for a in argv) else None
            progress.phase, progress.message = "preparing", "Preparing (reading the images, choosing the target)..."
            opts = protect_options(args, target_maker=maker)

            def report(text: str) -> None:
                progress.phase, progress.message = "loading", text

            protector = bench.protector_for(opts, report)

            started: dict[str, float] = {}
            sizes = check.sizes
            size_of = {str(copy): sizes.get(orig) for copy, orig in zip(inputs, check.accepted, strict=True)}

            def on_image(index: int, count: int, job) -> bool:
                started["image"] = time.perf_counter()
                progress.phase, progress.index, progress.count = "preparing", index, count
                progress.name = name_of.get(str(job.input), "")
                progress.fraction, progress.step, progress.lpips = 0.0, 0, None
                progress.message = f"Image {index + 1} of {count}: {progress.name} (reading it, making its target)..."
                return not cancel.is_set()

            def on_target_step(job, done: int, total: int) -> bool:
                progress.message = (f"Image {progress.index + 1} of {progress.count}: {progress.name} (making its "
                                    f"target: step {done} of {total})...")
                return not cancel.is_set()

            def on_step(job, info) -> bool:
                progress.phase = "protecting"
                progress.step, progress.steps = info.step, info.max_steps
                progress.tile, progress.tiles = info.tile, info.tiles
                progress.fraction = info.overall
                progress.lpips = info.lpips
                progress.message = f"Protecting image {progress.index + 1} of {progress.count}: {progress.name}"
                progress.eta = _eta(bench.speed, opts, str(protector.device), info.overall,
                                    time.perf_counter() - started.get("image", time.perf_counter()),
                                    [size_of.get(str(j)) for j in remaining(progress.index)])
                return not cancel.is_set()

            def remaining(index: int) -> list[Path]:
                return inputs[index + 1:]

            summary = run_batch(opts, BatchHooks(protector=protector, on_image=on_image, on_target_step=on_target_step,
                                                 on_step=on_step))
            progress.phase, progress.message = "finishing", "Preparing the comparison and the downloads..."
            views = folder / "views"
            device = str(protector.device)
            for outcome in summary.outcomes:
                name = name_of.get(outcome.input, Path(outcome.input).name)
                if outcome.status in ("done", "skipped"):
                    image = _image_result(bench, protector, outcome, name, views)
                    result.images.append(image)
                    m = image.record.get("metrics", {})
                    h, w = image.record.get("input", {}).get("size", [0, 0])
                    if h * w >= MIN_SPEED_PIXELS and outcome.status == "done":
                        bench.speed.add(opts.encoders, device, int(m.get("steps", 0)), float(m.get("seconds", 0)),
                                        h * w / 1e6, "from the images you protected")
                elif outcome.status == "cancelled":
                    result.cancelled += 1
                else:
                    result.failures.append((name, outcome.reason or "failed"))
        except FixativeError as exc:
            return fail(plain_error(exc))
        except MemoryError:
            return fail("Could not protect: out of memory. Try fewer or smaller images, or another device.")
        except Exception as exc:  # the app keeps working whatever happens in a job
            log.exception("job failed")
            return fail(f"Could not protect: unexpected error ({type(exc).__name__}: {safe_load_message(exc)}).")

    if result.images:
        from fixative.gui.views import portfolio_zip

        signed = [im.record.get("credentials") for im in result.images if im.record.get("credentials")]
        result.signer = signed[0]["signer"] if signed else None
        result.unsigned_reason = None if signed else _unsigned_reason(settings)
        result.zip = portfolio_zip(out, result.outputs, folder / "download" / "fixative-protected.zip",
                                   certificate=opts.identity.certificate_pem if signed else None)
    result.message = _summary_message(result)
    progress.phase = "cancelled" if result.cancelled else "done"
    progress.index = len(result.images)
    progress.message = result.message.splitlines()[0]
    return result


def _eta(speed: SpeedTable, opts, device: str, done: float, elapsed: float,
         later: list[tuple[int, int] | None]) -> float | None:
    """Seconds left in a job: the current image's rest (from its own pace so far) plus the later images'
    expected times (from the measured seconds per step per megapixel, else the current image's pace)."""
    if done <= 0.02 or elapsed <= 0:
        return None
    this_total = elapsed / done
    left = this_total - elapsed
    for size in later:
        mp = size[0] * size[1] / 1e6 if size else None
        expected = speed.estimate(opts.encoders, device, opts.steps, opts.seconds, mp) if mp else None
        left += expected if expected is not None else this_total
    return max(0.0, left)


def _summary_message(result: JobResult) -> str:
    n = len(result.images)
    lines = []
    if n:
        lines.append(f"Protected {n} image{'s' if n != 1 else ''}.")
    if result.cancelled:
        lines.append(f"Cancelled: {result.cancelled} image{'s' if result.cancelled != 1 else ''} not done "
                     "(nothing half-done was saved).")
    if not n and not result.cancelled:
        lines.append("No image was protected.")
    if result.signer:
        lines.append(f"Signed with Content Credentials by **{result.signer}** (the zip holds your public "
                     "certificate, `signer-certificate.pem`, for whoever checks the files).")
    elif result.unsigned_reason:
        lines.append(result.unsigned_reason)
    for name, reason in result.failures:
        lines.append(f"- **{name}** was not protected: {reason}")
    return "\n".join(lines)


#: the opt-out choices in the app's words (``--opt-out`` values)
OPT_OUT_LABELS = {
    "ai-training": "Do not train AI on it",
    "gen-ai": "Do not train generative AI on it",
    "all": "No AI training, data mining or AI use",
    "none": "State no preference",
}


def credentials_note() -> str:
    """The line under "Add my Content Credentials": who signs, or how to get an identity."""
    from fixative.provenance.identity import find_identity

    try:
        identity = find_identity()
    except FixativeError as exc:
        return f"Your signing identity cannot be used: {exc}"
    if identity is None:
        return ("You have no signing identity yet: run `fixative identity create --name \"Your Name\"` once. "
                "The do-not-train statement is written either way.")
    return f"Signs each image as {identity.name}, and states your choice below in a way crawlers can read."


def _unsigned_reason(settings: JobSettings) -> str:
    """Why a job's images carry no Content Credentials, in words."""
    if not settings.credentials:
        return "Not signed: Content Credentials were switched off (the do-not-train statement is still in the files)."
    return ("Not signed: you have no signing identity yet. Make one once with `fixative identity create --name "
            "\"Your Name\"`; from then on your images are signed (the do-not-train statement is in them already).")


def measure_speed(bench: Workbench, settings: JobSettings, *, size: int = 512, steps: int = 6,
                  progress: JobProgress | None = None) -> str:
    """Time a few search steps on a ``size`` x ``size`` test image with the chosen encoders and device.

    Loads the models if needed (as a first job would), runs ``steps`` steps and records seconds per
    step per megapixel from steps 2..``steps`` (the first includes warm-up). Returns a sentence.
    """
    import torch
    import torch.nn.functional as F

    from fixative.cli.main import parse_protect_args, protect_options
    from fixative.core.budgets import VisibilityLimit
    from fixative.core.optimizer import OptimizerSettings

    progress = progress or JobProgress()
    quick = JobSettings(mode="immunize", encoders=settings.encoders, device=settings.device,
                        precision=settings.precision, seed=0)
    argv = protect_argv(quick, [bench.root / "speed-test.png"], bench.root / "speed-test",
                        models_dir=bench.models_dir)
    try:
        with bench.lock:
            opts = protect_options(parse_protect_args(argv))

            def report(text: str) -> None:
                progress.phase, progress.message = "loading", text

            protector = bench.protector_for(opts, report)
            progress.phase, progress.message = "protecting", f"Measuring speed: {steps} steps on {size}x{size} px..."
            g = torch.Generator().manual_seed(0)
            image = F.interpolate(torch.rand(1, 3, size // 16, size // 16, generator=g), size=(size, size),
                                  mode="bicubic", align_corners=False).clamp(0, 1)
            times: dict[int, float] = {}

            def on_step(info) -> None:
                times[info.step] = info.elapsed
                progress.step, progress.steps, progress.fraction = info.step, steps, info.step / steps

            protector.protect(image, objective="away", budget=VisibilityLimit(), callback=on_step,
                              settings=OptimizerSettings(steps=steps, patience=0, precision=opts.precision))
    except FixativeError as exc:
        progress.phase, progress.message = "failed", f"Could not measure: {exc}"
        return progress.message
    last = max(times)
    if last < 2:
        return "Could not measure: the search stopped after one step."
    seconds = times[last] - times[1]
    device = str(protector.device)
    mp = size * size / 1e6
    bench.speed.add(opts.encoders, device, last - 1, seconds, mp, f"measured on a {size}x{size} test image")
    progress.phase = "done"
    progress.message = (f"Measured {seconds / (last - 1):.3g} s per step on a {size}x{size} px image with "
                        f"{', '.join(opts.encoders)} on {device}.")
    return progress.message
