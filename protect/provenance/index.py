"""The portfolio index, ``fixative-index.json``: one entry per output tying it to its record, by SHA-256.

Several processes (shards) update it under a file lock, entry by entry; it is never rebuilt from the
records, so a record edited afterwards stays detectable. Also here: finding the records in a folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from fixative import __version__
from fixative.files.atomic import atomic_write
from fixative.files.hashing import sha256_file
from fixative.provenance.records import (
    looks_like_record,
    now,
    read_json,
    record_bytes,
    record_path,
    record_problem,
)

log = logging.getLogger("fixative")

INDEX_NAME = "fixative-index.json"
LOCK_NAME = ".fixative-index.lock"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder``'s index, across processes (fcntl on POSIX, msvcrt on Windows)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as fh:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except ImportError:  # Windows
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)


def index_entry(record: dict, record_name: str, record_sha: str, input_path: str | None = None) -> dict:
    """The index's line for one output; ``input_path``: the input as the index holds it (default: the record's)."""
    return {
        "record": record_name,
        "record_sha256": record_sha,
        "output_sha256": record["output"]["sha256"],
        "input": input_path if input_path is not None else record["input"].get("path"),
        "input_sha256": record["input"].get("sha256"),
        "settings_hash": record.get("settings_hash"),
        "finished": record.get("finished"),
    }


def _empty_index() -> dict:
    return {"fixative": __version__, "index_version": 1, "updated": now(), "entries": {}}


def load_index(folder: Path) -> dict | None:
    """The index of ``folder``, or None (missing, or not a readable index: see :func:`index_problem`)."""
    data = read_json(folder / INDEX_NAME)
    if data is None or not isinstance(data.get("entries"), dict):
        return None
    return data


def index_problem(folder: Path) -> str | None:
    """Why ``folder``'s index exists but cannot be used (None when it is fine or absent)."""
    path = folder / INDEX_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"not a readable index ({type(exc).__name__})"
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        return "not a readable index (no 'entries' object)"
    return None


def entry_problem(entry) -> str | None:
    """Why an index entry is malformed (None when it is an object with string hashes and record name)."""
    if not isinstance(entry, dict):
        return f"its entry is a {type(entry).__name__}, not an object"
    for key in ("record", "record_sha256", "output_sha256"):
        if not isinstance(entry.get(key), str):
            return f"its entry's {key!r} is not a string"
    return None


def index_entries(folder: Path) -> dict[str, dict]:
    """The well-formed entries of ``folder``'s index (malformed ones left out: :func:`verify` names them)."""
    index = load_index(folder)
    return {k: v for k, v in (index or {}).get("entries", {}).items() if entry_problem(v) is None}


def update_index(folder: Path, output_name: str, entry: dict, *, replace: bool = True,
                 expect: dict[Path, str] | None = None, identity=None) -> bool:
    """Add (or with ``replace``, replace) one output's entry in the index, under the lock; True if written.

    The index is only ever changed entry by entry, by the run that wrote the record: it is never
    rebuilt from the records, so a record edited afterwards stays detectable. ``expect``: files and
    the SHA-256 they must still have (the record and output just written); when another run has
    replaced one of them since, nothing is written (that run indexes its own; a rerun repairs a
    mismatch by redoing the image). A damaged index is kept beside the new one, as
    ``fixative-index.json.damaged-TIME``, never thrown away; its damaged entries are left out of the new one.
    With ``identity`` (a :class:`~fixative.provenance.identity.Identity`) the new index is signed
    (``fixative-index.sig``, see :mod:`fixative.provenance.credentials`); an unsigned run that changes a signed
    index removes the signature it can no longer renew, and says so.
    """
    from fixative.provenance.credentials import INDEX_SIGNATURE_NAME, sign_index

    with _locked(folder):
        index = load_index(folder)
        damaged = [] if index is None else [k for k, v in index["entries"].items() if entry_problem(v)]
        if index is None or damaged:  # keep the damaged index as it was, then go on without what is damaged
            if (folder / INDEX_NAME).exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                kept = folder / f"{INDEX_NAME}.damaged-{stamp}"
                shutil.copyfile(folder / INDEX_NAME, kept)
                log.warning("%s was damaged (%s); a copy is kept as %s", folder / INDEX_NAME,
                            f"entries {', '.join(damaged)}" if damaged else "unreadable", kept.name)
            index = index or _empty_index()
            for name in damaged:
                del index["entries"][name]
        if not replace and output_name in index["entries"]:
            return False
        for path, digest in (expect or {}).items():
            try:
                if sha256_file(path) != digest:
                    return False
            except OSError:
                return False
        index["entries"][output_name] = entry
        index["updated"] = now()
        index["fixative"] = __version__
        data = record_bytes(index)
        atomic_write(folder / INDEX_NAME, data)
        if identity is not None:
            sign_index(folder, data, identity)
        elif (folder / INDEX_SIGNATURE_NAME).exists():
            (folder / INDEX_SIGNATURE_NAME).unlink()
            log.warning("%s: the index changed without a signing identity, so its signature %s was removed",
                        folder / INDEX_NAME, INDEX_SIGNATURE_NAME)
        return True


def find_records(folder: Path) -> dict[str, tuple[Path, dict]]:
    """Every well-formed Fixative record under ``folder``, keyed by its output's name relative to ``folder``.

    Whatever the record file is called; when several claim one output, the one named after it wins.
    """
    found: dict[str, tuple[Path, dict]] = {}
    for path, data, problem in scan_json(folder):
        if problem is None and looks_like_record(data):
            name = record_output_name(path, data, folder)
            if name not in found or path == record_path(folder / name):
                found[name] = (path, data)
    return found


def record_output_name(path: Path, data: dict, folder: Path) -> str:
    """The output a record at ``path`` describes, relative to ``folder`` (the record's folder + its output's name)."""
    return (path.parent.relative_to(folder) / Path(data["output"]["name"]).name).as_posix()


def scan_json(folder: Path) -> list[tuple[Path, dict | None, str | None]]:
    """Every visible ``.json`` under ``folder`` but the index: (path, its object or None, why it is not a record)."""
    out = []
    for path in sorted(folder.rglob("*.json")):
        if path.name == INDEX_NAME or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out.append((path, None, f"not valid JSON ({type(exc).__name__})"))
            continue
        if not isinstance(data, dict):
            out.append((path, None, "not a JSON object"))
        elif not looks_like_record(data):
            out.append((path, data, "not a Fixative record"))
        else:
            out.append((path, data, record_problem(data)))
    return out
