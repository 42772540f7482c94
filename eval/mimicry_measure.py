"""Measuring what the fine-tuned models learned: style similarity of their generations to the held-out
references (CLIP cosine or VGG16 Gram distance, per seed, with 95% t-intervals) and the attack
success of concept poisoning (the share of the concept prompt's generations labelled as the anchor)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from fixative.errors import ConfigError, FixativeError
from fixative.eval.generate import Sampler, SampleSettings
from fixative.eval.mimicry_data import StylePlan
from fixative.files.images import load_image, save_png
from fixative.models.store import ModelStore

if TYPE_CHECKING:
    from fixative.eval.mimicry import ExperimentSettings

log = logging.getLogger(__name__)


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


def style_part(s: ExperimentSettings, plan: StylePlan, sampler: Sampler, sample: SampleSettings, runs: dict,
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


def poison_part(s: ExperimentSettings, sampler: Sampler, sample: SampleSettings, runs: dict,
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
