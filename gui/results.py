"""What a job gives back (:class:`JobResult`, one :class:`ImageResult` per protected image), the pictures
made for each image, and the job's summary in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fixative.gui.credentials import unsigned_reason
from fixative.gui.explain import metrics_words
from fixative.gui.form import JobSettings


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


def image_result(protector, outcome, name: str, views: Path, max_pixels: int) -> ImageResult:
    """The :class:`ImageResult` of one done (or skipped) batch ``outcome``: its record, and the before, difference
    and model-view pictures written into ``views`` (images read with at most ``max_pixels`` pixels)."""
    from fixative.gui.views import difference_map, load_pair, model_view, original_preview
    from fixative.provenance.manifest import read_json

    output, record_file = Path(outcome.output), Path(outcome.record)
    record = read_json(record_file) or {}
    original, protected = load_pair(Path(outcome.input), output, max_pixels)
    stem = f"{len(list(views.glob('*.before.png'))):03d}-{output.stem}"
    before = original_preview(original, views / f"{stem}.before.png")
    diff = difference_map(original.rgb, protected.rgb, views / f"{stem}.difference.png")
    view = model_view(protector.encoders, original.rgb, protected.rgb, views, stem,
                      cell=int(record.get("settings", {}).get("tile_size", 1024)))
    return ImageResult(name, output, record_file, record, before, diff.path, diff.caption(), view.original,
                       view.protected, view.note, metrics_words(record), skipped=outcome.status == "skipped")


def finish(result: JobResult, settings: JobSettings, out: Path, folder: Path, certificate: str | None) -> None:
    """Fill in who signed, the zip of the outputs (in ``folder/download``) and the message, once the batch ran.

    ``certificate``: the signer's public certificate (PEM), put in the zip when the images are signed.
    """
    if result.images:
        from fixative.gui.views import portfolio_zip

        signed = [im.record.get("credentials") for im in result.images if im.record.get("credentials")]
        result.signer = signed[0]["signer"] if signed else None
        result.unsigned_reason = None if signed else unsigned_reason(settings)
        result.zip = portfolio_zip(out, result.outputs, folder / "download" / "fixative-protected.zip",
                                   certificate=certificate if signed else None)
    result.message = summary_message(result)


def summary_message(result: JobResult) -> str:
    """The job's outcome in Markdown: how many were protected or cancelled, who signed, each failure."""
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
