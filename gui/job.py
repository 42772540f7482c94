"""Running one protection job for the app: check the uploads, copy them, run the batch with hooks that
update the progress and honour cancel, and gather what it made.

A job goes through the same path as ``fixative protect``: :func:`fixative.gui.form.job_options` builds the
typed :class:`~fixative.options.ProtectOptions` from the form (the command line builds the same from its
flags), and :func:`fixative.batch.runner.run_batch` protects the images, writes each output, its provenance
record and the portfolio index, with the models from the app's one
:class:`~fixative.models.loading.ProtectorCache`. The downloaded files are those files, byte for byte, so a
GUI run and the equivalent command it shows (``options.to_command_line()``) give identical PNGs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fixative.errors import ConfigError, FixativeError, safe_load_message
from fixative.gui.explain import JobProgress, SpeedTable, plain_error
from fixative.gui.form import JobSettings, command_line, control_message, job_options
from fixative.gui.results import JobResult, finish, image_result
from fixative.gui.uploads import UploadCheck, check_uploads
from fixative.gui.workbench import Workbench
from fixative.options import ProtectOptions

log = logging.getLogger("fixative.gui")

#: images smaller than this (pixels) are not used to estimate speed: fixed costs dominate their time
MIN_SPEED_PIXELS = 250_000


def run_job(bench: Workbench, files: list[str | Path] | None, settings: JobSettings, *,
            progress: JobProgress | None = None, cancel: threading.Event | None = None) -> JobResult:
    """Protect ``files`` with ``settings``; never raises for bad input (the result's message says what happened).

    ``progress`` is updated as the job goes (phase, image, step); setting ``cancel`` stops it at the
    next step (the image in progress is not saved; finished ones are kept and offered).
    """
    progress = progress or JobProgress()
    cancel = cancel or threading.Event()
    result = JobResult()

    def fail(message: str) -> JobResult:
        progress.phase, progress.message = "failed", message
        result.message = message
        return result

    check, refused = _refusal(bench, files, settings)
    if check is not None:
        result.failures += check.problems
    if refused:
        return fail(refused)
    progress.phase, progress.count, progress.message = "waiting", len(check.accepted), "Waiting for the engine..."
    with bench.lock:  # one protection at a time, even if the web server lets two through
        if cancel.is_set():
            progress.phase, progress.message = "cancelled", "Cancelled before it started."
            result.cancelled = len(check.accepted)
            result.message = progress.message
            return result
        try:
            out, certificate = _protect(bench, settings, check, progress, cancel, result)
        except ConfigError as exc:  # an option the form set: named by its control
            return fail(plain_error(ConfigError(control_message(exc), field=exc.field) if exc.field else exc))
        except FixativeError as exc:
            return fail(plain_error(exc))
        except MemoryError:
            return fail("Could not protect: out of memory. Try fewer or smaller images, or another device.")
        except Exception as exc:  # the app keeps working whatever happens in a job
            log.exception("job failed")
            return fail(f"Could not protect: unexpected error ({type(exc).__name__}: {safe_load_message(exc)}).")
    finish(result, settings, out, result.folder, certificate)
    progress.phase = "cancelled" if result.cancelled else "done"
    progress.index = len(result.images)
    progress.message = result.message.splitlines()[0]
    return result


def _refusal(bench: Workbench, files: list[str | Path] | None,
             settings: JobSettings) -> tuple[UploadCheck | None, str | None]:
    """(the uploads' check, why the job cannot start or None): the settings' problems, no usable image, or a
    target image that cannot be used."""
    problems = settings.problems()
    if problems:
        return None, "Cannot start: " + "; ".join(problems) + "."
    check = check_uploads(files, max_bytes=bench.max_bytes, max_pixels=bench.max_pixels)
    if not check.accepted:
        return check, check.message() if check.problems else "Drop at least one image first."
    if settings.target_image:
        tcheck = check_uploads([settings.target_image], max_bytes=bench.max_bytes, max_pixels=bench.max_pixels)
        if not tcheck.accepted:
            name, problem = tcheck.problems[0]
            return check, f"The target image {name} cannot be used: {problem}"
    return check, None


def _protect(bench: Workbench, settings: JobSettings, check: UploadCheck, progress: JobProgress,
             cancel: threading.Event, result: JobResult) -> tuple[Path, str | None]:
    """Copy the uploads into a new job folder, run the batch on them, and add its outcomes to ``result``.

    Returns (the output folder, the signer's certificate or None). Raises what the library raises.
    """
    from fixative.batch.runner import run_batch

    folder = bench.new_job_folder()
    inputs, names = _copy_inputs(check.accepted, folder / "in")
    out = folder / "out"
    result.folder = folder
    options = job_options(settings, inputs, out, models_dir=bench.models_dir, max_pixels=bench.max_pixels,
                          target_cache=bench.target_cache)
    if options.target.made is not None:  # a style, an anchor or a pattern: the app's kept maker makes it
        options = replace(options, target=replace(options.target, maker=bench.maker_for(options)))
    result.command = command_line(options)
    progress.phase, progress.message = "preparing", "Preparing (reading the images, choosing the target)..."

    def report(text: str) -> None:
        progress.phase, progress.message = "loading", text

    protector = bench.protector_for(options.models, report)
    watch = _Watch(bench.speed, progress, cancel, options, str(protector.device),
                   names={str(p): n for p, n in zip(inputs, names, strict=True)},
                   sizes=[check.sizes.get(orig) for orig in check.accepted])
    summary = run_batch(options, watch.hooks(protector), cache=bench.models)
    progress.phase, progress.message = "finishing", "Preparing the comparison and the downloads..."
    _gather(bench, protector, options, summary, watch.names, folder / "views", result)
    identity = options.output.identity
    return out, identity.certificate_pem if identity is not None else None


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


@dataclass
class _Watch:
    """One job's batch hooks: they move ``progress`` on (phase, image, step, time left) and stop at ``cancel``.

    ``names``: each input copy's path -> the name the user dropped; ``sizes``: each input's (height, width).
    """

    speed: SpeedTable
    progress: JobProgress
    cancel: threading.Event
    options: ProtectOptions
    device: str
    names: dict[str, str] = field(default_factory=dict)
    sizes: list[tuple[int, int] | None] = field(default_factory=list)
    started: float = 0.0

    def hooks(self, protector):
        from fixative.batch.runner import BatchHooks

        return BatchHooks(protector=protector, on_image=self.on_image, on_target_step=self.on_target_step,
                          on_step=self.on_step)

    def on_image(self, index: int, count: int, job) -> bool:
        p = self.progress
        self.started = time.perf_counter()
        p.phase, p.index, p.count = "preparing", index, count
        p.name = self.names.get(str(job.input), "")
        p.fraction, p.step, p.lpips = 0.0, 0, None
        p.message = f"Image {index + 1} of {count}: {p.name} (reading it, making its target)..."
        return not self.cancel.is_set()

    def on_target_step(self, job, done: int, total: int) -> bool:
        p = self.progress
        p.message = f"Image {p.index + 1} of {p.count}: {p.name} (making its target: step {done} of {total})..."
        return not self.cancel.is_set()

    def on_step(self, job, info) -> bool:
        p = self.progress
        p.phase = "protecting"
        p.step, p.steps = info.step, info.max_steps
        p.tile, p.tiles = info.tile, info.tiles
        p.fraction = info.overall
        p.lpips = info.lpips
        p.message = f"Protecting image {p.index + 1} of {p.count}: {p.name}"
        p.eta = _eta(self.speed, self.options, self.device, info.overall, time.perf_counter() - self.started,
                     self.sizes[p.index + 1:])
        return not self.cancel.is_set()


def _eta(speed: SpeedTable, options: ProtectOptions, device: str, done: float, elapsed: float,
         later: list[tuple[int, int] | None]) -> float | None:
    """Seconds left in a job: the current image's rest (from its own pace so far) plus the later images'
    expected times (from the measured seconds per step per megapixel, else the current image's pace)."""
    if done <= 0.02 or elapsed <= 0:
        return None
    this_total = elapsed / done
    left = this_total - elapsed
    for size in later:
        mp = size[0] * size[1] / 1e6 if size else None
        expected = speed.estimate(list(options.models.encoders), device, options.search.steps, options.search.seconds,
                                  mp) if mp else None
        left += expected if expected is not None else this_total
    return max(0.0, left)


def _gather(bench: Workbench, protector, options: ProtectOptions, summary, names: dict[str, str], views: Path,
            result: JobResult) -> None:
    """Add the batch's outcomes to ``result`` (done and skipped images with their pictures, the cancelled
    count, failures by name) and the speed of each done image of at least :data:`MIN_SPEED_PIXELS`."""
    device = str(protector.device)
    for outcome in summary.outcomes:
        name = names.get(outcome.input, Path(outcome.input).name)
        if outcome.status in ("done", "skipped"):
            image = image_result(protector, outcome, name, views, bench.max_pixels)
            result.images.append(image)
            m = image.record.get("metrics", {})
            h, w = image.record.get("input", {}).get("size", [0, 0])
            if h * w >= MIN_SPEED_PIXELS and outcome.status == "done":
                bench.speed.add(list(options.models.encoders), device, int(m.get("steps", 0)),
                                float(m.get("seconds", 0)), h * w / 1e6, "from the images you protected")
        elif outcome.status == "cancelled":
            result.cancelled += 1
        else:
            result.failures.append((name, outcome.reason or "failed"))
