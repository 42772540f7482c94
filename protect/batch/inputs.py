"""Finding the images of a run: files, folders (``recursive`` on request) and glob patterns, in a fixed order.

Folders and globs skip hidden files and the outputs of earlier runs (a file whose record beside it
names it as the output); a symlink loop ends instead of listing paths for ever.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from fixative.batch.summary import Outcome
from fixative.files.images import IMAGE_SUFFIXES
from fixative.provenance.manifest import is_record, read_json, record_path

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputItem:
    """An input file and where its output goes, relative to the output folder (``sub/x.jpg``)."""

    path: Path
    rel: Path


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
                                        + ("" if recursive else " (add output.recursive for subfolders)")))
        elif path.exists():
            add(path, Path(path.name))
        elif _GLOB_CHARS & set(str(spec)):
            if not expand(glob_files(str(spec)), None):
                failures.append(Outcome(str(spec), "failed", reason="the pattern matched no images"))
        else:
            failures.append(Outcome(str(spec), "failed", reason="no such file or folder"))
    return items, failures, ignored
