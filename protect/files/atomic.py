"""The one atomic write: a file appears whole or not at all, and what a killed run leaves is found and removed.

Every file Fixative writes (protected images, records, the index, keys, caches, downloads' last step)
goes through :func:`atomic_write` (bytes), :func:`atomic_write_text`, :func:`atomic_write_json` or, for
a library that writes to a file name itself, :func:`atomic_path`: the data goes to a temporary file
beside the destination, ``.NAME.HOST.PID.xxxxxxxx.part``, is flushed to disk and renamed over the
destination, and the temporary is removed on any error. A run killed mid-write leaves only such a
temporary; :func:`remove_stale_temporaries` removes those whose writer is gone, never a live run's.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: a temporary file whose writer cannot be checked (another machine's, or a reused pid) is stale after this long
STALE_SECONDS = 3600.0


def _host() -> str:
    """This machine's name, reduced to letters, digits and ``-`` (it goes into temporary file names)."""
    import socket

    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temporary_prefix(dest: Path) -> str:
    """Name prefix of ``dest``'s temporary files (hidden, in the same folder, ending ``.part``)."""
    return f".{dest.name}."


def _owner_prefix(dest: Path) -> str:
    """The prefix of this process's temporary files for ``dest``: ``.NAME.HOST.PID.`` (then random, ``.part``)."""
    return f"{temporary_prefix(dest)}{_host()}.{os.getpid()}."


@contextmanager
def atomic_path(dest: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``dest`` for a writer that takes a file name (``safetensors.save_file``,
    ``Image.save``); when the block ends, the file is flushed to disk and renamed over ``dest``.

    The temporary is ``.NAME.HOST.PID.xxxxxxxx.part`` in ``dest``'s folder (created 0600, so never readable by
    others even briefly), named after this machine and process so that another run cleaning up never takes
    it for a leftover (see :func:`remove_stale_temporaries`). On any error, the temporary is removed and
    ``dest`` is untouched. ``mode``: the final permissions (default: those of a plain new file, 0666 less
    the umask).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_owner_prefix(dest), suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode() if mode is None else mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def atomic_write(dest: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` atomically: a temporary file beside it, fsync, then rename (see
    :func:`atomic_path` for the temporary's name, permissions and clean-up)."""
    with atomic_path(dest, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(dest: str | Path, text: str, *, encoding: str = "utf-8", mode: int | None = None) -> None:
    """Write ``text`` to ``dest`` atomically (see :func:`atomic_write`)."""
    atomic_write(dest, text.encode(encoding), mode=mode)


def atomic_write_json(dest: str | Path, obj: Any, *, indent: int | None = 2, **dumps: Any) -> None:
    """Write ``obj`` as JSON (``indent`` spaces, a final newline; ``dumps``: more :func:`json.dumps` arguments)
    to ``dest`` atomically (see :func:`atomic_write`)."""
    atomic_write_text(dest, json.dumps(obj, indent=indent, **dumps) + "\n")


def _new_file_mode() -> int:
    """The permissions a plain ``open(..., "w")`` would give a new file (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` runs on this machine (POSIX; on Windows, where signal 0 is Ctrl+C, always True)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def is_stale_temporary(path: Path, dest: Path) -> bool:
    """Whether ``path``, one of ``dest``'s temporary files, was left by a run that is gone.

    A file written by a process of this machine is stale when that process is no longer running; one of
    another machine (a shared disk) when it is older than :data:`STALE_SECONDS`; one without a writer
    in its name (an older version's) always.
    """
    middle = path.name[len(temporary_prefix(dest)) : -len(".part")]
    parts = middle.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    host, pid = parts[0], int(parts[1])
    if host == _host() and pid != os.getpid() and not _pid_alive(pid):
        return True
    try:
        return time.time() - path.stat().st_mtime > STALE_SECONDS
    except OSError:
        return False


def remove_stale_temporaries(dest: Path) -> int:
    """Delete temporary files that a killed run left for ``dest``; returns how many.

    Files of runs still going (this machine's live processes, and recent ones of other machines) are left
    alone: two runs on one folder never delete each other's files.
    """
    removed = 0
    if dest.parent.is_dir():
        for stale in dest.parent.glob(glob.escape(temporary_prefix(dest)) + "*.part"):
            if is_stale_temporary(stale, dest):
                stale.unlink(missing_ok=True)
                removed += 1
    return removed
