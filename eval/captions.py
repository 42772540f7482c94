"""Training images and their captions, for fine-tuning.

``--captions`` takes one of:

- a ``.csv`` file with a header: a file column (``file_name``, ``file``, ``image`` or ``filename``)
  and a caption column (``text``, ``caption`` or ``prompt``), as in Hugging Face's ``imagefolder``;
- a ``.jsonl`` file: one object per line with the same keys (``metadata.jsonl`` of ``imagefolder``);
- a ``.txt`` file: ``NAME<TAB>caption`` or ``NAME: caption`` per line, or a single line without a
  name = the same caption for every image;
- ``auto``: per image, a sidecar ``NAME.txt`` beside it if there is one, else a caption made from
  the template (``{name}`` = the file name without extension, separators as spaces and trailing
  numbers removed: ``starry_night_03.png`` -> ``starry night``; ``{folder}`` = the folder's name
  the same way). The default template is ``"{name}"``.

Images are matched to caption entries by file name, or by name without the extension (so the
captions of ``art.jpg`` also caption the protected ``art.png``). A listed image with no caption
is an error naming it; an entry naming no image is a warning.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fixative.errors import ConfigError
from fixative.files.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

FILE_KEYS = ("file_name", "file", "image", "filename", "path")
TEXT_KEYS = ("text", "caption", "prompt")
DEFAULT_TEMPLATE = "{name}"


@dataclass(frozen=True)
class Example:
    """One training example: the image file and its caption."""

    path: Path
    caption: str

    @property
    def key(self) -> str:
        """The file name without extension (how clean and protected copies are paired)."""
        return self.path.stem


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (sorted by name; hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder of images")
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise ConfigError(f"{folder}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
    return found


def words_of(name: str) -> str:
    """``starry_night-03`` -> ``starry night``: separators to spaces, trailing digits removed."""
    text = re.sub(r"[_\-.]+", " ", name)
    text = re.sub(r"(\s*\d+)+$", "", text).strip()
    text = re.sub(r"\s+", " ", text)
    return text or name


def template_caption(path: Path, template: str = DEFAULT_TEMPLATE) -> str:
    """The ``auto`` caption of ``path`` from ``template`` (``{name}``, ``{folder}``)."""
    try:
        return template.format(name=words_of(path.stem), folder=words_of(path.parent.name)).strip()
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"caption template {template!r}: only {{name}} and {{folder}} can be used ({exc})") from exc


def _pick(row: dict, keys: tuple[str, ...]) -> str | None:
    lower = {str(k).strip().lower(): v for k, v in row.items()}
    for k in keys:
        if lower.get(k) not in (None, ""):
            return str(lower[k]).strip()
    return None


def read_caption_file(path: str | Path) -> dict[str, str] | str:
    """Entries of a captions file: {file name: caption}, or one caption (str) for every image."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"captions {path}: cannot read ({exc})") from exc
    entries: dict[str, str] = {}
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        for i, row in enumerate(reader, start=2):
            name, caption = _pick(row, FILE_KEYS), _pick(row, TEXT_KEYS)
            if name is None or caption is None:
                raise ConfigError(f"captions {path}, line {i}: needs a file column ({'/'.join(FILE_KEYS)}) and "
                                  f"a caption column ({'/'.join(TEXT_KEYS)})")
            entries[name] = caption
    elif suffix in (".jsonl", ".json"):
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"captions {path}, line {i}: not JSON ({exc.msg})") from exc
            name, caption = (_pick(row, FILE_KEYS), _pick(row, TEXT_KEYS)) if isinstance(row, dict) else (None, None)
            if name is None or caption is None:
                raise ConfigError(f"captions {path}, line {i}: needs {FILE_KEYS[0]!r} and {TEXT_KEYS[0]!r}")
            entries[name] = caption
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if len(lines) == 1 and "\t" not in lines[0] and not re.match(r"^[^\s:]+\.\w+\s*:", lines[0]):
            return lines[0]
        for i, line in enumerate(lines, start=1):
            name, sep, caption = line.partition("\t")
            if not sep:
                name, sep, caption = line.partition(":")
            if not sep or not caption.strip():
                raise ConfigError(f"captions {path}, line {i}: expected 'NAME<TAB>caption' or 'NAME: caption'")
            entries[name.strip()] = caption.strip()
    if not entries:
        raise ConfigError(f"captions {path}: no captions in the file")
    return entries


def caption_images(images: list[Path], captions: str | Path, template: str = DEFAULT_TEMPLATE) -> list[Example]:
    """Pair each image with its caption (see the module docstring for ``captions``)."""
    if str(captions) == "auto":
        out = []
        for p in images:
            side = p.with_suffix(".txt")
            text = side.read_text(encoding="utf-8", errors="replace").strip() if side.is_file() else ""
            out.append(Example(p, text or template_caption(p, template)))
        return out
    entries = read_caption_file(captions)
    if isinstance(entries, str):
        return [Example(p, entries) for p in images]
    by_name = {Path(k).name: v for k, v in entries.items()}
    by_stem = {Path(k).stem: v for k, v in entries.items()}
    out, missing = [], []
    for p in images:
        caption = by_name.get(p.name, by_stem.get(p.stem))
        if caption is None:
            missing.append(p.name)
        else:
            out.append(Example(p, caption))
    if missing:
        raise ConfigError(f"captions {captions}: no caption for {', '.join(missing[:5])}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    used = {p.name for p in images} | {p.stem for p in images}
    unused = [k for k in entries if Path(k).name not in used and Path(k).stem not in used]
    if unused:
        log.warning("captions %s: %d entr%s name no image here (%s)", captions, len(unused),
                    "y" if len(unused) == 1 else "ies", ", ".join(unused[:3]))
    return out
