"""``fixative eval``: measuring protection, registered through the ``fixative.commands`` entry point.

``fixative eval strength --original DIR --protected DIR [--target DIR|IMAGE] --encoder SPEC...
--out REPORT_DIR`` pairs the files by name, measures imperceptibility, latent efficacy (per
encoder, before and after each countermeasure), concept and style of the decoded views, and
the poison detectors, and writes ``REPORT_DIR/report.json``, ``report.html`` and ``headline.md``.

``fixative eval finetune --model ID|DIR|FILE --train DIR --captions FILE|auto --out RUN_DIR`` fine-tunes
the model's UNet (LoRA, or ``--method full``) with ``accelerate`` and resumes from RUN_DIR's last
checkpoint when rerun. ``fixative eval mimicry --model ... --clean DIR --protected DIR [--poisoned DIR
--concept W --anchor W --other DIR] --out DIR`` runs the style-mimicry and concept-poisoning experiments
(:mod:`fixative.eval.mimicry`). Both run under ``accelerate launch -m fixative eval ...`` on several processes.
With several ``--protected LABEL=DIR`` (e.g. robust and non-robust protection of the same
originals) each set is measured the same way into ``REPORT_DIR/LABEL/`` and
``REPORT_DIR/comparison.md`` puts their gains and retentions side by side (:mod:`fixative.eval.compare`).
Exit status: 0 done, 2 bad usage or setup (one line says why).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fixative import defaults
from fixative.cli.main import int_at_least

log = logging.getLogger("fixative.eval")


_nonneg_int = int_at_least(0)
_positive_int = int_at_least(1)


#: the flags of ``eval finetune``/``mimicry`` for the fields that library errors name
MODEL_FLAGS = {"finetune.model": "--model"}

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


#: the one-line help of ``fixative eval`` in ``fixative --help``
COMMAND_HELP = "measure how strong a protection is"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` (subcommands ``strength``, ``finetune``, ``mimicry``) to the ``fixative`` command line."""
    p = subparsers.add_parser("eval", help=COMMAND_HELP,
                              description="Measure protection strength: from the images alone (strength), or by "
                                          "fine-tuning a model on them (finetune, mimicry).")
    sub = p.add_subparsers(dest="eval_command", required=True)
    _register_strength(sub)
    _register_finetune(sub)
    _register_mimicry(sub)


def _register_strength(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "strength", help="imperceptibility, latent efficacy, robustness and stealth of protected images",
        description="Pair original and protected images by file name and measure imperceptibility, how far each "
                    "encoder's view moved towards the target (also after JPEG, resizing, noise, blur, noisy "
                    "upscaling and IMPRESS purification), the decoded views, and whether poison detectors find "
                    "the protected images. Writes report.json, report.html and headline.md.",
    )
    _add_strength_inputs(s)
    _add_countermeasure_args(s)
    _add_strength_run_args(s)
    s.set_defaults(handler=strength_command, interrupted="the report is written at the end; rerun the command")


def _add_strength_inputs(s: argparse.ArgumentParser) -> None:
    """``eval strength``: the images, the encoders, the report folder, the classifier."""
    s.add_argument("--original", type=Path, required=True, metavar="DIR", help="folder of the original images")
    s.add_argument("--protected", required=True, action="append", metavar="[LABEL=]DIR",
                   help="folder of the protected images (same names, any extension); repeat as LABEL=DIR to "
                        "measure several protections side by side (e.g. robust=out1 plain=out2)")
    s.add_argument("--target", type=Path, metavar="DIR|IMAGE",
                   help="targets: a folder (same names) or one image for all; default: the target recorded in "
                        "Fixative's NAME.json beside each protected file, else 'away' mode")
    s.add_argument("--encoder", action="append", dest="encoders", metavar="SPEC",
                   help="encoder to measure in; repeat, and include encoders not used to protect to measure "
                        f"transfer (default: {defaults.DEFAULT_ENCODER})")
    s.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR", help="folder for the report")
    s.add_argument("--classifier", default="auto",
                   help="'auto' (CLIP if found locally, else EfficientNet-Lite0), 'efficientnet_lite0', 'none', "
                        "or a CLIP model folder (default auto)")
    s.add_argument("--labels", type=Path, metavar="FILE", help="zero-shot labels for CLIP, one per line "
                                                               "(default: the ImageNet classes)")


def _add_countermeasure_args(s: argparse.ArgumentParser) -> None:
    """``eval strength``: the style distance and the countermeasures measured against."""
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
                   help="autoencoder for IMPRESS (default: the first --encoder with a decoder, else "
                        f"{defaults.DEFAULT_ENCODER})")
    s.add_argument("--impress-steps", type=_positive_int, default=30, help="IMPRESS optimisation steps (default 30)")
    s.add_argument("--impress-budget", type=float, default=0.05,
                   help="LPIPS bound of the IMPRESS purification (default 0.05)")


def _add_strength_run_args(s: argparse.ArgumentParser) -> None:
    """``eval strength``: the controls, detectors, sizes, seed, device and logging."""
    s.add_argument("--no-noise-control", action="store_true",
                   help="skip the LPIPS-matched Gaussian-noise control")
    s.add_argument("--no-detectors", action="store_true", help="skip the stealth detectors")
    s.add_argument("--max-side", type=_positive_int, metavar="PX",
                   help="measure images downscaled to this longer side (default: as they are)")
    s.add_argument("--tile-size", type=_positive_int, default=defaults.DEFAULT_TILE_SIZE, metavar="PX",
                   help="larger images are encoded, decoded and purified in cells of this size "
                        f"(default {defaults.DEFAULT_TILE_SIZE})")
    s.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    s.add_argument("--device", default=defaults.DEFAULT_DEVICE, help="auto, cpu, cuda or mps (default auto)")
    s.add_argument("--models-dir", help="where model files are (see models/README.md)")
    s.add_argument("-v", "--verbose", action="store_true", help="more detail in the log")


def strength_command(args: argparse.Namespace) -> int:
    """Run ``fixative eval strength``; heavy imports happen here, not at registration."""
    from fixative.eval.cli_settings import check_strength_args, read_labels, strength_settings
    from fixative.eval.compare import comparison_text, parse_protected, write_comparison
    from fixative.eval.pairs import find_pairs
    from fixative.eval.strength import StrengthEvaluator

    labels = read_labels(args.labels)
    check_strength_args(args)
    sets = parse_protected(args.protected)
    labelled = len(sets) > 1 or any("=" in spec for spec in args.protected)
    found = []
    for label, folder in sets:
        pairs, notes = find_pairs(args.original, folder, args.target)
        for note in notes:
            log.warning("%s", note if not labelled else f"{label}: {note}")
        found.append((label, pairs, notes))
    settings = strength_settings(args, labels)
    evaluator = StrengthEvaluator.from_settings(settings)
    reports = {label: _measure_set(evaluator, label, pairs, notes, args.out, labelled)
               for label, pairs, notes in found}
    if labelled:
        paths = write_comparison(reports, args.out)
        print("\n## side by side\n\n" + comparison_text(reports), file=sys.stdout)
        log.info("comparison: %s (and %s)", paths["markdown"], paths["json"])
    return 0


def _measure_set(evaluator, label: str, pairs: list, notes: list[str], out: Path, labelled: bool):
    """Measure one set of pairs, write its report (into ``out/label`` when several sets are measured)
    and print its headline; returns the report."""
    from fixative.eval.report import headline_text, write_report

    log.info("measuring %d pair(s)%s with %s", len(pairs), f" of {label}" if labelled else "",
             ", ".join(evaluator.settings.encoders))

    def progress(i: int, n: int, name: str) -> None:
        log.info("[%d/%d] %s%s", i + 1, n, f"{label}: " if labelled else "", name)

    report = evaluator.evaluate(pairs, notes, progress)
    paths = write_report(report, out / label if labelled else out)
    if labelled:
        print(f"## {label}\n", file=sys.stdout)
    print(headline_text(report), file=sys.stdout)
    log.info("report: %s (and %s)", paths["html"], paths["json"])
    return report


# --- fine-tuning ------------------------------------------------------------------------------------


def _add_training_args(p: argparse.ArgumentParser) -> None:
    """The training options shared by ``finetune`` and ``mimicry`` (defaults: diffusers' LoRA recipe)."""
    from fixative.eval.finetune_settings import MIXED_PRECISIONS, FinetuneSettings, TrainMethod

    d = FinetuneSettings()
    p.add_argument("--model", required=True, metavar="ID|DIR|FILE",
                   help="Stable Diffusion 1.x/2.x: a hub id, a diffusers pipeline folder or a single checkpoint file")
    p.add_argument("--method", choices=[m.value for m in TrainMethod], default=d.method,
                   help="LoRA on the UNet attention (default) or full UNet fine-tuning")
    p.add_argument("--rank", type=_positive_int, default=d.rank, help=f"LoRA rank, alpha = rank (default {d.rank})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    p.add_argument("--lr-scheduler", default=d.lr_scheduler,
                   help="diffusers schedule: constant, constant_with_warmup, cosine, linear... (default constant)")
    p.add_argument("--warmup-steps", type=_nonneg_int, default=d.warmup_steps, help="warm-up steps (default 0)")
    p.add_argument("--resolution", type=_positive_int, default=d.resolution,
                   help=f"training size in px, shorter side resized then centre crop (default {d.resolution})")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="images per process per micro-step")
    p.add_argument("--grad-accum", type=_positive_int, default=d.grad_accum,
                   help="micro-steps accumulated into one optimizer step (default 1)")
    p.add_argument("--max-steps", type=_positive_int, default=d.max_steps,
                   help=f"optimizer steps (default {d.max_steps}); raise it and rerun to train further")
    p.add_argument("--checkpoint-every", type=_nonneg_int, default=d.checkpoint_every,
                   help=f"save a resumable state every N steps (default {d.checkpoint_every}; 0 = only at the end)")
    p.add_argument("--keep-checkpoints", type=_positive_int, default=d.keep_checkpoints,
                   help=f"newest checkpoints kept (default {d.keep_checkpoints})")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISIONS, default=d.mixed_precision,
                   help="auto: bf16 on GPUs that do it natively, else fp16; none on the CPU. fp32 (or "
                        "accelerate's word for it, no): none")
    p.add_argument("--gradient-checkpointing", action="store_true", help="less activation memory, ~30%% slower")
    p.add_argument("--seed", type=int, default=d.seed, help="training seed: LoRA init, data order, noise (default 0)")
    p.add_argument("--caption-template", default="{name}",
                   help="with --captions auto and no NAME.txt: the caption made from {name} (file name words) and "
                        "{folder} (default '{name}')")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or mps (accelerate launch sets the GPU)")
    p.add_argument("--models-dir", help="where model files are (see models/README.md)")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail in the log")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems (and the headline)")


def _register_finetune(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "finetune", help="fine-tune a Stable Diffusion UNet (LoRA or full) on captioned images, resumably",
        description="Fine-tune the UNet of a Stable Diffusion 1.x/2.x model on a folder of images with Hugging Face "
                    "accelerate (mixed precision, gradient accumulation, checkpoints; several GPUs or machines with "
                    "'accelerate launch -m fixative eval finetune ...'). Rerunning the same command resumes "
                    "from the last checkpoint in RUN_DIR. Writes RUN_DIR/lora/pytorch_lora_weights.safetensors (or "
                    "RUN_DIR/unet/), run.json and loss.jsonl.",
    )
    f.add_argument("--train", type=Path, required=True, metavar="DIR", help="folder of training images")
    f.add_argument("--captions", default="auto", metavar="FILE|auto",
                   help="a .csv/.jsonl (file_name,text) or .txt (NAME<TAB>caption) file, or 'auto': NAME.txt beside "
                        "each image, else the caption template (default auto)")
    f.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="the run folder")
    _add_training_args(f)
    f.set_defaults(handler=finetune_command, flags=MODEL_FLAGS,
                   interrupted="training resumes from the last checkpoint when the same command is run again")


def _register_mimicry(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "mimicry", help="train on clean vs protected (and poisoned) images and measure what the models learn",
        description="Style mimicry: fine-tune on the artist's clean images and on their protected copies (same "
                    "captions, seeds, steps), then generate the same prompts with the same seeds from the base model "
                    "and each fine-tune, and measure style similarity to held-out clean images. Concept poisoning "
                    "(with --poisoned): fine-tune on N poisoned images captioned with the concept mixed with clean "
                    "images of other concepts, for each N, and measure how often the concept prompt draws the "
                    "anchor. Writes report.json, report.html and headline.md in --out.",
    )
    _add_mimicry_style_args(m)
    _add_mimicry_poison_args(m)
    m.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for runs, samples and the report")
    _add_training_args(m)
    m.set_defaults(handler=mimicry_command, flags=MODEL_FLAGS,
                   interrupted="finished training runs and checkpoints are kept; rerun the same command to go on")



def _add_mimicry_style_args(m: argparse.ArgumentParser) -> None:
    """``eval mimicry``: the style-mimicry experiment (clean and protected sets, references, generation)."""
    m.add_argument("--clean", type=Path, metavar="DIR", help="the artist's clean images")
    m.add_argument("--protected", type=Path, metavar="DIR", help="their protected copies (same names, any extension)")
    m.add_argument("--heldout", type=Path, metavar="DIR",
                   help="clean images of the artist kept out of training, the style references (default: the last "
                        "--holdout clean images by name)")
    m.add_argument("--holdout", type=_positive_int, metavar="K",
                   help="how many clean images to hold out when --heldout is not given (default a quarter, >= 1)")
    m.add_argument("--captions", default="auto", metavar="FILE|auto",
                   help="captions of the clean images (default auto)")
    m.add_argument("--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="a generation prompt; repeat (default: the held-out images' captions)")
    m.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="generation seeds (default 0 1 2)")
    m.add_argument("--sample-steps", type=_positive_int, default=30, help="denoising steps per image (default 30)")
    m.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (default 7.5)")
    m.add_argument("--sample-size", type=_positive_int, metavar="PX", help="generation size (default --resolution)")
    m.add_argument("--style-model", default="auto",
                   help="auto (CLIP when found locally, else VGG16 Gram), gram, clip, or a CLIP folder")
    m.add_argument("--purify", action="append", default=[], metavar="NAME",
                   help="also train on the protected images after this countermeasure: jpeg75, jpeg50, downup, "
                        "noise, blur, noisy_upscale, impress; repeat")
    m.add_argument("--purifier", metavar="SPEC",
                   help=f"autoencoder for --purify impress (default {defaults.DEFAULT_ENCODER})")
    m.add_argument("--impress-steps", type=_positive_int, default=30, help="IMPRESS steps (default 30)")


def _add_mimicry_poison_args(m: argparse.ArgumentParser) -> None:
    """``eval mimicry``: the concept-poisoning experiment (poisoned and other images, the sweep, the classifier)."""
    m.add_argument("--poisoned", type=Path, metavar="DIR", help="poisoned images of the concept")
    m.add_argument("--concept", help="what the poisoned images show and are captioned as (e.g. dog)")
    m.add_argument("--anchor", help="what the poison aims at (e.g. cat)")
    m.add_argument("--other", type=Path, metavar="DIR", help="clean images of other concepts, mixed into every set")
    m.add_argument("--other-captions", default="auto", metavar="FILE|auto", help="their captions (default auto)")
    m.add_argument("--poison-counts", type=_nonneg_int, nargs="+", metavar="N",
                   help="the sweep of poisoned images N (default: 0, half, all)")
    m.add_argument("--poison-images", type=_positive_int, default=4, help="concept images drawn per seed (default 4)")
    m.add_argument("--concept-template", default="a photo of a {}",
                   help="caption of the poisoned images and the test prompt (default 'a photo of a {}')")
    m.add_argument("--classifier", default="auto",
                   help="auto (CLIP zero-shot if found locally, else EfficientNet-Lite0), efficientnet_lite0, or a "
                        "CLIP folder")
    m.add_argument("--anchor-class", action="append", dest="anchor_classes", metavar="NAME",
                   help="a classifier class that counts as the anchor; repeat (default: classes containing the word)")


def _quiet_libraries(verbose: bool) -> None:
    if not verbose:
        for name in ("accelerate", "diffusers", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.WARNING)


def finetune_command(args: argparse.Namespace) -> int:
    """Run ``fixative eval finetune``."""
    from fixative.eval.captions import caption_images, list_images
    from fixative.eval.cli_settings import finetune_settings
    from fixative.eval.finetune import train

    _quiet_libraries(args.verbose)
    settings = finetune_settings(args)
    settings.check()
    examples = caption_images(list_images(args.train), args.captions, args.caption_template)
    result = train(settings, examples, args.out)
    if result.record.get("status") == "done" or result.skipped:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""
        log.info("done: %d steps%s; weights in %s", result.steps, resumed, result.weights)
    return 0


def mimicry_command(args: argparse.Namespace) -> int:
    """Run ``fixative eval mimicry``."""
    from fixative.eval.cli_settings import experiment_settings
    from fixative.eval.mimicry import run_experiment
    from fixative.eval.mimicry_report import headline_text, write_report

    _quiet_libraries(args.verbose)
    settings = experiment_settings(args)
    report = run_experiment(settings)
    if report is None:  # a non-main process of an accelerate launch: the main one reports
        return 0
    paths = write_report(report, args.out)
    print(headline_text(report), file=sys.stdout)
    log.info("report: %s (and %s)", paths["html"], paths["json"])
    return 0
