"""Protecting one image of a portfolio: skip it when done, else load, make its target, search, encode,
sign, and write its record, its file and its index entry (the record first: an output never exists
without one, see :mod:`fixative.provenance.manifest`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fixative import __version__
from fixative.batch.outputs import Job, already_done, indexed
from fixative.batch.settings import optimizer_settings
from fixative.batch.shards import Process
from fixative.batch.summary import Outcome
from fixative.errors import ConfigError, InputImageError, OutputError
from fixative.files.formats import decode_rgb, encode_image, output_bits, remove_stale_temporaries
from fixative.files.images import load_image
from fixative.options import OutputFormat, ProtectOptions
from fixative.provenance.manifest import (
    environment,
    index_entry,
    now,
    portable_path,
    portable_paths,
    sha256_bytes,
    sha256_file,
    update_index,
    write_record,
)
from fixative.provenance.optout import get_opt_out, with_opt_out
from fixative.targets.modes import TargetFactory, TargetRequest, make_target

log = logging.getLogger("fixative")


class Cancelled(Exception):
    """Raised inside a run when a hook asked it to stop (never escapes :func:`~fixative.batch.runner.run_batch`)."""


def remeasure(protector, source, saved, target, objective: str, tile_size: int) -> dict:
    """LPIPS, PSNR, SSIM, L-inf and the distance ratio of a re-decoded (compressed) file against the original."""
    m = protector.measure(source, saved, target, objective=objective, tile_size=tile_size)
    keys = ("lpips", "flip", "psnr", "ssim", "linf", "distance_after", "ratio", "mean_ratio", "views", "view_ratio")
    return {k: getattr(m, k) for k in keys}


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


def _input_entry(job: Job, loaded, input_sha: str, absolute: bool) -> dict:
    """The record's ``input`` part."""
    return {
        "path": portable_path(job.input, job.record.parent, absolute),
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
    }


class ImageRunner:
    """Protects the images of one run: holds the models (loaded on first need) and the run's fixed parts.

    ``protector``: a loaded :class:`~fixative.core.engine.Protector` to use, else one is got from
    ``get_protector(spec)`` (a :class:`~fixative.models.loading.ProtectorCache`'s ``get``) on first need.
    ``hooks``: a :class:`~fixative.batch.runner.BatchHooks`; ``factories``: the made targets' factories.
    """

    def __init__(self, opts: ProtectOptions, proc: Process, request: TargetRequest, fixed: dict, hooks: Any,
                 factories: Mapping[str, TargetFactory], get_protector: Callable[[Any], Any]):
        self.opts, self.proc, self.request, self.hooks, self.factories = opts, proc, request, hooks, factories
        self.models, self.lpips = fixed["models"], fixed["lpips"]
        self.run_settings, self.shash = fixed["run_settings"], fixed["settings_hash"]
        self.protector = hooks.protector
        self._get_protector = get_protector
        self.environment = environment()

    def _protector(self):
        if self.protector is None:
            self.protector = self._get_protector(self.opts.models.spec(device=self.proc.device))
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

    def _index_input(self, job: Job) -> str:
        return portable_path(job.input, self.opts.out, self.opts.output.absolute_paths)

    def _skipped(self, job: Job, input_sha: str) -> Outcome | None:
        """The outcome of an image already done with these settings (and indexed so), or None."""
        done = already_done(job, input_sha, self.shash)
        if done is None or not indexed(job, done, self.opts.out, self._index_input(job), self.opts.output.identity):
            return None
        metrics = done.get("metrics") if isinstance(done.get("metrics"), dict) else {}
        return Outcome(str(job.input), "skipped", str(job.output), str(job.record), lpips=metrics.get("lpips"),
                       mean_ratio=metrics.get("mean_ratio"), view_ratio=metrics.get("view_ratio"))

    def _load(self, job: Job):
        """The input image and its target, checked (size, transparency, not the target itself)."""
        from fixative.core.engine import check_size

        loaded = load_image(job.input, max_pixels=self.opts.output.max_pixels)
        try:
            check_size(*loaded.size)
        except InputImageError as exc:
            raise InputImageError(f"{job.input}: {exc}") from exc
        if loaded.alpha is not None and self.opts.output.format is OutputFormat.JPEG:
            raise ConfigError("the image has transparency, which JPEG cannot hold; use output.format png, webp "
                              "or tiff", field="output.format")
        target = make_target(self.request, loaded, on_step=self._target_progress(job), factories=self.factories)
        if self.request.kind == "image" and target.tensor is not None and target.tensor.equal(loaded.rgb):
            raise ConfigError(f"the target.image {self.request.image} has the same pixels as this image; moving "
                              "it towards itself protects nothing: choose another target", field="target.image")
        return loaded, target

    def _search(self, job: Job, loaded, target, bits: int, bar_factory):
        """The search's result for one image, with progress on ``bar_factory``'s bar and the hooks."""
        opts, protector = self.opts, self._protector()
        bar = bar_factory(job.input.name, opts.search.steps)

        def progress(info) -> bool | None:
            bar.total = info.max_steps * info.tiles
            bar.n = (info.tile - 1) * info.max_steps + info.step * info.group
            bar.set_postfix(lpips=f"{info.lpips:.3f}", refresh=False)
            bar.refresh()
            return self.hooks.on_step(job, info) if self.hooks.on_step else None

        try:
            result = protector.protect(
                loaded.rgb, target.tensor, objective=self.request.objective, budget=opts.search.budget_limit(),
                settings=optimizer_settings(opts.search, tuple(loaded.rgb.shape[-2:])), alpha=loaded.alpha,
                levels=65535 if bits == 16 else 255, tile_size=opts.search.tile_size,
                tile_batch=opts.search.tile_batch, callback=progress,
            )
        finally:
            bar.close()
        if result.metrics.stopped == "cancelled":
            raise Cancelled
        return result

    def _record(self, job: Job, loaded, target, result, *, info: dict, bits: int, extra: dict) -> dict:
        """The provenance record of one protected image (the output's hashes are added on writing)."""
        opts = self.opts
        absolute = opts.output.absolute_paths
        models = {"encoders": self.models, "lpips": self.lpips}
        return {
            "fixative": __version__,
            "record_version": 1,
            "created": extra["started_at"],
            "finished": now(),
            "mode": self.request.mode,
            "input": _input_entry(job, loaded, extra["input_sha"], absolute),
            "output": {
                "path": portable_path(job.output, job.record.parent, absolute),
                "name": job.output.relative_to(opts.out).as_posix(),
                "format": opts.output.format,
                "bits": bits,
                "alpha": result.alpha is not None,
                "metadata": sorted(k for k in ("icc_profile", "exif", "xmp", "dpi") if info.get(k)),
            },
            "opt_out": extra["opt_out"].describe(),
            "target": target.recipe if absolute else portable_paths(target.recipe, job.record.parent),
            "encoders": list(opts.models.encoders),
            "models": models if absolute else portable_paths(models, job.record.parent),
            "settings_hash": self.shash,
            "run_settings": self.run_settings,
            **result.record(),
            "compressed": extra["compressed"],
            "environment": {**self.environment, "device": str(self._protector().device)},
        }

    def _write(self, job: Job, data: bytes, record: dict) -> None:
        """Write the record, then the output, then the index entry."""
        from fixative.files.formats import atomic_write

        out, identity = self.opts.out, self.opts.output.identity
        writing = job.record
        try:
            record_sha = write_record(job.record, record)
            writing = job.output
            atomic_write(job.output, data)
        except OSError as exc:
            raise OutputError(f"{writing}: cannot be written ({exc.strerror or exc})") from exc
        if not update_index(out, record["output"]["name"],
                            index_entry(record, job.record.relative_to(out).as_posix(), record_sha,
                                        self._index_input(job)),
                            expect={job.record: record_sha, job.output: record["output"]["sha256"]},
                            identity=identity):
            log.warning("%s: another run rewrote %s meanwhile; its files are kept and not indexed (rerun to check)",
                        job.input, job.output.name)

    def run(self, job: Job, bar_factory) -> Outcome:
        """Protect ``job``'s image (or skip it when done); ``bar_factory(name, steps)`` makes its progress bar."""
        output = self.opts.output
        started_at, started = now(), time.perf_counter()
        for path in (job.output, job.record):
            remove_stale_temporaries(path)
        input_sha = sha256_file(job.input)
        if self.request.kind == "image" and input_sha == self.request.image_sha256:
            raise ConfigError(f"this image is the target.image itself ({self.request.image}); moving it towards "
                              "itself protects nothing: choose another target", field="target.image")
        skipped = self._skipped(job, input_sha)
        if skipped is not None:
            return skipped
        loaded, target = self._load(job)
        bits = output_bits(output.format, loaded.bits)
        result = self._search(job, loaded, target, bits, bar_factory)
        opt_out = get_opt_out(output.opt_out)
        info = {**loaded.info, "xmp": with_opt_out(loaded.info.get("xmp"), opt_out)}
        data = encode_image(result.image, result.alpha, fmt=output.format, bits=bits, info=info,
                            quality=output.jpeg_quality)
        compressed = None
        if output.format is OutputFormat.JPEG:
            compressed = {"format": "jpeg", "quality": output.jpeg_quality, **remeasure(
                self._protector(), loaded.rgb, decode_rgb(data), target.tensor, self.request.objective,
                self.opts.search.tile_size)}
        record = self._record(job, loaded, target, result, info=info, bits=bits, extra={
            "started_at": started_at, "input_sha": input_sha, "opt_out": opt_out, "compressed": compressed})
        data = finish_output(data, record, job.input, output.identity, opt_out)
        self._write(job, data, record)
        m = result.metrics
        checked = {n: m.ratio[n] for n in m.checked} if m.checked and m.ratio else None
        return Outcome(str(job.input), "done", str(job.output), str(job.record), lpips=m.lpips,
                       mean_ratio=m.mean_ratio, view_ratio=m.view_ratio,
                       seconds=round(time.perf_counter() - started, 2), compressed=compressed, checked=checked)
