"""Output names, the output folder, and resuming: which outputs are already done.

Names are deterministic and never land on an input, even when the output folder is the input folder;
every shard plans the same names: a name belongs to whichever input its record names, never to whoever
came first. A finished image is recognised by its input's SHA-256 plus the settings hash in its record,
checked against the portfolio index.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fixative.batch.inputs import InputItem
from fixative.errors import OutputError
from fixative.provenance.manifest import (
    INDEX_NAME,
    entry_problem,
    index_entries,
    index_entry,
    is_record,
    load_index,
    read_json,
    record_path,
    recorded_path,
    sha256_file,
    update_index,
)

log = logging.getLogger("fixative")


@dataclass(frozen=True)
class Job:
    """One image's work: its input, and the output and record paths planned for it."""

    input: Path
    output: Path
    record: Path


def _record_owner(record: Path) -> Path | None | bool:
    """The input that a record at ``record`` belongs to; None if there is no file; False if foreign (or damaged)."""
    if not record.exists():
        return None
    data = read_json(record)
    if not is_record(data):
        return False
    return recorded_path(data["input"].get("path"), record.parent) or False


def _restore_record(dest: Path, record: Path, entry: dict, out_dir: Path) -> bool:
    """Give a renamed record (``zzz.json`` for ``Wood.png``) back its name, if its bytes are the ones the
    index holds for ``dest``; True if it did. A record that differs from the index is never taken."""
    if entry.get("record") != record.relative_to(out_dir).as_posix():
        return False
    for candidate in sorted(dest.parent.glob("*.json")):
        if candidate in (record, out_dir / INDEX_NAME) or sha256_file(candidate) != entry["record_sha256"]:
            continue
        data = read_json(candidate)
        if not is_record(data) or Path(data["output"]["name"]).name != dest.name:
            continue
        try:
            os.link(candidate, record)  # fails rather than overwrite a record that appeared meanwhile
            candidate.unlink()
        except OSError:
            return False
        log.warning("%s: the record of %s was renamed; given back its name %s", candidate, dest.name, record.name)
        return True
    return False


def plan_outputs(items: list[InputItem], out_dir: Path, suffix: str = ".png") -> list[Job]:
    """One output (and record) path per input, deterministic, never an input and never a stranger's file.

    ``out/<rel dir>/<stem><suffix>``; on a clash ``<stem>_2``, ``<stem>_3``... A name clashes with
    an input file, a name given to an earlier input, or a file in the folder that belongs to
    something else (an image without a record, or a record of another input). A name whose
    record belongs to this input is its own (an earlier run's), so reruns and shards agree.
    """
    inputs = {item.path.resolve() for item in items}
    entries = index_entries(out_dir)
    assigned: set[Path] = set()
    jobs: list[Job] = []
    for item in items:
        own = item.path.resolve()
        base = out_dir / item.rel.parent
        n = 1
        while True:
            stem = item.path.stem if n == 1 else f"{item.path.stem}_{n}"
            dest = base / f"{stem}{suffix}"
            record = record_path(dest)
            n += 1
            keys = {dest.resolve(), record.resolve()}
            if keys & inputs or keys & assigned:
                continue
            owner = _record_owner(record)
            if owner is not None and owner is not False and owner != own:
                continue
            if owner is False or (owner is None and dest.exists()):
                # no record, or a damaged one: the name is still this input's if the index lists it so (the
                # record renamed, lost or damaged: the image is done again); else it belongs to something else
                entry = entries.get(dest.relative_to(out_dir).as_posix())
                if entry is None or recorded_path(entry.get("input"), out_dir) != own:
                    continue
                if owner is None:
                    _restore_record(dest, record, entry, out_dir)
            break
        assigned |= keys
        jobs.append(Job(item.path, dest, record))
    return jobs


def _blocking(path: Path) -> str | None:
    """The first existing ancestor of ``path`` that is a file, not a folder (why it cannot be created), or None."""
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else str(parent)
    return None


def prepare_output_folder(out: Path) -> None:
    """Create the output folder if needed and check that files can be written in it.

    Before any image is computed: a folder that cannot hold the results fails the whole run at once, in
    one line naming it, rather than each image after its search.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"output.out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = _blocking(out)
        why = f"{blocking} is a file, not a folder" if blocking else (exc.strerror or str(exc))
        raise OutputError(f"output.out {out}: cannot be created ({why})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".fixative-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output.out {out}: cannot write files there ({exc.strerror or exc})") from exc


def already_done(job: Job, input_sha: str, shash: str) -> dict | None:
    """The record of an earlier run that made ``job``'s output from the same input and settings, or None."""
    data = read_json(job.record)
    if not is_record(data) or data.get("settings_hash") != shash or data["input"].get("sha256") != input_sha:
        return None
    if not job.output.is_file() or sha256_file(job.output) != data["output"].get("sha256"):
        return None
    return data


def indexed(job: Job, done: dict, out: Path, index_input: str, identity=None) -> bool:
    """Whether a finished image's record agrees with the index (then it is skipped).

    No entry: a run killed after writing the files but before the index; the entry is added now. An
    entry that disagrees (a run killed between a re-protection's record and its index entry, two runs
    racing, or an edit): the record is not trusted and the image is protected again, never re-blessed.
    """
    name = job.output.relative_to(out).as_posix()
    record_sha = sha256_file(job.record)
    entry = ((load_index(out) or {}).get("entries") or {}).get(name)
    if entry is None:
        update_index(out, name, index_entry(done, job.record.relative_to(out).as_posix(), record_sha,
                                            index_input),
                     replace=False, expect={job.record: record_sha, job.output: done["output"]["sha256"]},
                     identity=identity)
        return True
    if (entry_problem(entry) is None and entry["record_sha256"] == record_sha
            and entry["output_sha256"] == done["output"]["sha256"]):
        return True
    log.warning("%s: its record %s differs from %s (an interrupted or racing run, or an edit); protecting it "
                "again", job.input, job.record.name, INDEX_NAME)
    return False
