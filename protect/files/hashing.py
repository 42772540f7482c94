"""SHA-256 of files and bytes, and a per-process cache of file digests (keyed by path, size and mtime).

The model store, the built-in weights, downloads and the provenance records all hash files; they do it here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: (resolved path, size in bytes, mtime in ns) -> hex SHA-256, for files hashed in this process
_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def cached_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, computed once per process while its size and modification time stay the same."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]
