"""The ``fixative`` command line.

``fixative protect INPUT... --out DIR [--mode cloak|poison|immunize] [--target IMAGE]
[--intensity low|medium|high | --like-jpeg Q | --budget P] [--quality fast|standard|best] [--steps N] [--seconds S]
[--encoder SPEC...] [--format png|webp|tiff|jpeg] [--recursive] [--shard I/N] [--json] [--quiet]``
protects files, folders and globs into ``DIR`` (see :mod:`fixative.batch.runner`): ``DIR/<name>.<ext>``
and ``DIR/<name>.json`` (the provenance record) per image, and ``DIR/fixative-index.json``.
``fixative verify DIR`` checks a folder against its records, and their Content Credentials;
``fixative identity create|show`` makes and shows the signing identity (:mod:`fixative.cli.identity`).

Problems are reported as one line naming the file; one bad file does not stop the others.
Exit status: 0 all done, 1 some inputs failed (or verify found problems), 2 bad usage or setup.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from fixative import __version__
from fixative.cli import identity as identity_commands
from fixative.cli import target_flags
from fixative.core.devices import DEVICE_CHOICES
from fixative.defaults import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_ROBUST,
    DEFAULT_VIEWS,
    MAX_PIXELS,
    METHODS,
    OUTPUT_FORMATS,
    PRECISIONS,
    ROBUST_LEVELS,
    VIEW_LEVELS,
)
from fixative.errors import FixativeError
from fixative.presets import INTENSITIES, QUALITIES
from fixative.provenance.optout import DEFAULT_OPT_OUT, OPT_OUTS
from fixative.targets.modes import MODES

log = logging.getLogger("fixative")


def __getattr__(name: str):
    """``sha256_file`` is re-exported (older callers import it from here), loaded only when asked for."""
    if name == "sha256_file":
        from fixative.provenance.manifest import sha256_file

        return sha256_file
    raise AttributeError(name)


def output_names(inputs: list[Path], out_dir: Path, suffix: str = ".png") -> dict[Path, Path]:
    """Deterministic output path per input (see :func:`fixative.batch.runner.plan_outputs`)."""
    from fixative.batch.runner import InputItem, plan_outputs

    jobs = plan_outputs([InputItem(p, Path(p.name)) for p in inputs], out_dir, suffix)
    return {job.input: job.output for job in jobs}


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with a clear message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


def _build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``fixative`` parser. ``argv``: the command line about to be parsed; only the plugin command it
    names is built in full (the others stay light placeholders, so ``--help`` loads no heavy module)."""
    from fixative.cli.suggest import SuggestingParser

    parser = SuggestingParser(prog="fixative", description="Protect artwork against generative-AI mimicry.")
    parser.add_argument("--version", action="version", version=f"fixative {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("protect", help="protect images", description="Protect images, no more visible than a JPEG of "
                       "them (--intensity), or within an LPIPS budget (--budget).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("-r", "--recursive", action="store_true", help="take images from subfolders of INPUT folders too")
    p.add_argument("--mode", choices=MODES, default="cloak",
                   help="cloak (style, Glaze-like), poison (concept, Nightshade-like): towards --target; "
                        "immunize (PhotoGuard/Mist-like): away from the image's own encoding unless --target "
                        "is given (default cloak)")
    p.add_argument("--target", type=Path, help="target image; resized to each input's size")
    p.add_argument("--objective", choices=("target", "away"),
                   help="override the mode's objective: towards --target, or away from the image's own")
    p.add_argument("--encoder", action="append", dest="encoders", metavar="SPEC",
                   help="encoder: short name (taef2, sd15, sdxl, flux1, ...), folder, file or hub id; repeatable "
                        "(default: taef2)")
    strength = p.add_mutually_exclusive_group()
    strength.add_argument("--intensity", choices=tuple(INTENSITIES),
                          help="how visible the protection may be: no more than the image's own JPEG at quality "
                          + ", ".join(f"{v} ({k})" for k, v in INTENSITIES.items())
                          + ", measured by FLIP on each image (default medium)")
    strength.add_argument("--like-jpeg", type=int_at_least(1), metavar="Q",
                          help="no more visible than the image's own JPEG at quality Q (1-99), by FLIP")
    strength.add_argument("--budget", type=float,
                          help="an LPIPS budget instead, 0-1 (0.03 very subtle, 0.10 visible on flat areas)")
    p.add_argument("--quality", choices=tuple(QUALITIES),
                   help="effort preset: " + ", ".join(
                       f"{k} {q.steps} steps" + (f"/{q.seconds:.0f} s" if q.seconds else "")
                       for k, q in QUALITIES.items()) + " (default standard)")
    p.add_argument("--seconds", type=float, help="time limit for each image's search, in seconds")
    p.add_argument("--steps", type=int, help="step limit for each image (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--method", choices=METHODS, default="fixative", help="search method (default fixative)")
    p.add_argument("--linf", type=float, help="optional per-pixel cap in 0-1 units (e.g. 0.03)")
    p.add_argument("--robust", choices=ROBUST_LEVELS,
                   help="protection that survives re-encoding: off (strongest on untouched files, lost to JPEG "
                        "and resizing), web (survives platforms' JPEG and resizing; without --for it protects for "
                        "the generic pipeline, 2048 px and JPEG 85), strong (also noise, blur and encode-decode; "
                        f"slower) (default {DEFAULT_ROBUST})")
    p.add_argument("--views", choices=VIEW_LEVELS, default=DEFAULT_VIEWS,
                   help="train (default): protect what a model trained on the image sees, its views resized to "
                        "trainers' sizes (shorter side 512-1024 px, buckets of 0.25-1 MP), cropped and flipped; "
                        "the search cost then stops growing with the image's size. off: the image at its own size "
                        "only, in tiles")
    p.add_argument("--for", dest="platform", metavar="PLATFORM",
                   help="protect for a platform's upload pipeline (its size limit and JPEG quality): "
                        "generic, instagram, x, facebook, artstation, deviantart, tumblr, bluesky, mastodon")
    p.add_argument("--format", choices=tuple(OUTPUT_FORMATS), default="png",
                   help="output format: png (lossless, default), webp (lossless), tiff, or jpeg (lossy: "
                        "weakens the protection; the saved file is measured again)")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY,
                   help=f"JPEG quality with --format jpeg (default {DEFAULT_JPEG_QUALITY})")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"refuse images with more pixels than this, before decoding (default {MAX_PIXELS:,})")
    p.add_argument("--shard", metavar="I/N", help="do only the I-th of N shares of the portfolio (1 <= I <= N); "
                                                  "under 'accelerate launch' the shares are set automatically")
    p.add_argument("--models-dir", type=Path, help="folder holding model files (see models/README.md)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="compute precision (default auto)")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default alex)")
    p.add_argument("--tile-size", type=int, default=1024, help="images larger than this are tiled (pixels)")
    p.add_argument("--tile-batch", type=positive_int, metavar="N",
                   help="tiles optimised together per pass (default: as many as the free GPU memory holds on "
                        "CUDA, 1 on the CPU)")
    p.add_argument("--check-encoder", action="append", dest="check_encoders", metavar="SPEC", default=[],
                   help="also measure the result on this encoder without crafting against it (e.g. craft on the "
                        "tiny taef2, check on the full flux2 VAE: the transfer); repeatable")
    p.add_argument("--opt-out", choices=tuple(OPT_OUTS), default=DEFAULT_OPT_OUT,
                   help="the machine-readable 'do not train' statement written into every output (IPTC "
                        "plus:DataMining in the XMP, and the CAWG training-mining assertion of its Content "
                        "Credentials): ai-training (prohibited for AI/ML training; the default), gen-ai "
                        "(generative AI training only), all (all data mining, training and AI inference), "
                        "none (no preference stated)")
    p.add_argument("--identity", type=Path, metavar="PATH",
                   help="sign with this identity (a folder made by 'fixative identity create --out', or a PEM "
                        "file with a certificate chain and its private key) instead of your default one")
    p.add_argument("--no-credentials", action="store_true",
                   help="do not sign the outputs with Content Credentials (signed by default once you have an "
                        "identity: 'fixative identity create')")
    p.add_argument("--absolute-paths", action="store_true",
                   help="records name the input, target and model files by absolute path (default: relative to "
                        "the record's folder, so a shared record does not show your folders)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on standard output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only problems")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    target_flags.add_arguments(p)
    p.set_defaults(handler=_protect)

    v = sub.add_parser("verify", help="check protected files against their records",
                       description="Check every output in DIR against its provenance record and the portfolio "
                                   "index; report tampered, missing and unrecorded files (exit 1 if any).")
    v.add_argument("folder", type=Path, metavar="DIR", help="an output folder of 'fixative protect'")
    v.add_argument("--trust", action="append", type=Path, default=[], metavar="PEM",
                   help="trust signers whose certificate is, or is issued by, one in this PEM file (repeatable); "
                        "your own identity is always trusted")
    v.add_argument("--require-trusted", action="store_true",
                   help="report signatures by untrusted signers as problems (exit 1), e.g. a forger's own key")
    v.add_argument("--json", action="store_true", help="print the report as JSON on standard output")
    v.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    v.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    v.set_defaults(handler=_verify)
    identity_commands.register(sub)
    from fixative.cli.models import register as register_models

    register_models(sub)
    _add_plugin_commands(sub, argv)
    return parser


def _command_word(argv: list[str] | None) -> str | None:
    """The subcommand named on a command line (the first word that is not an option), or None."""
    for word in sys.argv[1:] if argv is None else argv:
        if not word.startswith("-"):
            return word
    return None


def _add_plugin_commands(sub: argparse._SubParsersAction, argv: list[str] | None = None) -> None:
    """Add subcommands that other packages register (``gui``, ``eval``) without importing them here.

    A package registers a function ``register(subparsers)`` under the entry-point group
    ``fixative.commands`` (see pyproject.toml); it adds its subparser and sets ``handler``; its module's
    ``COMMAND_HELP`` is the one-line help shown while the command is not the one being run (then
    ``register`` is not called, so nothing it imports is loaded).
    This keeps the import direction one way: ``gui`` and ``eval`` use ``protect``, never the reverse.
    """
    from importlib.metadata import entry_points

    asked = _command_word(argv)
    for ep in sorted(entry_points(group="fixative.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # an optional extra that is not installed
            sub.add_parser(ep.name, help=f"(unavailable: {exc})").set_defaults(handler=_unavailable(ep.name, exc))
            continue
        if ep.name == asked:
            register(sub)
        else:
            summary = getattr(sys.modules.get(register.__module__), "COMMAND_HELP", f"see 'fixative {ep.name} --help'")
            sub.add_parser(ep.name, help=summary, add_help=False)


def _unavailable(name: str, exc: Exception):
    def handler(args: argparse.Namespace) -> int:
        log.error("'fixative %s' needs packages that are not installed (%s); try: pip install 'fixative[%s]'",
                  name, exc, name)
        return 2

    return handler


def parse_protect_args(argv: list[str]) -> argparse.Namespace:
    """Parse the arguments of ``fixative protect`` (``argv`` without the word ``protect``).

    Apps that run protections in-process (the GUI) build their runs with this and
    :func:`protect_options`, so a run there and the same command line give the same files.
    Bad usage raises :class:`ConfigError` with argparse's message (instead of exiting).
    """
    from fixative.errors import ConfigError

    parser = _build_parser(["protect"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    protect_parser = sub.choices["protect"]

    def fail(message: str):
        raise ConfigError(f"fixative protect: {message}")

    protect_parser.error = fail  # type: ignore[method-assign]
    return parser.parse_args(["protect", *argv])


def protect_options(args: argparse.Namespace, *, target_maker=None):
    """The :class:`~fixative.batch.runner.BatchOptions` of a parsed ``protect`` command line.

    ``target_maker``: a :class:`~fixative.targets.made.TargetMaker` to reuse for made targets (an app keeps
    one between runs so the generator loads once); by default a new one is made for the run.
    """
    from fixative.batch.runner import BatchOptions, parse_shard
    from fixative.presets import effort_for, like_jpeg_for, robust_for_quality
    from fixative.provenance.identity import find_identity

    steps, seconds = effort_for(args.quality, args.steps, args.seconds)
    return BatchOptions(
        inputs=list(args.inputs), out=args.out, target=args.target, mode=args.mode, objective=args.objective,
        encoders=args.encoders or ["taef2"], budget=args.budget,
        like_jpeg=like_jpeg_for(args.intensity, args.like_jpeg), steps=steps,
        seconds=seconds, seed=args.seed, method=args.method, precision=args.precision,
        linf=args.linf,
        lpips_net=args.lpips_net, tile_size=args.tile_size, device=args.device, models_dir=args.models_dir,
        format=args.format, jpeg_quality=args.jpeg_quality, max_pixels=args.max_pixels,
        recursive=args.recursive, shard=parse_shard(args.shard) if args.shard else None, quiet=args.quiet,
        target_options=target_flags.batch_target_options(args, maker=target_maker),
        check_encoders=args.check_encoders, tile_batch=args.tile_batch,
        robust=robust_for_quality(args.quality, args.robust, DEFAULT_ROBUST), platform=args.platform,
        views=args.views,
        absolute_paths=getattr(args, "absolute_paths", False),
        opt_out=args.opt_out, identity=None if args.no_credentials else find_identity(args.identity),
    )


def _protect(args: argparse.Namespace) -> int:
    from fixative.batch.runner import run_batch
    from fixative.provenance.identity import identity_summary

    opts = protect_options(args)
    if opts.identity is not None:
        log.info("signing Content Credentials as %s", identity_summary(opts.identity))
    elif not args.no_credentials and not args.quiet:
        log.info("outputs carry the opt-out (%s) but are not signed: you have no signing identity yet "
                 "(fixative identity create --name \"Your Name\")", opts.opt_out)
    hooks = None
    if not args.quiet:  # time up front: measured on this machine (cached), before a long run
        from fixative.batch.timing import announce

        hooks = announce(opts)
    summary = run_batch(opts, hooks)
    if not summary.report:  # a non-main process of an accelerate run: the main one reports
        return 0
    done, skipped, failed = (summary.count(s) for s in ("done", "skipped", "failed"))
    shard = f" (shard {summary.shard})" if summary.shard else ""
    line = f"{done} protected, {skipped} already done, {failed} failed{shard}; outputs and records in {summary.out}"
    if failed:
        log.warning("%s", line)
        log.warning("failures:")
        for failure in summary.failures:
            log.warning("  %s: %s", failure.input, failure.reason)
    else:
        log.info("%s", line)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    return summary.exit_code


def _verify(args: argparse.Namespace) -> int:
    from fixative.provenance.manifest import verify

    report = verify(args.folder, anchors=identity_commands.trust_anchors(args.trust),
                    require_trusted=args.require_trusted)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for problem in report.problems:
            print(problem.line())
        if not args.quiet:
            for line in identity_commands.signature_lines(report):
                print(line)
        if report.ok:
            if not args.quiet:
                print(f"OK: {report.checked} outputs in {args.folder} match their records")
        else:
            print(f"FAILED: {len(report.problems)} problem(s) in {args.folder} ({report.checked} outputs recorded)")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fixative`` console script."""
    args = _build_parser(argv).parse_args(argv)
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("PIL").setLevel(logging.INFO)  # its chunk-by-chunk debug lines are noise here
    signals: list[int] = []
    previous = _on_sigterm(signals)
    try:
        return args.handler(args)
    except FixativeError as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt as exc:
        # the batch says what it saved; a subcommand may say what an interruption keeps (``interrupted``)
        said = str(exc) or getattr(args, "interrupted", "finished images are saved; rerun to do the rest")
        log.error("interrupted%s: %s", " (SIGTERM)" if signals else "", said)
        return 128 + (signals[0] if signals else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signals: list[int]):
    """Make SIGTERM stop a command as Ctrl+C does (what is saved is said, nothing half-written is left);
    returns the previous handler (None where no handler can be set: not the main thread)."""

    def stop(signum, frame):
        signals.append(signum)
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):  # not the main thread (an app calling main())
        return None


if __name__ == "__main__":
    sys.exit(main())
