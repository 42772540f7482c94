"""Provenance records: the JSON file beside each protected output, and the hashes and entries it holds.

Each output ``NAME.EXT`` gets ``NAME.json`` beside it: the SHA-256 of the input and of the output, every
setting (and the hash that identifies them), the encoders and LPIPS with the SHA-256 of their weight
files, the achieved metrics, the tool's version and timestamps. See :mod:`fixative.provenance.manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from fixative.files.atomic import atomic_write
from fixative.files.hashing import cached_sha256, sha256_bytes

RECORD_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".json")


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def settings_hash(settings: dict) -> str:
    """A stable hash of JSON-ready settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- model files --------------------------------------------------------------------------------



def file_entry(path: Path) -> dict:
    """``{"path", "bytes", "sha256"}`` of a weights file; hashes are cached per process.

    A file built into the package (:mod:`fixative.models.builtin`) also gets ``"builtin"``: its name, source
    and licence, so a record says which shipped weights made it.
    """
    from fixative.models.builtin import builtin_file

    entry = {"path": str(path), "bytes": path.stat().st_size, "sha256": cached_sha256(path)}
    shipped = builtin_file(path)
    if shipped is not None:
        entry["builtin"] = {"name": shipped.relpath, "source": shipped.source, "licence": shipped.licence}
    return entry


def _weight_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def encoder_entry(spec: str, store) -> dict:
    """Where encoder ``spec`` loads from, and the SHA-256 of its files, without loading it.

    Raises :class:`~fixative.errors.ModelNotFoundError` (one clear message) when it is missing.
    """
    from fixative.models.encoders import resolve_spec

    resolved = resolve_spec(spec, store)
    entry: dict = {"spec": spec, "kind": resolved.kind, "source": resolved.location}
    files: list[Path] = []
    if resolved.kind == "path":
        path = Path(resolved.location)
        if path.is_dir():
            pipeline = (path / "vae" / "config.json").is_file() and not (path / "config.json").is_file()
            files = _weight_files_in(path / "vae" if pipeline else path)
        else:
            files = [path]
            config = path.with_suffix(".json")
            if config.is_file():
                files.append(config)
    else:
        entry["subfolder"] = resolved.subfolder
        config = store.hub_file(resolved.location, "config.json", subfolder=resolved.subfolder or None)
        if config is not None:
            files = _weight_files_in(Path(config).parent)
    entry["files"] = [file_entry(f) for f in files]
    return entry


def lpips_entry(net: str, store) -> dict:
    from fixative.models.perceptual import weight_files

    return {"net": net, "files": [file_entry(f) for f in weight_files(net, store) if f.is_file()]}


# --- records ------------------------------------------------------------------------------------


def record_path(output: Path) -> Path:
    """Where the record of ``output`` goes: beside it, same name, ``.json``."""
    return output.with_suffix(".json")


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None (missing, unreadable or not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def looks_like_record(data: dict | None) -> bool:
    """True for JSON that claims to be a Fixative record (well formed or not): ``fixative`` and ``input``/``output``."""
    return bool(data) and "fixative" in data and ("input" in data or "output" in data)


def record_problem(data: dict | None) -> str | None:
    """Why ``data`` is not a well-formed record (a field missing or of the wrong type), or None when it is."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for part in ("input", "output"):
        if not isinstance(data.get(part), dict):
            return f"its {part!r} is not an object" if part in data else f"it has no {part!r}"
    output, source = data["output"], data["input"]
    if not isinstance(output.get("name"), str) or not output["name"].strip():
        return "its output has no name"
    for where, key in (("output", "sha256"), ("input", "sha256")):
        if not isinstance(data[where].get(key), str):
            return f"its {where} {key} is not a string"
    if not isinstance(source.get("path"), str | None):
        return "its input path is not a string"
    if not isinstance(data.get("settings_hash"), str | None):
        return "its settings_hash is not a string"
    if not isinstance(data.get("credentials"), dict | None):
        return "its credentials are not an object"
    return None


def is_record(data: dict | None) -> bool:
    """True for a well-formed Fixative record (see :func:`record_problem`)."""
    return looks_like_record(data) and record_problem(data) is None


def recorded_path(text: str | None, base: Path) -> Path | None:
    """A path as a record or the index holds it (absolute, or relative to ``base``, the file's folder), resolved."""
    if not text:
        return None
    path = Path(text)
    try:
        return (path if path.is_absolute() else base / path).resolve()
    except (OSError, RuntimeError):
        return None


def portable_path(path: Path | str, base: Path, absolute: bool) -> str:
    """How a record stores ``path``: absolute when asked, else relative to ``base`` (the record's folder),
    so that a record shared with its image does not give away the folders of the computer it was made on."""
    path = Path(path)
    if absolute:
        return str(path.resolve())
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative form
        return str(path.resolve())


#: keys whose absolute paths :func:`portable_paths` rewrites (inputs, outputs, targets, model files, caches)
PATH_KEYS = ("path", "source", "location", "folder", "file")


def portable_paths(value, base: Path):
    """``value`` (a record's JSON part) with every absolute path under :data:`PATH_KEYS` made relative to ``base``."""
    if isinstance(value, dict):
        return {k: portable_path(v, base, False) if k in PATH_KEYS and isinstance(v, str) and os.path.isabs(v)
                else portable_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, base) for v in value]
    return value


def record_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8")


def write_record(path: Path, record: dict) -> str:
    """Write a record atomically; returns its SHA-256 (kept in the index)."""
    data = record_bytes(record)
    atomic_write(path, data)
    return sha256_bytes(data)


def environment() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform()}


def relative_name(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` in POSIX form (the name used in records and the index)."""
    return Path(os.path.relpath(path, folder)).as_posix()
