"""The data sets of the fine-tuning experiments: the style plan (clean and protected training sets
paired by name, held-out references, prompts), the poisoning sweep's training sets, and the
purified copies of the protected images ("robust mimicry")."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fixative import defaults
from fixative.errors import ConfigError, InputImageError
from fixative.eval.captions import Example, caption_images, list_images
from fixative.files.images import load_image, save_png
from fixative.models.store import ModelStore
from fixative.options import LpipsNet

if TYPE_CHECKING:
    from fixative.eval.mimicry import ExperimentSettings

log = logging.getLogger(__name__)

PURIFIERS = ("jpeg75", "jpeg50", "downup", "noise", "blur", "noisy_upscale", "impress")
#: the autoencoder IMPRESS uses when ``--purifier`` is not given
DEFAULT_PURIFIER = defaults.DEFAULT_ENCODER


@dataclass
class StylePlan:
    """Training images (``clean``, ``protected``: same stems and captions), held-out references, prompts."""

    clean: list[Example]
    protected: list[Example]
    heldout: list[Path]
    prompts: list[str]


def plan_style(s: ExperimentSettings) -> StylePlan:
    """Training sets (clean, protected: same stems, the clean captions), held-out references and prompts."""
    clean_files = list_images(s.clean)
    protected_files = {p.stem: p for p in list_images(s.protected)}
    if s.heldout is not None:
        heldout = list_images(s.heldout)
        held_stems = {p.stem for p in heldout}
        train_files = [p for p in clean_files if p.stem not in held_stems]
    else:
        k = s.holdout if s.holdout is not None else max(1, len(clean_files) // 4)
        if not 1 <= k < len(clean_files):
            raise ConfigError(f"--holdout {k}: needs 1 to {len(clean_files) - 1} of the {len(clean_files)} "
                              f"clean images in {s.clean} (or give --heldout DIR)")
        heldout, train_files = clean_files[-k:], clean_files[:-k]
    if not train_files:
        raise ConfigError(f"{s.clean}: no clean images left for training after holding out {len(heldout)}")
    missing = [p.name for p in train_files if p.stem not in protected_files]
    if missing:
        raise ConfigError(f"{s.protected}: no protected copy of {', '.join(missing[:5])} (files are paired by name "
                          "without extension)")
    clean = caption_images(train_files, s.captions, s.caption_template)
    protected = [Example(protected_files[e.key], e.caption) for e in clean]
    if s.prompts:
        prompts = list(s.prompts)
    else:
        held_caps = _captions_or_template(heldout, s)
        prompts = list(dict.fromkeys(e.caption for e in held_caps))
    return StylePlan(clean, protected, heldout, prompts)


def _captions_or_template(files: list[Path], s: ExperimentSettings) -> list[Example]:
    try:
        return caption_images(files, s.captions, s.caption_template)
    except ConfigError:  # held-out images from another folder may be absent from the captions file
        return caption_images(files, "auto", s.caption_template)


def plan_poison(s: ExperimentSettings) -> dict[int, list[Example]]:
    """Training set for each N: the other-concept images (own captions) + the first N poisoned images
    (by name) captioned with the concept."""
    poisoned = list_images(s.poisoned)
    others = caption_images(list_images(s.other), s.other_captions, s.caption_template)
    counts = s.poison_counts if s.poison_counts else sorted({0, len(poisoned) // 2, len(poisoned)})
    caption = s.concept_template.format(s.concept)
    plans = {}
    for n in counts:
        if not 0 <= n <= len(poisoned):
            raise ConfigError(f"--poison-counts {n}: {s.poisoned} has {len(poisoned)} images")
        plans[n] = others + [Example(p, caption) for p in poisoned[:n]]
    return plans


def make_purifier(name: str, s: ExperimentSettings, store: ModelStore, device: torch.device):
    """The countermeasure named ``name`` (see :data:`PURIFIERS`), from fixative.eval.countermeasures."""
    from fixative.eval import countermeasures as cm

    if name.startswith("jpeg"):
        return cm.Jpeg(int(name[4:]))
    if name == "downup":
        return cm.DownUp(0.5)
    if name == "noise":
        return cm.GaussianNoise(0.03)
    if name == "blur":
        return cm.GaussianBlur(1.0)
    if name == "noisy_upscale":
        up = cm.load_sd_upscaler(None, store, device)
        return cm.NoisyUpscale(0.05, up[0], upscaler_name=up[1]) if up else cm.NoisyUpscale(0.05)
    from fixative.models.encoders import load_encoders
    from fixative.models.perceptual import load_perceptual

    (enc,) = load_encoders([s.purifier or DEFAULT_PURIFIER], store=store, device=device)
    return cm.ImpressPurification(enc, load_perceptual(LpipsNet.ALEX, store=store, device=device),
                                  cm.ImpressSettings(steps=s.impress_steps))


def purify_examples(examples: list[Example], purifier: Any, dest: Path) -> list[Example]:
    """Apply ``purifier`` to each image and save the result as ``dest/STEM.png`` (originals untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for ex in examples:
        target = dest / f"{ex.key}.png"
        if not target.is_file():
            try:
                rgb = load_image(ex.path).rgb
            except (InputImageError, OSError, ValueError) as exc:
                log.warning("%s: skipped for purification (%s)", ex.path, exc)
                continue
            save_png(target, purifier(rgb, seed=0).clamp(0, 1))
        out.append(Example(target, ex.caption))
    return out
