"""``fixative models list`` and ``fixative models fetch NAME...``: the known models, and getting them.

``list`` shows every model of :mod:`fixative.models.catalog`, found or not: where (which search place), its
files' sizes and SHA-256, its licence, and how ``fetch`` would get it. ``fetch`` downloads into the
per-user models folder (``--models-dir`` DIR instead, when given), which the store searches; a name
that is built in and intact needs nothing. Exit status: 0 done, 1 a download failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("fixative")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` (``list``, ``fetch``) to the ``fixative`` command line."""
    p = sub.add_parser("models", help="list the known models and where they are; fetch missing ones",
                       description="List the models Fixative knows (found or not, where, size, SHA-256, licence), "
                                   "or download some into the per-user models folder, which is always searched.")
    msub = p.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="every known model: found or not, where, size, SHA-256, licence")
    ls.add_argument("--models-dir", type=Path, help="also search this folder first (as for 'fixative protect')")
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    ls.add_argument("-q", "--quiet", action="store_true", help="no log lines")
    ls.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ls.set_defaults(handler=list_command)
    fe = msub.add_parser("fetch", help="download models by name (see 'fixative models list')")
    fe.add_argument("names", nargs="+", metavar="NAME", help="model names, e.g. taef2 lpips-vgg sd15")
    fe.add_argument("--models-dir", type=Path,
                    help="download into this folder instead of the per-user models folder")
    fe.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    fe.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    fe.set_defaults(handler=fetch_command)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def model_rows(store) -> list[dict]:
    """One JSON-ready dict per known model: name, kind, description, licence, found, where, files, how to get."""
    from fixative.models.catalog import MODELS, locate

    rows = []
    for model in MODELS.values():
        where = locate(model, store)
        rows.append({
            "name": model.name, "kind": model.kind, "description": model.description, "licence": model.licence,
            "builtin": model.builtin, "found": where is not None,
            "origin": where.origin if where else None, "path": str(where.path) if where else None,
            "bytes": where.bytes if where else None,
            "files": [{"path": str(p), "bytes": size, "sha256": digest} for p, size, digest in where.files]
            if where else [],
            "fetch": model.how,
        })
    return rows


def list_command(args: argparse.Namespace) -> int:
    """Run ``fixative models list``."""
    from fixative.models.store import ModelStore
    from fixative.userdirs import user_models_dir

    store = ModelStore(args.models_dir)
    rows = model_rows(store)
    if args.json:
        print(json.dumps({"models_folder": str(user_models_dir()), "models": rows}, indent=2))
        return 0
    print(f"per-user models folder (where 'fixative models fetch' puts files): {user_models_dir()}")
    for row in rows:
        state = f"found ({row['origin']})" if row["found"] else "not found"
        print(f"\n{row['name']}  [{row['kind']}]  {row['description']}")
        print(f"  licence: {row['licence']}; {state}" + (f", {_size(row['bytes'])}" if row["found"] else ""))
        if row["found"]:
            print(f"  where: {row['path']}")
            for f in row["files"][:6]:
                digest = f["sha256"] or "(not computed)"
                print(f"    {Path(f['path']).name}  {_size(f['bytes'])}  sha256 {digest}")
            if len(row["files"]) > 6:
                print(f"    ... and {len(row['files']) - 6} more files")
        print(f"  get: fixative models fetch {row['name']}  ({row['fetch']})")
    return 0


def fetch_one(name: str, dest_root: Path, store, *, progress: bool = True) -> Path:
    """Download model ``name`` into ``dest_root`` (HTTPS files) or its hub folder; returns where it now is.

    Raises :class:`~fixative.errors.ConfigError` for an unknown name and
    :class:`~fixative.models.download.DownloadError` when a download fails.
    """
    from fixative.errors import ConfigError
    from fixative.models.catalog import MODELS, locate
    from fixative.models.download import fetch_hub, fetch_url, vgg16_features

    model = MODELS.get(name.lower())
    if model is None:
        import difflib

        close = difflib.get_close_matches(name.lower(), list(MODELS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; 'fixative models list' shows the known ones")
    if model.builtin:
        where = locate(model, store, digests=False)
        if where is not None:
            log.info("%s is already here (%s: %s); nothing to download", name, where.origin, where.path)
            return where.path
    if model.files:
        for remote in model.files:
            target = dest_root / (remote.convert_to or remote.relpath)
            if target.is_file():
                log.info("%s: %s is already there", name, target)
                continue
            got = fetch_url(remote.url, dest_root / remote.relpath, remote.sha256, progress=progress)
            if remote.convert == "vgg16-features":
                vgg16_features(got, target)
                got.unlink()
        return dest_root / (model.files[0].convert_to or model.files[0].relpath)
    if model.hub_repo:
        local_dir = dest_root / model.folder if model.folder else None
        return fetch_hub(model.hub_repo, model.hub_files, local_dir=local_dir,
                         cache_dir=None if local_dir else store.hub_cache)
    # built in, with no download source, yet not usable: a damaged install
    raise ConfigError(f"{name} is built into the package, but its file is missing or damaged; reinstall fixative")


def fetch_command(args: argparse.Namespace) -> int:
    """Run ``fixative models fetch NAME...``: each name in turn; a failed download does not stop the others."""
    from fixative.models.download import DownloadError
    from fixative.models.store import ModelStore
    from fixative.userdirs import user_models_dir

    store = ModelStore(args.models_dir)
    dest_root = Path(args.models_dir) if args.models_dir else user_models_dir()
    failed = 0
    for name in args.names:
        try:
            path = fetch_one(name, dest_root, store, progress=not args.quiet)
            log.info("%s: ready in %s", name, path)
        except DownloadError as exc:
            failed += 1
            log.error("%s: %s", name, exc)
    return 1 if failed else 0
