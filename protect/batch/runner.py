"""Protecting a portfolio: :func:`run_batch` takes :class:`~fixative.options.ProtectOptions` and protects
every image of its inputs that is not done yet, one bad file never stopping the others.

The parts, each in its module of :mod:`fixative.batch`: finding the images (``inputs``), output names,
the output folder and resuming (``outputs``), this process's share (``shards``: ``output.shard=(i, n)``,
or ``accelerate launch`` with ``WORLD_SIZE`` > 1, split round-robin so every image is done exactly
once), the recorded and hashed settings (``settings``), a made target's factories (``targets``), one
image's work (``image``) and what the run did (``summary``).

Models come from a :class:`~fixative.models.loading.ProtectorCache` keyed by the options' frozen
:class:`~fixative.models.loading.ModelSpec` (an app passes its own, shared with its other work); a
``BatchHooks.protector`` given wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixative.batch.image import Cancelled, ImageRunner
from fixative.batch.inputs import collect_inputs
from fixative.batch.outputs import Job, plan_outputs, prepare_output_folder
from fixative.batch.settings import run_settings
from fixative.batch.shards import this_process
from fixative.batch.summary import BatchSummary, Outcome, describe
from fixative.batch.targets import made_targets
from fixative.errors import ConfigError, FixativeError, InputImageError, ModelNotFoundError, safe_load_message
from fixative.files.images import load_image
from fixative.options import ProtectOptions
from fixative.provenance.manifest import encoder_entry, lpips_entry, settings_hash, sha256_file
from fixative.targets.modes import TargetRequest, target_request

log = logging.getLogger("fixative")


@dataclass
class BatchHooks:
    """For an app that runs the batch in its own process (the GUI); the command line passes none.

    - ``protector``: an already loaded :class:`~fixative.core.engine.Protector` to use instead of loading
      one. It must come from the options' models (the caller keeps it between runs, so models load once);
      an app sharing a :class:`~fixative.models.loading.ProtectorCache` passes that to :func:`run_batch`.
    - ``on_image(index, count, job)``: called before each image (``index`` from 0); return False to
      stop the run there.
    - ``on_target_step(job, done, total)``: called after every denoising step while the image's made
      target (a style or an anchor) is generated; return False to cancel there, mid-generation.
    - ``on_step(job, info)``: called after every search step with a :class:`~fixative.core.engine.TileProgress`;
      return False to cancel: that image is not saved, and the run stops.

    Images a stopped run did not do are listed with status ``cancelled``; nothing half-done is written.
    """

    protector: Any = None
    on_image: Callable[[int, int, Job], bool | None] | None = None
    on_target_step: Callable[[Job, int, int], bool | None] | None = None
    on_step: Callable[[Job, Any], bool | None] | None = None


class Interrupted(KeyboardInterrupt):
    """Ctrl+C (or SIGTERM, see :mod:`fixative.cli.main`) during :func:`run_batch`; its message says what was saved."""


def _checked_target(opts: ProtectOptions) -> tuple[TargetRequest, dict]:
    """The run's target request (with its made targets' factories), its image read once up front."""
    made = made_targets(opts)
    spec = opts.target
    request = target_request(spec.mode, spec.objective, spec.image, made.options, kinds=made.factories)
    if request.image is None:
        return request, made.factories
    if not request.image.is_file():
        raise ConfigError(f"target.image {request.image}: no such file", field="target.image")
    try:  # once, up front: a target that cannot be read would fail every image
        load_image(request.image)
    except InputImageError as exc:
        raise ConfigError(f"target.image {exc}", field="target.image") from exc
    request = TargetRequest(request.mode, request.objective, request.kind, request.image,
                            sha256_file(request.image), request.options)
    return request, made.factories


def run_batch(opts: ProtectOptions, hooks: BatchHooks | None = None, *, cache=None) -> BatchSummary:
    """Protect every image of ``opts.inputs`` that is not done yet; see the module docs.

    ``hooks``: progress, cancelling and a preloaded model for an app embedding the batch (see
    :class:`BatchHooks`); ``cache``: the :class:`~fixative.models.loading.ProtectorCache` models come from
    (default: one for this run).
    """
    from fixative.models.loading import ProtectorCache
    from fixative.models.store import ModelStore

    opts.check()  # everything that can be said about the options, before any model loads
    hooks = hooks or BatchHooks()
    proc = this_process(opts)
    request, factories = _checked_target(opts)
    store = ModelStore(opts.models.models_dir)
    models = [encoder_entry(spec, store) for spec in opts.models.encoders]
    lpips = lpips_entry(opts.models.lpips_net, store)
    settings = run_settings(opts, request, models, lpips)
    fixed = {"models": models, "lpips": lpips, "run_settings": settings, "settings_hash": settings_hash(settings)}

    items, failures, ignored = collect_inputs(list(opts.inputs), opts.output.recursive)
    if not items:  # nothing can be done: say why once, and leave no empty output folder behind
        raise ConfigError("nothing to protect: " + "; ".join(f"{f.input}: {f.reason}" for f in failures),
                          field="inputs")
    if request.kind == "image" and all(_same_file(item.path, request) for item in items):
        # checked before the output folder is made: a run that can do nothing leaves nothing behind
        raise ConfigError(f"target.image {request.image} is the image to protect; moving an image towards itself "
                          "protects nothing: choose another target", field="target.image")
    prepare_output_folder(opts.out)
    jobs = plan_outputs(items, opts.out, opts.output.format.suffix)
    mine = jobs[proc.index :: proc.count]
    outcomes: list[Outcome] = failures if proc.index == 0 else []
    for failure in outcomes:
        log.error("%s: %s", failure.input, failure.reason)
    runner = ImageRunner(opts, proc, request, fixed, hooks, factories, (cache or ProtectorCache()).get)
    if proc.label:
        log.info("shard %s: %d of %d images", proc.label, len(mine), len(jobs))
    try:
        _run_jobs(mine, runner, outcomes, not opts.quiet and proc.main)
    except KeyboardInterrupt as exc:
        raise Interrupted(_interrupted(outcomes, mine, opts.out)) from exc
    return _gathered(BatchSummary(opts.out, outcomes, ignored, proc.label, fixed["settings_hash"]), proc)


def _gathered(summary: BatchSummary, proc) -> BatchSummary:
    """Under accelerate, the main process reports for all (the others' summaries say not to report)."""
    if proc.state is None:
        return summary
    from accelerate.utils import gather_object

    proc.state.wait_for_everyone()
    gathered = gather_object([summary.outcomes])
    # the run's last collective: close the process group together, so that no process exits while another
    # still holds a connection to it (gloo aborts a process whose peer went away: SIGABRT at exit)
    proc.state.wait_for_everyone()
    proc.state.destroy_process_group()
    if proc.main:
        summary.outcomes = [o for part in gathered for o in part]
        summary.shard = None
    else:
        summary.report = False
    return summary


def _failure(job: Job, exc: BaseException) -> Outcome:
    """The outcome of an image whose work raised ``exc`` (logged here)."""
    if isinstance(exc, FixativeError):
        reason = _reason(exc, job.input)
    elif isinstance(exc, MemoryError):
        reason = "out of memory (try a smaller search.tile_size)"
    elif "OutOfMemory" in type(exc).__name__:
        reason = "out of GPU memory (try a smaller search.tile_size)"
    else:
        reason = f"unexpected error: {type(exc).__name__}: {safe_load_message(exc)}"
    log.error("%s: %s", job.input, reason)
    if not isinstance(exc, FixativeError | MemoryError):
        log.debug("details", exc_info=True)
    return Outcome(str(job.input), "failed", reason=reason)


def _run_jobs(mine: list[Job], runner: ImageRunner, outcomes: list[Outcome], show: bool) -> None:
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
                    log.info("%s", describe(outcome))
                else:
                    log.info("%s: already done with these settings, skipped", job.input)
            except Cancelled:
                outcomes += [Outcome(str(j.input), "cancelled", reason="cancelled before it was done")
                             for j in mine[number:]]
                log.warning("cancelled: %d image(s) not done", len(mine) - number)
                break
            except ModelNotFoundError:
                raise
            except Exception as exc:  # one image's failure never stops the portfolio
                outcome = _failure(job, exc)
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


def _reason(exc: Exception, path: Path) -> str:
    """The error's message without the file name it repeats (the log line names the file)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
