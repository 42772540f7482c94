"""The fine-tuning experiments: style mimicry (Glaze's test) and concept poisoning (Nightshade's).

**Style mimicry.** The artist's clean images and their protected copies (paired by file name) are
split into training images and held-out clean references (``--heldout DIR``, else the last
``--holdout K`` clean images by name, which are then left out of every training set). One
fine-tune is trained on the clean training images, one on their protected copies, with the same
captions (those of the clean files), seeds and steps; optionally more on the protected copies
after a purification (``--purify``: the countermeasures of the strength evaluation, e.g. IMPRESS or
noisy upscaling: "robust mimicry"). Every model (the base model with the LoRA unloaded, and each
fine-tune) then draws the same prompts (default: the held-out images' captions) with the same seeds.
Style similarity of a generation to the held-out references is the mean cosine similarity of CLIP
image embeddings (when a CLIP model is available; higher = closer) or the mean VGG16 Gram-matrix
distance (lower = closer), averaged over prompts and references: one value per seed. The report
gives each model's mean with a 95% t-interval over seeds, and the protected-minus-clean difference
paired by seed. A protection works when the protected-trained model is further from the artist's
style than the clean-trained one.

**Concept poisoning.** For each N of a sweep, a fine-tune on N poisoned images captioned with the
concept (``"a photo of a {concept}"``) mixed with clean images of other concepts (``--other DIR``,
their own captions). Each model draws the concept prompt with ``--poison-images`` K images per seed
s (generator seeds s*1000 + 0..K-1);
an image counts as an attack success when the classifier (CLIP zero-shot over [concept, anchor, ...]
when available, else the ImageNet classifier with the anchor's ImageNet classes) labels it as the
anchor. The report gives the share per N with a 95% t-interval over seeds.

Variation over seeds is over *generation* seeds: each set is trained once (with ``--seed``); rerun
with other ``--seed`` values for the variance of training.

This module holds the settings and :func:`run_experiment`; the data sets are built in
:mod:`fixative.eval.mimicry_data`, the generations measured in :mod:`fixative.eval.mimicry_measure`.
"""

from __future__ import annotations

import gc
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fixative.errors import ConfigError
from fixative.eval.captions import DEFAULT_TEMPLATE, Example
from fixative.eval.finetune import FinetuneResult, FinetuneSettings, make_accelerator, train
from fixative.eval.generate import Sampler, SampleSettings
from fixative.eval.mimicry_data import PURIFIERS, StylePlan, make_purifier, plan_poison, plan_style, purify_examples
from fixative.eval.mimicry_measure import StyleScorer, mean_ci, poison_part, style_part
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

__all__ = ["CONCEPT_TEMPLATE", "PURIFIERS", "ExperimentSettings", "StylePlan", "StyleScorer", "mean_ci",
           "plan_poison", "plan_style", "run_experiment"]

CONCEPT_TEMPLATE = "a photo of a {}"


@dataclass
class ExperimentSettings:
    """Everything ``fixative eval mimicry`` needs. See the module docstring for the protocol.

    Style part (``clean`` and ``protected`` folders): ``heldout`` folder or ``holdout`` count (default:
    a quarter of the clean images, at least 1), ``captions`` (a file or ``auto``), ``prompts``
    (default: the held-out images' captions), ``style_model`` (``auto``, ``gram`` or a CLIP folder),
    ``purify`` (names from :data:`PURIFIERS`). Poisoning part (``poisoned`` folder): ``concept``,
    ``anchor``, ``other`` (clean images of other concepts), ``poison_counts`` (the sweep of N; default
    0, half and all of the poisoned images), ``poison_images`` per seed, ``classifier`` and
    ``anchor_classes`` (ImageNet class names counted as the anchor; default: those containing the
    anchor word). ``seeds``: generation seeds (the confidence intervals are over them).
    """

    finetune: FinetuneSettings
    out: Path
    clean: Path | None = None
    protected: Path | None = None
    heldout: Path | None = None
    holdout: int | None = None
    captions: str = "auto"
    caption_template: str = DEFAULT_TEMPLATE
    prompts: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sample: SampleSettings = field(default_factory=SampleSettings)
    style_model: str = "auto"
    purify: list[str] = field(default_factory=list)
    purifier: str | None = None
    impress_steps: int = 30
    poisoned: Path | None = None
    concept: str | None = None
    anchor: str | None = None
    other: Path | None = None
    other_captions: str = "auto"
    poison_counts: list[int] | None = None
    poison_images: int = 4
    concept_template: str = CONCEPT_TEMPLATE
    classifier: str = "auto"
    anchor_classes: list[str] | None = None

    def check(self) -> None:
        style = self.clean is not None or self.protected is not None
        if style and (self.clean is None or self.protected is None):
            raise ConfigError("the style experiment needs both --clean and --protected")
        if not style and self.poisoned is None:
            raise ConfigError("nothing to do: give --clean and --protected (style mimicry) and/or --poisoned "
                              "(concept poisoning)")
        if self.poisoned is not None and not (self.concept and self.anchor and self.other):
            raise ConfigError("concept poisoning needs --concept, --anchor and --other (clean images of other "
                              "concepts to mix the poison into)")
        if not self.seeds:
            raise ConfigError("--seeds needs at least one seed")
        for name in self.purify:
            if name not in PURIFIERS and not re.fullmatch(r"jpeg\d{1,3}", name):
                raise ConfigError(f"--purify {name}: choose from {', '.join(PURIFIERS)} (or jpegQ)")
        if self.poison_images < 1:
            raise ConfigError("--poison-images must be at least 1")
        self.finetune.check()
        self.sample.check()


# --- the experiment ------------------------------------------------------------------------------


def _run_summary(res: FinetuneResult, kind: str, data: str, n_images: int) -> dict:
    return {"kind": kind, "data": data, "images": n_images, "out": str(res.out), "weights": str(res.weights),
            "steps": res.steps, "resumed_from": res.resumed_from, "skipped": res.skipped,
            "seconds": round(res.seconds, 2), "final_loss": res.losses[-1]["loss"] if res.losses else None,
            "loss": [[r["step"], r["loss"]] for r in res.losses],
            "trainable_parameters": res.record.get("trainable_parameters")}


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_experiment(s: ExperimentSettings) -> dict | None:
    """Train, generate and measure; returns the report dict (None on non-main processes of a launch)."""
    s.check()
    out = Path(s.out)
    store = ModelStore(s.finetune.models_dir)
    accelerator = make_accelerator(s.finetune)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
    style_plan = plan_style(s) if s.clean is not None else None
    poison_plans = plan_poison(s) if s.poisoned is not None else None

    trainings: list[tuple[str, str, str, list[Example]]] = []  # (run name, kind, data label, examples)
    if style_plan is not None:
        trainings += [("clean", "style", f"clean ({s.clean})", style_plan.clean),
                      ("protected", "style", f"protected ({s.protected})", style_plan.protected)]
        for name in s.purify:
            dest = out / "data" / f"purified-{name}"
            if main:
                purifier = make_purifier(name, s, store, accelerator.device)
                log.info("purifying %d protected images with %s", len(style_plan.protected),
                         getattr(purifier, "label", name))
                purify_examples(style_plan.protected, purifier, dest)
                del purifier
            accelerator.wait_for_everyone()
            examples = [Example(dest / f"{e.key}.png", e.caption) for e in style_plan.protected
                        if (dest / f"{e.key}.png").is_file()]
            trainings.append((f"purified-{name}", "style", f"protected, then {name}", examples))
    if poison_plans is not None:
        for n, examples in poison_plans.items():
            trainings.append((f"poison-{n}", "poison", f"{n} poisoned + {len(examples) - n} other", examples))

    runs: dict[str, dict] = {}
    for name, kind, data, examples in trainings:
        if main:
            log.info("== fine-tune %r on %s (%d images)", name, data, len(examples))
        res = train(s.finetune, examples, out / "runs" / name, accelerator=accelerator)
        runs[name] = _run_summary(res, kind, data, len(examples))
        _free()
    if not main:
        return None

    device = accelerator.device
    sampler = Sampler.load(s.finetune.model, store=store, device=device)
    sample = SampleSettings(s.sample.steps, s.sample.guidance, s.sample.size or s.finetune.resolution)
    report: dict[str, Any] = {
        "settings": _jsonable(asdict(s)), "runs": runs,
        "generation": {"steps": sample.steps, "guidance": sample.guidance, "size": sample.size,
                       "seeds": list(s.seeds), "device": str(device)},
    }
    if style_plan is not None:
        report["style"] = style_part(s, style_plan, sampler, sample, runs, store, device, out)
    if poison_plans is not None:
        report["poison"] = poison_part(s, sampler, sample, runs, store, device, out)
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
