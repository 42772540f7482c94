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
from fixative.cli.common import add_options, int_at_least, positive_int
from fixative.cli.terms import FlagTerms, error_line
from fixative.defaults import DEFAULT_FORMAT, DEFAULT_JPEG_QUALITY, DEFAULT_MODE, MAX_PIXELS, OUTPUT_FORMATS
from fixative.errors import FixativeError
from fixative.options import Mode, Objective, OptOutLevel
from fixative.presets import INTENSITIES, QUALITIES

__all__ = ["int_at_least", "main", "output_names", "parse_protect_args", "positive_int", "protect_options"]

log = logging.getLogger("fixative")


def __getattr__(name: str):
    """``sha256_file`` is re-exported (older callers import it from here), loaded only when asked for."""
    if name == "sha256_file":
        from fixative.provenance.manifest import sha256_file

        return sha256_file
    raise AttributeError(name)


def output_names(inputs: list[Path], out_dir: Path, suffix: str = ".png") -> dict[Path, Path]:
    """Deterministic output path per input (see :func:`fixative.batch.outputs.plan_outputs`)."""
    from fixative.batch.inputs import InputItem
    from fixative.batch.outputs import plan_outputs

    jobs = plan_outputs([InputItem(p, Path(p.name)) for p in inputs], out_dir, suffix)
    return {job.input: job.output for job in jobs}


def _add_protect_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("-r", "--recursive", action="store_true", help="take images from subfolders of INPUT folders too")
    p.add_argument("--mode", choices=tuple(m.value for m in Mode), default=DEFAULT_MODE,
                   help="cloak (style, Glaze-like), poison (concept, Nightshade-like): towards --target; "
                        "immunize (PhotoGuard/Mist-like): away from the image's own encoding unless --target "
                        f"is given (default {DEFAULT_MODE})")
    p.add_argument("--target", type=Path, help="target image; resized to each input's size")
    p.add_argument("--objective", choices=tuple(o.value for o in Objective),
                   help="override the mode's objective: towards --target, or away from the image's own")


def _add_protect_strength(p: argparse.ArgumentParser) -> None:
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


def _add_protect_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=tuple(OUTPUT_FORMATS), default=DEFAULT_FORMAT,
                   help="output format: png (lossless, default), webp (lossless), tiff, or jpeg (lossy: "
                        "weakens the protection; the saved file is measured again)")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY,
                   help=f"JPEG quality with --format jpeg (default {DEFAULT_JPEG_QUALITY})")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"refuse images with more pixels than this, before decoding (default {MAX_PIXELS:,})")
    p.add_argument("--shard", metavar="I/N", help="do only the I-th of N shares of the portfolio (1 <= I <= N); "
                                                  "under 'accelerate launch' the shares are set automatically")


def _add_protect_provenance(p: argparse.ArgumentParser) -> None:
    from fixative.defaults import DEFAULT_OPT_OUT

    p.add_argument("--opt-out", choices=tuple(o.value for o in OptOutLevel), default=DEFAULT_OPT_OUT,
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


def _add_protect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect images", description="Protect images, no more visible than a JPEG of "
                       "them (--intensity), or within an LPIPS budget (--budget).")
    _add_protect_inputs(p)
    add_options(p, ["--encoder"])
    _add_protect_strength(p)
    add_options(p, ["--seconds", "--steps", "--seed", "--method", "--linf", "--robust", "--views", "--for"])
    _add_protect_output(p)
    add_options(p, ["--models-dir", "--device", "--precision", "--lpips-net", "--tile-size", "--tile-batch",
                    "--check-encoder"])
    _add_protect_provenance(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on standard output")
    add_options(p, ["--quiet", "--verbose"])
    target_flags.add_arguments(p)
    p.set_defaults(handler=_protect)


def _add_verify(sub: argparse._SubParsersAction) -> None:
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
    add_options(v, ["--verbose"])
    v.set_defaults(handler=_verify)


def _build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``fixative`` parser. ``argv``: the command line about to be parsed; only the plugin command it
    names is built in full (the others stay light placeholders, so ``--help`` loads no heavy module)."""
    from fixative.cli.models import register as register_models
    from fixative.cli.suggest import SuggestingParser

    parser = SuggestingParser(prog="fixative", description="Protect artwork against generative-AI mimicry.")
    parser.add_argument("--version", action="version", version=f"fixative {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_protect(sub)
    _add_verify(sub)
    identity_commands.register(sub)
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
    """The :class:`~fixative.options.ProtectOptions` of a parsed ``protect`` command line (checked).

    ``target_maker``: a :class:`~fixative.targets.made.TargetMaker` to reuse for made targets (an app keeps
    one between runs so the generator loads once); by default the batch makes one for the run.
    """
    from fixative.batch.shards import parse_shard
    from fixative.options import ModelOptions, OutputOptions, ProtectOptions, SearchOptions
    from fixative.provenance.identity import find_identity

    search = SearchOptions.from_presets(
        intensity=args.intensity, quality=args.quality, steps=args.steps, seconds=args.seconds,
        like_jpeg=args.like_jpeg, robust=args.robust, budget=args.budget, seed=args.seed, method=args.method,
        precision=args.precision, linf=args.linf, platform=args.platform, views=args.views,
        tile_size=args.tile_size, tile_batch=args.tile_batch)
    models = ModelOptions(encoders=tuple(args.encoders or ModelOptions().encoders),
                          check_encoders=tuple(args.check_encoders), lpips_net=args.lpips_net,
                          models_dir=args.models_dir, device=args.device)
    output = OutputOptions(
        out=args.out, format=args.format, jpeg_quality=args.jpeg_quality, max_pixels=args.max_pixels,
        recursive=args.recursive, shard=parse_shard(args.shard) if args.shard else None,
        absolute_paths=getattr(args, "absolute_paths", False), opt_out=args.opt_out,
        identity=None if args.no_credentials else find_identity(args.identity))
    return ProtectOptions(inputs=tuple(args.inputs), output=output, search=search, models=models,
                          target=target_flags.target_spec(args, maker=target_maker), quiet=args.quiet).check()


#: for tests of interruption: ``IMAGE:STEP[:SIGNAL]`` makes ``fixative protect`` send itself SIGNAL (a
#: name, default KILL) at search step STEP (from 1) of image IMAGE (from 0): a fault-injection point
FAULT_ENV = "FIXATIVE_TEST_SIGNAL_AT"


def _fault_hooks(hooks):
    """``hooks`` with the :data:`FAULT_ENV` fault-injection point added, when that variable is set."""
    import os

    at = os.environ.get(FAULT_ENV)
    if not at:
        return hooks
    from fixative.batch.runner import BatchHooks

    image, step, *name = at.split(":")
    signum = getattr(signal, f"SIG{(name or ['KILL'])[0].upper()}")
    hooks = hooks or BatchHooks()
    current = {"image": -1}

    def on_image(index: int, count: int, job) -> None:
        current["image"] = index

    def on_step(job, info) -> None:
        if current["image"] == int(image) and info.step >= int(step):
            os.kill(os.getpid(), signum)

    hooks.on_image, hooks.on_step = on_image, on_step
    return hooks


def _protect(args: argparse.Namespace) -> int:
    from fixative.batch.runner import run_batch
    from fixative.models.loading import ProtectorCache
    from fixative.provenance.identity import identity_summary

    opts = protect_options(args)
    if opts.output.identity is not None:
        log.info("signing Content Credentials as %s", identity_summary(opts.output.identity))
    elif not args.no_credentials and not args.quiet:
        log.info("outputs carry the opt-out (%s) but are not signed: you have no signing identity yet "
                 "(fixative identity create --name \"Your Name\")", opts.output.opt_out)
    cache = ProtectorCache()
    if not args.quiet:  # time up front: measured on this machine (cached), before a long run
        from fixative.batch.timing import announce

        announce(opts, cache)
    summary = run_batch(opts, _fault_hooks(None), cache=cache)
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
    terms = FlagTerms()
    for handler in logging.getLogger().handlers:  # the library's lines in this command's flags
        handler.addFilter(terms)
    signals: list[int] = []
    previous = _on_sigterm(signals)
    try:
        return args.handler(args)
    except FixativeError as exc:
        log.error("error: %s", error_line(exc, getattr(args, "flags", None)))
        return 2
    except KeyboardInterrupt as exc:
        # the batch says what it saved; a subcommand may say what an interruption keeps (``interrupted``)
        said = str(exc) or getattr(args, "interrupted", "finished images are saved; rerun to do the rest")
        log.error("interrupted%s: %s", " (SIGTERM)" if signals else "", said)
        return 128 + (signals[0] if signals else signal.SIGINT)
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(terms)
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
