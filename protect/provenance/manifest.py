"""Provenance: a JSON record per protected file, a portfolio index, and verification.

- Each output ``NAME.EXT`` gets ``NAME.json`` beside it: the SHA-256 of the input and of the
  output, every setting (and the hash that identifies them), the encoders and LPIPS with the
  SHA-256 of their weight files, the achieved metrics, the tool's version and timestamps.
- ``fixative-index.json`` in the output folder ties the records together: for every output,
  its record and the SHA-256 of both. Several processes (shards) update it under a file lock.
- :func:`verify` checks a folder: every output against its record, every record against the
  index, each output's Content Credentials and the index's signature (:mod:`fixative.provenance.credentials`),
  and lists outputs that are missing, tampered with, stripped, or not recorded at all.

A record is written before its output (both atomically), so an output file never exists
without a record: a run killed between the two leaves a record whose output is missing, which
the next run redoes and :func:`verify` reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fixative import __version__
from fixative.errors import FixativeError
from fixative.files.formats import atomic_write
from fixative.files.images import IMAGE_SUFFIXES

log = logging.getLogger("fixative")

INDEX_NAME = "fixative-index.json"
LOCK_NAME = ".fixative-index.lock"
RECORD_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".json")


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def settings_hash(settings: dict) -> str:
    """A stable hash of JSON-ready settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- model files --------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_entry(path: Path) -> dict:
    """``{"path", "bytes", "sha256"}`` of a weights file; hashes are cached per process.

    A file built into the package (:mod:`fixative.models.builtin`) also gets ``"builtin"``: its name, source
    and licence, so a record says which shipped weights made it.
    """
    from fixative.models.builtin import builtin_file

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    entry = {"path": str(path), "bytes": stat.st_size, "sha256": _DIGESTS[key]}
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


# --- the index ----------------------------------------------------------------------------------


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


# --- verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    """One finding of :func:`verify`: ``kind`` is tampered, stripped, missing, unrecorded, unindexed,
    unsigned, signer, untrusted, partial or foreign."""

    kind: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.kind.upper()}: {self.name}: {self.detail}"


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``signed``: per signed output, its signer and their trust
    (``trusted`` / ``untrusted``) and the manifest's state; ``index_signature``: who signed the
    index and whether it matches (None where it is not signed)."""

    folder: Path
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    signed: dict[str, dict] = field(default_factory=dict)
    index_signature: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "folder": str(self.folder),
            "ok": self.ok,
            "checked": self.checked,
            "problems": [vars(p) for p in self.problems],
            "signed": self.signed,
            "index_signature": self.index_signature,
        }


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _check_credentials(report: VerifyReport, name: str, data: bytes, record: dict, anchors: list[str]) -> bool:
    """Check one signed output's manifest against its record; True when a problem was reported."""
    from fixative.provenance.credentials import (
        MIME_TYPES,
        SUFFIX_FORMATS,
        manifest_differences,
        pixels_sha256,
        read_credentials,
    )

    recorded = record["credentials"]
    fmt = record["output"].get("format")
    if fmt not in MIME_TYPES:
        fmt = SUFFIX_FORMATS.get(Path(name).suffix.lower(), "png")
    found = read_credentials(data, fmt, anchors)
    if found is None:
        try:
            same_pixels = pixels_sha256(data) == record["output"].get("pixels_sha256")
        except Exception:  # noqa: BLE001 - an undecodable file is simply not the same pixels
            same_pixels = False
        if same_pixels:
            report.problems.append(Problem(
                "stripped", name, f"its Content Credentials (signed by {recorded.get('signer')!r}) were removed; "
                "the pixels are the protected ones, so the perturbation still protects it"))
        else:
            report.problems.append(Problem(
                "tampered", name, "its Content Credentials were removed and its pixels changed"))
        return True
    report.signed[name] = {"signer": found.signer, "issuer": found.issuer, "serial": found.serial,
                           "state": found.state, "trusted": found.trusted}
    if not found.bound:
        report.problems.append(Problem("tampered", name, "its bytes no longer match its Content Credentials "
                                       "(pixels or metadata changed after signing)"))
        return True
    if found.state == "invalid":
        report.problems.append(Problem("tampered", name, "its Content Credentials are invalid: "
                                       + ", ".join(found.failures)))
        return True
    differences = manifest_differences(found, recorded)
    for difference in differences:
        report.problems.append(Problem("tampered", name, difference))
    return bool(differences)


def _check_index_signature(report: VerifyReport, folder: Path, anchors: list[str], any_signed: bool) -> None:
    from fixative.provenance.credentials import INDEX_SIGNATURE_NAME, check_index_signature

    index_file = folder / INDEX_NAME
    sig = check_index_signature(folder, index_file.read_bytes() if index_file.is_file() else None, anchors)
    if sig is None:
        if any_signed:
            report.problems.append(Problem("unsigned", INDEX_NAME, f"outputs carry Content Credentials but the index "
                                           f"has no signature ({INDEX_SIGNATURE_NAME} is missing)"))
        return
    report.index_signature = {"signer": sig.signer, "serial": sig.serial, "valid": sig.valid,
                              "trusted": sig.trusted, "matches": sig.matches}
    if not sig.valid:
        report.problems.append(Problem("tampered", INDEX_SIGNATURE_NAME, sig.reason or "invalid signature"))
        return
    by = f"the index signed by {sig.signer!r} ({INDEX_SIGNATURE_NAME})"
    for name in sig.changed:
        report.problems.append(Problem("tampered", name, f"its index entry differs from {by}: the file, its record "
                                       "or both were replaced"))
    for name in sig.added:
        report.problems.append(Problem("tampered", name, f"listed in {INDEX_NAME} but not in {by}"))
    for name in sig.removed:
        report.problems.append(Problem("tampered", name, f"listed in {by} but removed from {INDEX_NAME}"))
    for name, signed in report.signed.items():
        if (signed["signer"], signed["serial"]) != (sig.signer, sig.serial):
            report.problems.append(Problem("signer", name, f"signed by {signed['signer']!r} (certificate serial "
                                           f"{signed['serial']}), but {by} with certificate serial {sig.serial}"))


def _digest(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def verify(folder: str | Path, *, anchors: list[str] | None = None, require_trusted: bool = False) -> VerifyReport:
    """Check every output in ``folder`` against its record, the index and their signatures; never fails on a
    damaged file.

    Problems: ``tampered`` (an output, record or index whose bytes differ from what was recorded, a
    damaged record or index entry, a record renamed away from its output's name, a manifest that no
    longer matches the file or the record, an index entry that differs from the signed index),
    ``stripped`` (a signed output whose Content Credentials were removed, its pixels unchanged),
    ``missing`` (a recorded output or record that is gone), ``unrecorded`` (an image in the folder
    that no record accounts for, other than a recorded input), ``unindexed`` (a record the index
    does not list), ``unsigned`` (signed outputs, but no index signature), ``signer`` (an output
    signed by another certificate than the index), ``partial`` (a temporary file a killed run left
    behind), ``foreign`` (a file that is not a Fixative record where an image's record would be),
    and with ``require_trusted``, ``untrusted`` (a signature, of an output or of the index, whose
    certificate chains to none of ``anchors``: PEM certificates of trusted signers or their roots).
    """
    folder = Path(folder)
    anchors = list(anchors or [])
    if not folder.is_dir():
        raise FixativeError(f"{folder}: no such folder")
    report = VerifyReport(folder)
    add = report.problems.append
    index = load_index(folder)
    damaged_index = index_problem(folder)
    if damaged_index:
        add(Problem("tampered", INDEX_NAME, damaged_index))
    entries: dict[str, dict] = {}
    for name, entry in (index or {}).get("entries", {}).items():
        problem = entry_problem(entry)
        if problem:
            add(Problem("tampered", INDEX_NAME, f"the entry for {name}: {problem}"))
        else:
            entries[name] = entry
    indexed_records = {entry["record"] for entry in entries.values()}

    records: dict[str, tuple[Path, dict]] = {}
    claimed = 0
    for path, data, problem in scan_json(folder):
        rel = path.relative_to(folder).as_posix()
        if problem is None:
            claimed += 1
            name = record_output_name(path, data, folder)
            expected = record_path(folder / name)
            if path != expected:
                add(Problem("tampered", rel, f"a record of {name}, whose record must be {expected.name} "
                                             "(renamed or copied?)"))
                continue
            records[name] = (path, data)
        elif looks_like_record(data) or rel in indexed_records:
            claimed += 1
            add(Problem("tampered", rel, f"a damaged record: {problem}"))
        elif any(path.with_suffix(ext).is_file() for ext in IMAGE_SUFFIXES):
            add(Problem("foreign", rel, f"{problem}, where an image's record would be"))
    if index is None and damaged_index is None and not records and not claimed:
        raise FixativeError(f"{folder}: no Fixative records or {INDEX_NAME} here; nothing to verify")
    if index is None and damaged_index is None:
        add(Problem("missing", INDEX_NAME, "the portfolio index is missing"))

    accounted: set[Path] = set()
    input_hashes: set[str] = set()
    any_signed = False
    for name, (path, data) in records.items():
        report.checked += 1
        output = folder / name
        accounted.add(output.resolve())
        input_hashes.add(str(data["input"].get("sha256")))
        source = recorded_path(data["input"].get("path"), path.parent)
        if source is not None:
            accounted.add(source)
        if not output.is_file():
            add(Problem("missing", name, f"recorded in {path.name} but the file is gone"))
        else:
            try:
                content = output.read_bytes()
            except OSError:
                content = None
            reported = False
            if content is not None and data.get("credentials"):
                any_signed = True
                reported = _check_credentials(report, name, content, data, anchors)
            if not reported and (content is None or sha256_bytes(content) != data["output"].get("sha256")):
                add(Problem("tampered", name, f"its SHA-256 differs from the one in {path.name}"))
        entry = entries.get(name)
        if index is not None and entry is None and name not in (index.get("entries") or {}):
            add(Problem("unindexed", name, f"{path.name} is not listed in {INDEX_NAME}"))
        elif entry is not None and (_digest(path) != entry.get("record_sha256")
                                    or entry["record"] != path.relative_to(folder).as_posix()):
            add(Problem("tampered", path.relative_to(folder).as_posix(), f"the record differs from {INDEX_NAME}"))
    for name, entry in entries.items():
        if name in records:
            continue
        report.checked += 1
        accounted.add((folder / name).resolve())
        record = entry["record"]
        if not (folder / record).exists():
            add(Problem("missing", name, f"listed in {INDEX_NAME} but its record {record} is gone"))
        if not (folder / name).is_file():
            add(Problem("missing", name, "listed in the index but the file is gone"))
    _check_index_signature(report, folder, anchors, any_signed)
    if require_trusted:
        untrusted = [n for n, signed in report.signed.items() if not signed["trusted"]]
        if report.index_signature is not None and not report.index_signature["trusted"]:
            untrusted.append(INDEX_NAME)
        for name in untrusted:
            add(Problem("untrusted", name, "signed by a certificate that chains to none of your "
                                           "trust anchors (your identity, --trust)"))
    for image in _images_under(folder):
        if image.resolve() in accounted:
            continue
        if _digest(image) in input_hashes:  # an original (the output folder is the input folder)
            continue
        name = image.relative_to(folder).as_posix()
        add(Problem("unrecorded", name, "an image that no Fixative record accounts for"))
    for stale in sorted(folder.rglob(".*.part")):
        add(Problem("partial", stale.relative_to(folder).as_posix(), "a temporary file an interrupted run left; "
                    "rerun the same command to finish"))
    return report


def relative_name(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` in POSIX form (the name used in records and the index)."""
    return Path(os.path.relpath(path, folder)).as_posix()
