"""Verifying a folder of protected outputs against their records, the index and their signatures.

:func:`verify` never fails on a damaged file: each finding is a :class:`Problem` of a :class:`VerifyReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fixative.errors import FixativeError
from fixative.files.hashing import sha256_bytes, sha256_file
from fixative.files.images import IMAGE_SUFFIXES
from fixative.provenance.index import (
    INDEX_NAME,
    entry_problem,
    index_problem,
    load_index,
    record_output_name,
    scan_json,
)
from fixative.provenance.records import looks_like_record, record_path, recorded_path


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
    check = _Check(VerifyReport(folder), anchors)
    index, damaged_index = check.read_index()
    records, claimed = check.read_records()
    if index is None and damaged_index is None and not records and not claimed:
        raise FixativeError(f"{folder}: no Fixative records or {INDEX_NAME} here; nothing to verify")
    if index is None and damaged_index is None:
        check.add(Problem("missing", INDEX_NAME, "the portfolio index is missing"))
    for name, (path, data) in records.items():
        check.record(name, path, data, index)
    check.index_only(records)
    _check_index_signature(check.report, folder, anchors, check.any_signed)
    if require_trusted:
        check.trust()
    check.leftovers()
    return check.report


class _Check:
    """The state of one :func:`verify` run: the report, the index's entries, and what is accounted for."""

    def __init__(self, report: VerifyReport, anchors: list[str]) -> None:
        self.report, self.anchors, self.folder = report, anchors, report.folder
        self.add = report.problems.append
        self.entries: dict[str, dict] = {}
        self.accounted: set[Path] = set()
        self.input_hashes: set[str] = set()
        self.any_signed = False

    def read_index(self) -> tuple[dict | None, str | None]:
        """The index (or None) and why it is damaged (or None); its well-formed entries kept."""
        index = load_index(self.folder)
        damaged_index = index_problem(self.folder)
        if damaged_index:
            self.add(Problem("tampered", INDEX_NAME, damaged_index))
        for name, entry in (index or {}).get("entries", {}).items():
            problem = entry_problem(entry)
            if problem:
                self.add(Problem("tampered", INDEX_NAME, f"the entry for {name}: {problem}"))
            else:
                self.entries[name] = entry
        return index, damaged_index

    def read_records(self) -> tuple[dict[str, tuple[Path, dict]], int]:
        """The well-formed records named after their outputs, and how many files claim to be records."""
        indexed_records = {entry["record"] for entry in self.entries.values()}
        records: dict[str, tuple[Path, dict]] = {}
        claimed = 0
        for path, data, problem in scan_json(self.folder):
            rel = path.relative_to(self.folder).as_posix()
            if problem is None:
                claimed += 1
                name = record_output_name(path, data, self.folder)
                expected = record_path(self.folder / name)
                if path != expected:
                    self.add(Problem("tampered", rel, f"a record of {name}, whose record must be {expected.name} "
                                                      "(renamed or copied?)"))
                    continue
                records[name] = (path, data)
            elif looks_like_record(data) or rel in indexed_records:
                claimed += 1
                self.add(Problem("tampered", rel, f"a damaged record: {problem}"))
            elif any(path.with_suffix(ext).is_file() for ext in IMAGE_SUFFIXES):
                self.add(Problem("foreign", rel, f"{problem}, where an image's record would be"))
        return records, claimed

    def record(self, name: str, path: Path, data: dict, index: dict | None) -> None:
        """Check one record's output (bytes, Content Credentials) and the record against its index entry."""
        self.report.checked += 1
        output = self.folder / name
        self.accounted.add(output.resolve())
        self.input_hashes.add(str(data["input"].get("sha256")))
        source = recorded_path(data["input"].get("path"), path.parent)
        if source is not None:
            self.accounted.add(source)
        if not output.is_file():
            self.add(Problem("missing", name, f"recorded in {path.name} but the file is gone"))
        else:
            try:
                content = output.read_bytes()
            except OSError:
                content = None
            reported = False
            if content is not None and data.get("credentials"):
                self.any_signed = True
                reported = _check_credentials(self.report, name, content, data, self.anchors)
            if not reported and (content is None or sha256_bytes(content) != data["output"].get("sha256")):
                self.add(Problem("tampered", name, f"its SHA-256 differs from the one in {path.name}"))
        entry = self.entries.get(name)
        rel = path.relative_to(self.folder).as_posix()
        if index is not None and entry is None and name not in (index.get("entries") or {}):
            self.add(Problem("unindexed", name, f"{path.name} is not listed in {INDEX_NAME}"))
        elif entry is not None and (_digest(path) != entry.get("record_sha256") or entry["record"] != rel):
            self.add(Problem("tampered", rel, f"the record differs from {INDEX_NAME}"))

    def index_only(self, records: dict[str, tuple[Path, dict]]) -> None:
        """Index entries without a record: their record or output is gone."""
        for name, entry in self.entries.items():
            if name in records:
                continue
            self.report.checked += 1
            self.accounted.add((self.folder / name).resolve())
            record = entry["record"]
            if not (self.folder / record).exists():
                self.add(Problem("missing", name, f"listed in {INDEX_NAME} but its record {record} is gone"))
            if not (self.folder / name).is_file():
                self.add(Problem("missing", name, "listed in the index but the file is gone"))

    def trust(self) -> None:
        """Signatures (of outputs or of the index) whose certificate chains to none of the anchors."""
        untrusted = [n for n, signed in self.report.signed.items() if not signed["trusted"]]
        if self.report.index_signature is not None and not self.report.index_signature["trusted"]:
            untrusted.append(INDEX_NAME)
        for name in untrusted:
            self.add(Problem("untrusted", name, "signed by a certificate that chains to none of your "
                                                "trust anchors (your identity, --trust)"))

    def leftovers(self) -> None:
        """Images no record accounts for (other than recorded inputs), and temporaries of interrupted runs."""
        for image in _images_under(self.folder):
            if image.resolve() in self.accounted:
                continue
            if _digest(image) in self.input_hashes:  # an original (the output folder is the input folder)
                continue
            name = image.relative_to(self.folder).as_posix()
            self.add(Problem("unrecorded", name, "an image that no Fixative record accounts for"))
        for stale in sorted(self.folder.rglob(".*.part")):
            self.add(Problem("partial", stale.relative_to(self.folder).as_posix(),
                             "a temporary file an interrupted run left; rerun the same command to finish"))
