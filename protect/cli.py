"""The ``fixative`` command line.

``fixative protect INPUT... --out DIR --target IMAGE --encoder SPEC [--encoder SPEC...]
--budget P [--seconds S] [--steps N] [--seed N] [--method NAME] [--models-dir DIR]``
writes ``DIR/<input stem>.png`` (lossless) and ``DIR/<input stem>.json`` (settings, metrics,
hashes) for every input. Problems are reported as one line naming the file; one bad file does
not stop the others. Exit status: 0 all done, 1 some inputs failed, 2 bad usage or setup.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from protect import __version__
from protect.devices import DEVICE_CHOICES
from protect.errors import FixativeError
from protect.optimizer import METHODS, PRECISIONS

log = logging.getLogger("fixative")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_names(inputs: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Deterministic output path per input: ``<stem>.png``, then ``<stem>_2.png``... on clashes.

    A name that would land on an input file is skipped too, so an input is never overwritten
    even when ``out_dir`` is the input folder.
    """
    taken = {p.resolve() for p in inputs}
    names: dict[Path, Path] = {}
    for path in inputs:
        n, dest = 1, out_dir / f"{path.stem}.png"
        while dest.resolve() in taken:
            n += 1
            dest = out_dir / f"{path.stem}_{n}.png"
        taken.add(dest.resolve())
        names[path] = dest
    return names


def _write_json(dest: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".part", dir=dest.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(tmp, dest)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fixative", description="Protect artwork against generative-AI mimicry.")
    parser.add_argument("--version", action="version", version=f"fixative {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("protect", help="protect images", description="Protect images within an LPIPS budget.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--target", type=Path, help="target image; resized to each input's size")
    p.add_argument("--objective", choices=("target", "away"), default="target",
                   help="move the encoders' view towards --target (default), or away from the image's own")
    p.add_argument("--encoder", action="append", dest="encoders", metavar="SPEC",
                   help="encoder: short name (taef2, sd15, sdxl, flux1, ...), folder, file or hub id; repeatable "
                        "(default: taef2)")
    p.add_argument("--budget", type=float, default=0.07,
                   help="LPIPS budget, 0-1 (default 0.07; 0.03 very subtle, 0.10 visible on flat areas)")
    p.add_argument("--seconds", type=float, help="time limit for each image's search, in seconds")
    p.add_argument("--steps", type=int, default=300, help="step limit for each image (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--method", choices=METHODS, default="fixative", help="search method (default fixative)")
    p.add_argument("--linf", type=float, help="optional per-pixel cap in 0-1 units (e.g. 0.03)")
    p.add_argument("--models-dir", type=Path, help="folder holding model files (see models/README.md)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="compute precision (default auto)")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default alex)")
    p.add_argument("--tile-size", type=int, default=1024, help="images larger than this are tiled (pixels)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler=_protect)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Add subcommands that other packages register (``gui``, ``eval``) without importing them here.

    A package registers a function ``register(subparsers)`` under the entry-point group
    ``fixative.commands`` (see pyproject.toml); it adds its subparser and sets ``handler``.
    This keeps the import direction one way: ``gui`` and ``eval`` use ``protect``, never the reverse.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="fixative.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # an optional extra that is not installed
            sub.add_parser(ep.name, help=f"(unavailable: {exc})").set_defaults(handler=_unavailable(ep.name, exc))
            continue
        register(sub)


def _unavailable(name: str, exc: Exception):
    def handler(args: argparse.Namespace) -> int:
        log.error("'fixative %s' needs packages that are not installed (%s); try: pip install 'fixative[%s]'",
                  name, exc, name)
        return 2

    return handler


def _protect(args: argparse.Namespace) -> int:
    # heavy imports only when a job runs
    from tqdm import tqdm

    from protect.engine import Protector
    from protect.images import load_image, load_target, save_png
    from protect.optimizer import OptimizerSettings

    if args.objective == "target" and args.target is None:
        log.error("--target IMAGE is needed (or --objective away)")
        return 2
    settings = OptimizerSettings(
        method=args.method, steps=args.steps, seconds=args.seconds, seed=args.seed,
        linf=args.linf, precision=args.precision,
    )
    encoders = args.encoders or ["taef2"]
    args.out.mkdir(parents=True, exist_ok=True)
    protector = Protector.from_specs(
        encoders, lpips_net=args.lpips_net, models_dir=args.models_dir, device=args.device
    )
    names = output_names(list(args.inputs), args.out)
    target_hash = sha256_file(args.target) if args.target else None
    failed = 0
    for path in args.inputs:
        dest = names[path]
        try:
            loaded = load_image(path)
            target = load_target(args.target, loaded.size) if args.objective == "target" else None
            bar = tqdm(total=settings.steps, desc=path.name, disable=args.quiet, leave=False, unit="step")

            def progress(info, bar=bar) -> None:
                bar.total = info.max_steps * info.tiles
                bar.n = (info.tile - 1) * info.max_steps + info.step
                bar.set_postfix(objective=f"{info.objective:.3f}", lpips=f"{info.lpips:.3f}", refresh=False)
                bar.refresh()

            result = protector.protect(
                loaded.rgb, target, objective=args.objective, budget=args.budget, settings=settings,
                alpha=loaded.alpha, tile_size=args.tile_size, callback=progress,
            )
            bar.close()
            save_png(dest, result.image, result.alpha, loaded.info)
            record = {
                "fixative": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "input": {"path": str(path), "sha256": sha256_file(path), "size": list(loaded.size),
                          "mode": loaded.mode},
                "output": {"path": str(dest), "sha256": sha256_file(dest), "format": "PNG"},
                "target": {"path": str(args.target), "sha256": target_hash} if args.target else None,
                "encoders": encoders,
                **result.record(),
            }
            _write_json(dest.with_suffix(".json"), record)
            m = result.metrics
            ratio = f", distance ratio {m.mean_ratio:.3f}" if m.mean_ratio is not None else ""
            log.info("%s -> %s: LPIPS %.4f, PSNR %.1f dB%s, %d steps, %.1f s",
                     path, dest, m.lpips, m.psnr, ratio, m.steps, m.seconds)
        except FixativeError as exc:
            failed += 1
            log.error("%s", exc)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fixative`` console script."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s: %(message)s" if getattr(args, "verbose", False) else "%(message)s",
        stream=sys.stderr,
    )
    try:
        return args.handler(args)
    except FixativeError as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted: finished images are saved; rerun to do the rest")
        return 130


if __name__ == "__main__":
    sys.exit(main())
