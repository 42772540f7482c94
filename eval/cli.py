"""``fixative eval``: measuring protection, registered through the ``fixative.commands`` entry point.

``fixative eval strength --original DIR --protected DIR [--target DIR|IMAGE] --encoder SPEC...
--out REPORT_DIR`` pairs the files by name, measures imperceptibility, latent efficacy (per
encoder, before and after each countermeasure), concept and style of the decoded views, and
the poison detectors, and writes ``REPORT_DIR/report.json``, ``report.html`` and ``headline.md``.
With several ``--protected LABEL=DIR`` (e.g. robust and non-robust protection of the same
originals) each set is measured the same way into ``REPORT_DIR/LABEL/`` and
``REPORT_DIR/comparison.md`` puts their gains and retentions side by side (:mod:`eval.compare`).
Exit status: 0 done, 2 bad usage or setup (one line says why).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("fixative.eval")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _pair(first: type, second: type):
    def parse(text: str):
        if text.lower() == "none":
            return None
        a, sep, b = text.partition(":")
        try:
            if not sep:
                raise ValueError
            return first(a), second(b)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected A:B (e.g. 2048:85) or 'none', got {text!r}") from exc

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` (with its ``strength`` subcommand) to the ``fixative`` command line."""
    p = subparsers.add_parser("eval", help="measure how strong a protection is",
                              description="Measure protection strength (no training needed).")
    sub = p.add_subparsers(dest="eval_command", required=True)
    s = sub.add_parser(
        "strength", help="imperceptibility, latent efficacy, robustness and stealth of protected images",
        description="Pair original and protected images by file name and measure imperceptibility, how far each "
                    "encoder's view moved towards the target (also after JPEG, resizing, noise, blur, noisy "
                    "upscaling and IMPRESS purification), the decoded views, and whether poison detectors find "
                    "the protected images. Writes report.json, report.html and headline.md.",
    )
    s.add_argument("--original", type=Path, required=True, metavar="DIR", help="folder of the original images")
    s.add_argument("--protected", required=True, action="append", metavar="[LABEL=]DIR",
                   help="folder of the protected images (same names, any extension); repeat as LABEL=DIR to "
                        "measure several protections side by side (e.g. robust=out1 plain=out2)")
    s.add_argument("--target", type=Path, metavar="DIR|IMAGE",
                   help="targets: a folder (same names) or one image for all; default: the target recorded in "
                        "Fixative's NAME.json beside each protected file, else 'away' mode")
    s.add_argument("--encoder", action="append", dest="encoders", metavar="SPEC",
                   help="encoder to measure in; repeat, and include encoders not used to protect to measure "
                        "transfer (default: taef2)")
    s.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR", help="folder for the report")
    s.add_argument("--classifier", default="auto",
                   help="'auto' (CLIP if found locally, else EfficientNet-Lite0), 'efficientnet_lite0', 'none', "
                        "or a CLIP model folder (default auto)")
    s.add_argument("--labels", type=Path, metavar="FILE", help="zero-shot labels for CLIP, one per line "
                                                               "(default: the ImageNet classes)")
    s.add_argument("--no-style", action="store_true", help="skip the VGG16 Gram style distances")
    s.add_argument("--jpeg", type=int, nargs="+", default=[95, 85, 75, 50], metavar="Q",
                   help="JPEG qualities (default 95 85 75 50)")
    s.add_argument("--noise-sigma", type=float, default=0.03, help="Gaussian noise sigma, 0-1 units (default 0.03)")
    s.add_argument("--blur-sigma", type=float, default=1.0, help="Gaussian blur sigma in pixels (default 1)")
    s.add_argument("--downup", type=float, default=0.5, help="downscale factor before upscaling back (default 0.5)")
    s.add_argument("--noise-downup", type=_pair(float, float), default=(0.05, 0.5), metavar="SIGMA:FACTOR",
                   help="Gaussian noise then downscale-upscale (default 0.05:0.5; 'none' to skip)")
    s.add_argument("--platform", type=_pair(int, int), default=(2048, 85), metavar="LONG_SIDE:QUALITY",
                   help="a platform's upload pipeline: longer side to LONG_SIDE px, then JPEG QUALITY "
                        "(default 2048:85; 'none' to skip)")
    s.add_argument("--upscaler", default="auto",
                   help="noisy upscaling with: 'auto' (the SD x4 upscaler if found locally, else classical), "
                        "'classical', or an SD x4 upscaler folder / hub id")
    s.add_argument("--upscale-sigma", type=float, default=0.05, help="noise sigma of noisy upscaling (default 0.05)")
    s.add_argument("--no-impress", action="store_true", help="skip IMPRESS purification (the slowest part)")
    s.add_argument("--purifier", metavar="SPEC",
                   help="autoencoder for IMPRESS (default: the first --encoder with a decoder, else taef2)")
    s.add_argument("--impress-steps", type=_positive_int, default=30, help="IMPRESS optimisation steps (default 30)")
    s.add_argument("--impress-budget", type=float, default=0.05,
                   help="LPIPS bound of the IMPRESS purification (default 0.05)")
    s.add_argument("--no-noise-control", action="store_true",
                   help="skip the LPIPS-matched Gaussian-noise control")
    s.add_argument("--no-detectors", action="store_true", help="skip the stealth detectors")
    s.add_argument("--max-side", type=_positive_int, metavar="PX",
                   help="measure images downscaled to this longer side (default: as they are)")
    s.add_argument("--tile-size", type=_positive_int, default=1024, metavar="PX",
                   help="larger images are encoded, decoded and purified in cells of this size (default 1024)")
    s.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    s.add_argument("--models-dir", help="where model files are (see models/README.md)")
    s.add_argument("-v", "--verbose", action="store_true", help="more detail in the log")
    s.set_defaults(handler=strength_command)


def strength_command(args: argparse.Namespace) -> int:
    """Run ``fixative eval strength``; heavy imports happen here, not at registration."""
    from eval.compare import comparison_text, parse_protected, write_comparison
    from eval.countermeasures import ImpressSettings
    from eval.pairs import find_pairs
    from eval.report import headline_text, write_report
    from eval.strength import StrengthEvaluator, StrengthSettings
    from protect.errors import ConfigError

    labels = None
    if args.labels is not None:
        try:
            labels = [line.strip() for line in args.labels.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ConfigError(f"--labels {args.labels}: {exc}") from exc
        if not labels:
            raise ConfigError(f"--labels {args.labels}: no labels in the file")
    for q in args.jpeg:
        if not 1 <= q <= 100:
            raise ConfigError(f"--jpeg {q}: qualities are 1-100")
    if not 0 < args.impress_budget < 1:
        raise ConfigError(f"--impress-budget must be between 0 and 1, got {args.impress_budget}")
    if args.platform is not None and (args.platform[0] < 16 or not 1 <= args.platform[1] <= 100):
        raise ConfigError(f"--platform {args.platform[0]}:{args.platform[1]}: the side must be >= 16 px and the "
                          "quality 1-100")
    if args.noise_downup is not None and not 0 < args.noise_downup[1] < 1:
        raise ConfigError(f"--noise-downup: the factor must be in (0, 1), got {args.noise_downup[1]}")
    sets = parse_protected(args.protected)
    labelled = len(sets) > 1 or any("=" in spec for spec in args.protected)
    found = []
    for label, folder in sets:
        pairs, notes = find_pairs(args.original, folder, args.target)
        for note in notes:
            log.warning("%s", note if not labelled else f"{label}: {note}")
        found.append((label, pairs, notes))
    settings = StrengthSettings(
        encoders=args.encoders or ["taef2"], models_dir=args.models_dir, device=args.device,
        classifier=args.classifier, labels=labels, style=not args.no_style, jpeg_qualities=tuple(args.jpeg),
        downup_factor=args.downup, noise_sigma=args.noise_sigma, blur_sigma=args.blur_sigma,
        noisy_upscale_sigma=args.upscale_sigma, upscaler=args.upscaler, impress=not args.no_impress,
        purifier=args.purifier, impress_settings=ImpressSettings(budget=args.impress_budget, steps=args.impress_steps),
        noise_control=not args.no_noise_control, detectors=not args.no_detectors, max_side=args.max_side,
        tile_size=args.tile_size, seed=args.seed, platform=args.platform, noise_downup=args.noise_downup,
    )
    evaluator = StrengthEvaluator.from_settings(settings)
    reports = {}
    for label, pairs, notes in found:
        log.info("measuring %d pair(s)%s with %s", len(pairs), f" of {label}" if labelled else "",
                 ", ".join(settings.encoders))

        def progress(i: int, n: int, name: str, label: str = label) -> None:
            log.info("[%d/%d] %s%s", i + 1, n, f"{label}: " if labelled else "", name)

        report = evaluator.evaluate(pairs, notes, progress)
        paths = write_report(report, args.out / label if labelled else args.out)
        if labelled:
            print(f"## {label}\n", file=sys.stdout)
        print(headline_text(report), file=sys.stdout)
        log.info("report: %s (and %s)", paths["html"], paths["json"])
        reports[label] = report
    if labelled:
        paths = write_comparison(reports, args.out)
        print("\n## side by side\n\n" + comparison_text(reports), file=sys.stdout)
        log.info("comparison: %s (and %s)", paths["markdown"], paths["json"])
    return 0
