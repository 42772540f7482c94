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

The parts, each in its module of :mod:`fixative.provenance`: ``records`` (a record and its hashes),
``index`` (the portfolio index and finding records), ``verification`` (:func:`verify`); this module
re-exports their public names.
"""

from __future__ import annotations

from fixative.files.hashing import sha256_bytes, sha256_file  # noqa: F401 (re-exported)
from fixative.provenance.index import (  # noqa: F401 (re-exported)
    INDEX_NAME,
    LOCK_NAME,
    entry_problem,
    find_records,
    index_entries,
    index_entry,
    index_problem,
    load_index,
    record_output_name,
    scan_json,
    update_index,
)
from fixative.provenance.records import (  # noqa: F401 (re-exported)
    PATH_KEYS,
    RECORD_VERSION,
    encoder_entry,
    environment,
    file_entry,
    is_record,
    looks_like_record,
    lpips_entry,
    now,
    portable_path,
    portable_paths,
    read_json,
    record_bytes,
    record_path,
    record_problem,
    recorded_path,
    relative_name,
    settings_hash,
    write_record,
)
from fixative.provenance.verification import (  # noqa: F401 (re-exported)
    Problem,
    VerifyReport,
    verify,
)

__all__ = [
    "INDEX_NAME",
    "LOCK_NAME",
    "PATH_KEYS",
    "Problem",
    "RECORD_VERSION",
    "VerifyReport",
    "encoder_entry",
    "entry_problem",
    "environment",
    "file_entry",
    "find_records",
    "index_entries",
    "index_entry",
    "index_problem",
    "is_record",
    "load_index",
    "looks_like_record",
    "lpips_entry",
    "now",
    "portable_path",
    "portable_paths",
    "read_json",
    "record_bytes",
    "record_output_name",
    "record_path",
    "record_problem",
    "recorded_path",
    "relative_name",
    "scan_json",
    "settings_hash",
    "sha256_bytes",
    "sha256_file",
    "update_index",
    "verify",
    "write_record",
]
