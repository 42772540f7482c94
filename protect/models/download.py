"""Downloading model files: HTTPS with a pinned SHA-256 and resume, or the Hugging Face hub.

:func:`fetch_url` writes ``DEST.part`` as it goes and, when rerun after an interruption, asks the
server for the rest only (an HTTP ``Range`` request; a server that ignores it sends the whole file,
which then replaces the part). The finished file is checked against its pinned SHA-256 before it is
renamed into place: a file that does not match is deleted and reported, never used. Only ``https://``
URLs are fetched (plain ``http://`` only from this computer, 127.0.0.1 / localhost, for tests).
TLS certificates are always checked.

:func:`fetch_hub` uses ``huggingface_hub.snapshot_download`` (its own progress bars and resume).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

from fixative.errors import FixativeError
from fixative.files.atomic import atomic_path
from fixative.models.hub import hub_error_detail

log = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CHUNK = 1 << 16


class DownloadError(FixativeError):
    """A download failed or its file did not match the pinned SHA-256."""


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in _LOOPBACK):
        return
    raise DownloadError(f"refusing to download {url}: only https:// URLs are fetched")


def _digest_matches(path: Path, sha256: str) -> tuple[bool, str]:
    from fixative.files.hashing import sha256_file

    got = sha256_file(path)
    return got.startswith(sha256.lower()), got


def fetch_url(url: str, dest: Path, sha256: str, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and check it against ``sha256``.

    ``sha256``: the expected hex digest (full, or a prefix of at least 8 digits). Returns ``dest``.
    An existing ``dest`` that already matches is kept without downloading. Raises
    :class:`DownloadError` (one line: the URL and what went wrong) on a network error or a mismatch.
    """
    from tqdm import tqdm

    _check_url(url)
    if len(sha256) < 8:
        raise DownloadError(f"{url}: a pinned SHA-256 of at least 8 hex digits is needed, got {sha256!r}")
    dest = Path(dest)
    if dest.is_file() and _digest_matches(dest, sha256)[0]:
        log.info("%s is already there and matches its SHA-256", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "fixative"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked above)
    except HTTPError as exc:
        if exc.code == 416 and have:  # the part is already complete
            response = None
        else:
            raise DownloadError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (URLError, OSError) as exc:
        raise DownloadError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); "
                            f"rerun to resume from the {have:,} bytes kept") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if have and not resumed:
                log.info("%s: the server cannot resume; downloading it again", url)
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name[:30], disable=not progress
            ) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                except OSError as exc:
                    raise DownloadError(f"{url}: the download broke off ({exc}); rerun to resume") from None
    ok, got = _digest_matches(part, sha256)
    if not ok:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the file's SHA-256 is {got}, not the pinned {sha256}; it was deleted, not used")
    os.replace(part, dest)
    return dest


def fetch_hub(repo_id: str, patterns: Sequence[str], *, local_dir: Path | None = None,
              cache_dir: Path | None = None) -> Path:
    """Download the files of hub repo ``repo_id`` matching ``patterns`` (globs), with progress bars and resume.

    Into ``local_dir`` (a plain folder) when given, else into the Hugging Face cache. Returns the folder.
    Raises :class:`DownloadError` when the hub cannot be reached, is switched off (``HF_HUB_OFFLINE``),
    or refuses (unknown or gated repo).
    """
    from fixative.models.store import hub_offline

    if hub_offline():
        raise DownloadError(f"{repo_id}: HF_HUB_OFFLINE is set, so nothing is downloaded from the hub; unset it "
                            "on a machine with internet access")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, allow_patterns=list(patterns),
                                 local_dir=str(local_dir) if local_dir else None,
                                 cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # network, 401/403 gated, 404, disk full ...
        raise DownloadError(f"{repo_id}: the hub download failed ({hub_error_detail(exc)})") from None
    return Path(path)


def vgg16_features(source: Path, dest: Path) -> Path:
    """Keep the ``features.*`` tensors of a torchvision VGG16 checkpoint as a safetensors file (LPIPS' backbone)."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(source, map_location="cpu", weights_only=True)
    features = {k: v.contiguous() for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise DownloadError(f"{source} holds no 'features.*' tensors: not a torchvision VGG16 checkpoint")
    with atomic_path(dest) as tmp:
        save_file(features, str(tmp))
    return dest
