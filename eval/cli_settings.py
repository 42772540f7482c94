"""The evaluation's settings from the parsed ``fixative eval`` options (strings become typed settings
here, at the edge) and the range checks argparse does not do. The parsers are in :mod:`fixative.eval.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fixative import defaults
from fixative.errors import ConfigError
from fixative.eval.countermeasures import ImpressSettings
from fixative.eval.finetune import FinetuneSettings
from fixative.eval.generate import SampleSettings
from fixative.eval.mimicry import ExperimentSettings
from fixative.eval.strength import StrengthSettings


def read_labels(path: Path | None) -> list[str] | None:
    """``--labels FILE``: one zero-shot label a line (None without the option)."""
    if path is None:
        return None
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ConfigError(f"--labels {path}: {exc}") from exc
    if not labels:
        raise ConfigError(f"--labels {path}: no labels in the file")
    return labels


def check_strength_args(args: argparse.Namespace) -> None:
    """The ranges argparse does not check: JPEG qualities, the IMPRESS budget, platform and noise-downup."""
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


def strength_settings(args: argparse.Namespace, labels: list[str] | None) -> StrengthSettings:
    """The :class:`~fixative.eval.strength.StrengthSettings` of the parsed options."""
    return StrengthSettings(
        encoders=args.encoders or [defaults.DEFAULT_ENCODER], models_dir=args.models_dir, device=args.device,
        classifier=args.classifier, labels=labels, style=not args.no_style, jpeg_qualities=tuple(args.jpeg),
        downup_factor=args.downup, noise_sigma=args.noise_sigma, blur_sigma=args.blur_sigma,
        noisy_upscale_sigma=args.upscale_sigma, upscaler=args.upscaler, impress=not args.no_impress,
        purifier=args.purifier, impress_settings=ImpressSettings(budget=args.impress_budget, steps=args.impress_steps),
        noise_control=not args.no_noise_control, detectors=not args.no_detectors, max_side=args.max_side,
        tile_size=args.tile_size, seed=args.seed, platform=args.platform, noise_downup=args.noise_downup,
    )


def finetune_settings(args: argparse.Namespace) -> FinetuneSettings:
    """The :class:`~fixative.eval.finetune.FinetuneSettings` of the parsed ``finetune``/``mimicry`` options."""
    return FinetuneSettings(
        model=args.model, method=args.method, rank=args.rank, lr=args.lr, lr_scheduler=args.lr_scheduler,
        warmup_steps=args.warmup_steps, resolution=args.resolution, batch_size=args.batch_size,
        grad_accum=args.grad_accum, max_steps=args.max_steps, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing, seed=args.seed, device=args.device,
        models_dir=args.models_dir,
    )


def experiment_settings(args: argparse.Namespace) -> ExperimentSettings:
    """The :class:`~fixative.eval.mimicry.ExperimentSettings` of the parsed ``mimicry`` options."""
    return ExperimentSettings(
        finetune=finetune_settings(args), out=args.out, clean=args.clean, protected=args.protected,
        heldout=args.heldout, holdout=args.holdout, captions=args.captions, caption_template=args.caption_template,
        prompts=args.prompts, seeds=args.seeds,
        sample=SampleSettings(steps=args.sample_steps, guidance=args.guidance, size=args.sample_size),
        style_model=args.style_model, purify=args.purify, purifier=args.purifier, impress_steps=args.impress_steps,
        poisoned=args.poisoned, concept=args.concept, anchor=args.anchor, other=args.other,
        other_captions=args.other_captions, poison_counts=args.poison_counts, poison_images=args.poison_images,
        concept_template=args.concept_template, classifier=args.classifier, anchor_classes=args.anchor_classes,
    )
