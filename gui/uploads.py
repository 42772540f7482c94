"""Checking the files an artist drops on the app: present, not empty, not too large, a still image it can read.

Nothing here raises for a bad file: :func:`check_uploads` lists it with its reason, in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fixative.errors import FixativeError
from fixative.files.images import IMAGE_SUFFIXES, MAX_PIXELS

#: default upload limit per file, in bytes (also given to gradio's launch as max_file_size)
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024


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
