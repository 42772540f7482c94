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
"""

from __future__ import annotations

import gc
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fixative.errors import ConfigError, FixativeError, InputImageError
from fixative.eval.captions import DEFAULT_TEMPLATE, Example, caption_images, list_images
from fixative.eval.finetune import FinetuneResult, FinetuneSettings, make_accelerator, train
from fixative.eval.generate import Sampler, SampleSettings
from fixative.files.images import load_image, save_png
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

PURIFIERS = ("jpeg75", "jpeg50", "downup", "noise", "blur", "noisy_upscale", "impress")
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


# --- statistics ----------------------------------------------------------------------------------


def mean_ci(values: list[float], level: float = 0.95) -> dict:
    """Mean, sample sd, n and the two-sided t confidence interval of the mean (None for n < 2)."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(vals.size)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci95": None}
    mean = float(vals.mean())
    if n < 2:
        return {"mean": mean, "sd": None, "n": n, "ci95": None}
    from scipy import stats

    sd = float(vals.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci95": [mean - half, mean + half]}


# --- style similarity -----------------------------------------------------------------------------


class StyleScorer:
    """Style similarity of images to a set of references: CLIP image-embedding cosine (higher = closer)
    or VGG16 Gram distance (lower = closer)."""

    def __init__(self, kind: str, name: str, model: Any):
        self.kind, self.name, self.model = kind, name, model
        self.higher_is_closer = kind == "clip"

    @classmethod
    def load(cls, spec: str, store: ModelStore, device: torch.device) -> StyleScorer:
        from fixative.eval.classifier import _find_clip, load_classifier
        from fixative.eval.style import StyleDistance

        spec = (spec or "auto").strip()
        if spec in ("auto", "clip"):
            folder = _find_clip(store)
            if folder is not None:
                clip = load_classifier(str(folder), store=store, device=device, labels=["artwork"])
                return cls("clip", f"CLIP image embeddings ({folder})", clip)
            if spec == "clip":
                raise ConfigError("--style-model clip: no CLIP model in the model store or Hugging Face cache")
        if spec in ("auto", "gram"):
            try:
                return cls("gram", "VGG16 Gram-matrix distance (Gatys et al.)", StyleDistance.load(store, device))
            except FixativeError as exc:
                raise ConfigError(f"no style model: no CLIP model found, and {exc}") from exc
        clip = load_classifier(spec, store=store, device=device, labels=["artwork"])
        return cls("clip", f"CLIP image embeddings ({spec})", clip)

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name,
                "direction": "higher = closer to the references" if self.higher_is_closer
                else "lower = closer to the references"}

    @torch.no_grad()
    def score(self, images: Tensor, references: list[Tensor]) -> Tensor:
        """Mean similarity of each image [M,3,H,W] to every reference (each 1x3xHxW, any size): shape [M]."""
        if self.kind == "clip":
            feats = self.model.features(images)
            refs = torch.cat([self.model.features(r) for r in references])
            return (feats @ refs.T).mean(dim=1).cpu()
        grams = self.model.grams(images)
        dists = [self.model.gram_distance(grams, self.model.grams(r)) for r in references]
        return torch.stack(dists, dim=1).mean(dim=1).cpu()


# --- data -----------------------------------------------------------------------------------------


@dataclass
class StylePlan:
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

    (enc,) = load_encoders([s.purifier or "taef2"], store=store, device=device)
    return cm.ImpressPurification(enc, load_perceptual("alex", store=store, device=device),
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


def _save_samples(images: Tensor, dest: Path, prompts: list[str], seeds: list[int]) -> list[list[str]]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(prompts)):
        row = []
        for j, seed in enumerate(seeds):
            p = dest / f"p{i}_s{seed}.png"
            save_png(p, images[i, j : j + 1])
            row.append(str(p))
        paths.append(row)
    return paths


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
        report["style"] = _style_part(s, style_plan, sampler, sample, runs, store, device, out)
    if poison_plans is not None:
        report["poison"] = _poison_part(s, sampler, sample, runs, store, device, out)
    return report


def _style_part(s: ExperimentSettings, plan: StylePlan, sampler: Sampler, sample: SampleSettings, runs: dict,
                store: ModelStore, device: torch.device, out: Path) -> dict:
    scorer = StyleScorer.load(s.style_model, store, device)
    refs = [load_image(p).rgb for p in plan.heldout]
    models = {"base": None} | {n: r["weights"] for n, r in runs.items() if r["kind"] == "style"}
    per_model: dict[str, dict] = {}
    samples: dict[str, list[list[str]]] = {}
    per_seed: dict[str, list[float]] = {}
    for name, weights in models.items():
        log.info("generating %d prompt(s) x %d seed(s) with %s", len(plan.prompts), len(s.seeds), name)
        imgs = sampler.generate(plan.prompts, s.seeds, sample, weights=weights)
        samples[name] = _save_samples(imgs, out / "samples" / name, plan.prompts, s.seeds)
        scores = torch.stack([scorer.score(imgs[:, j], refs) for j in range(len(s.seeds))])  # [seeds, prompts]
        per_seed[name] = [float(v) for v in scores.mean(dim=1)]
        per_model[name] = {**mean_ci(per_seed[name]), "per_seed": per_seed[name],
                           "per_prompt": [float(v) for v in scores.mean(dim=0)]}
    effects = {}
    for name in models:
        if name in ("base", "clean"):
            continue
        diff = [a - b for a, b in zip(per_seed[name], per_seed["clean"], strict=True)]
        effects[f"{name} - clean"] = {**mean_ci(diff), "per_seed": diff}
    return {"metric": scorer.describe(), "prompts": plan.prompts, "heldout": [str(p) for p in plan.heldout],
            "train_clean": [str(e.path) for e in plan.clean], "train_protected": [str(e.path) for e in plan.protected],
            "captions": {e.path.name: e.caption for e in plan.clean}, "models": per_model, "effects": effects,
            "samples": samples}


def _anchor_labels(classifier: Any, word: str, given: list[str] | None) -> list[str]:
    if given:
        for g in given:
            classifier.label_index(g)  # raises naming the unknown class
        return list(given)
    if classifier.kind == "clip-zero-shot":
        return [word]
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    return [lab for lab in classifier.labels if pattern.search(lab)]


def _poison_part(s: ExperimentSettings, sampler: Sampler, sample: SampleSettings, runs: dict,
                 store: ModelStore, device: torch.device, out: Path) -> dict:
    from fixative.eval.classifier import load_classifier

    labels = list(dict.fromkeys([s.concept, s.anchor, *(s.anchor_classes or [])]))
    classifier = load_classifier(s.classifier, store=store, device=device, labels=labels)
    if classifier is None:
        raise ConfigError("concept poisoning needs a classifier (--classifier none was given)")
    anchor_set = _anchor_labels(classifier, s.anchor, s.anchor_classes)
    if not anchor_set:
        raise ConfigError(f"{classifier.name} has no class matching {s.anchor!r}; name the classes that count as the "
                          "anchor with --anchor-class")
    concept_set = _anchor_labels(classifier, s.concept, None)
    prompt = s.concept_template.format(s.concept)
    counts: dict[str, dict] = {}
    samples: dict[str, list[list[str]]] = {}
    for name, run in runs.items():
        if run["kind"] != "poison":
            continue
        n = int(name.removeprefix("poison-"))
        shares, concept_shares, top = [], [], {}
        sample_paths = []
        for seed in s.seeds:
            seeds = [seed * 1000 + j for j in range(s.poison_images)]
            imgs = sampler.generate([prompt], seeds, sample, weights=run["weights"])[0]
            sample_paths += _save_samples(imgs[None], out / "samples" / name, [prompt], seeds)[0]
            pred = classifier.probs(imgs).argmax(dim=1).tolist()
            names = [classifier.labels[i] for i in pred]
            shares.append(sum(lab in anchor_set for lab in names) / len(names))
            concept_shares.append(sum(lab in concept_set for lab in names) / len(names) if concept_set else None)
            for lab in names:
                top[lab] = top.get(lab, 0) + 1
        samples[name] = [sample_paths]
        counts[str(n)] = {"poisoned": n, "images": run["images"], **mean_ci(shares), "per_seed": shares,
                          "concept_share": mean_ci([c for c in concept_shares if c is not None]),
                          "top_labels": dict(sorted(top.items(), key=lambda kv: -kv[1])[:5])}
    return {"concept": s.concept, "anchor": s.anchor, "prompt": prompt, "classifier": classifier.name,
            "anchor_labels": anchor_set, "concept_labels": concept_set, "images_per_seed": s.poison_images,
            "counts": counts, "samples": samples}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
