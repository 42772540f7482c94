"""Figures over all images of a strength evaluation: means of imperceptibility, gain, retention,
concept success and style ratio per condition and encoder (:func:`aggregate`), and the poison
detectors run on mixes of clean and protected images (:func:`stealth`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fixative.eval.detectors import (
    ActivationClustering,
    KNNDistance,
    PoisonDetector,
    SpectralSignature,
    detection_rate_at_fpr,
    roc_auc,
    roc_curve,
)
from fixative.eval.strength_types import IMPERCEPTIBILITY_KEYS, MIN_GAIN, NONE, EncoderEfficacy, ImageResult


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the finite values, or None when there are none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def stats(values: Sequence[float]) -> dict:
    """mean, median, min and max of the finite values (each None when there are none)."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if vals.size == 0:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": float(vals.mean()), "median": float(np.median(vals)), "min": float(vals.min()),
            "max": float(vals.max())}


def aggregate(results: Sequence[ImageResult], names: Sequence[str], conditions: Sequence[str]) -> dict:
    """Means over images: imperceptibility stats; per condition and encoder, gain, retention,
    concept success rate and style ratio; the noise control."""
    out: dict = {"images": len(results), "mode": sorted({r.mode for r in results})}
    out["imperceptibility"] = {k: stats([r.imperceptibility.get(k) for r in results])
                               for k in IMPERCEPTIBILITY_KEYS}
    eff: dict = {}
    for cname in conditions:
        eff[cname] = {}
        for name in names:
            rows = [r.efficacy[cname][name] for r in results if cname in r.efficacy]
            before = [r.efficacy[NONE][name].gain for r in results if cname in r.efficacy]
            eff[cname][name] = _efficacy_entry(rows, before)
    out["efficacy"] = eff
    controls = [r.noise_control for r in results if r.noise_control]
    if controls:
        out["noise_control"] = {
            "lpips_alex": mean([c["lpips_alex"] for c in controls]),
            "encoders": {n: {"ratio": mean([c["encoders"][n]["ratio"] for c in controls]),
                             "gain": mean([c["encoders"][n]["gain"] for c in controls])} for n in names},
        }
    labelled = [r.labels for r in results if r.labels]
    if labelled:
        out["protected_keeps_label"] = mean([float(lab["protected_keeps_label"]) for lab in labelled])
    return out


def _efficacy_entry(rows: Sequence[EncoderEfficacy], before: Sequence[float]) -> dict:
    """One condition and encoder over the images: ratio, gain, retention against the gains ``before``
    (without countermeasure), and the concept and style means where they were measured."""
    gain = mean([e.gain for e in rows])
    gain0 = mean(before)
    entry = {
        "ratio": mean([e.ratio for e in rows]),
        "gain": gain,
        "retention": (gain / gain0) if (gain is not None and gain0 and gain0 > MIN_GAIN) else None,
        "per_image_gain": [e.gain for e in rows],
    }
    concepts = [e.concept for e in rows if e.concept and "success" in e.concept]
    if concepts:
        entry["concept_success"] = mean([float(c["success"]) for c in concepts])
        entry["concept_success_top5"] = mean([float(c["success_top5"]) for c in concepts])
        entry["concept_success_clean_view"] = mean([float(c["clean_view_is_anchor"]) for c in concepts])
        entry["p_anchor_protected_view"] = mean([c["p_anchor_protected_view"] for c in concepts])
        entry["p_anchor_clean_view"] = mean([c["p_anchor_clean_view"] for c in concepts])
    styles = [e.style for e in rows if e.style]
    if styles:
        entry["style_ratio"] = mean([s["ratio"] for s in styles])
        entry["style_closer_to_target"] = mean([float(s["closer_to_target_than_original"]) for s in styles])
    return entry


def stealth(features: Sequence[dict[str, dict]], poison_fraction: float, fpr: float = 0.05) -> dict:
    """Run the detectors on mixes of clean originals and protected images, per feature space.

    Trials: the images are split into chunks of ``poison_fraction`` of them. In each trial the
    set holds the clean originals of *all* images plus the protected versions of one chunk (so
    the poison is a minority and every picture's content is present clean: a detector must find
    the perturbation, not an unusual picture). Each image gives five samples (whole and
    quadrants), grouped by picture (k-NN ignores neighbours from the same picture). ROC-AUC and
    the detection rate at ``fpr`` false positives are computed per trial and averaged.
    """
    n = len(features)
    if n < 2:
        return {"skipped": "the detectors need at least two images"}
    k = max(1, min(n - 1, round(poison_fraction * n)))
    chunks = [list(range(n))[i : i + k] for i in range(0, n, k)]
    spaces = sorted(set().union(*[f.keys() for f in features]))
    out: dict = {"trials": len(chunks), "poisoned_images_per_trial": k, "fpr": fpr,
                 "samples_per_image": None, "spaces": {}}
    for space in spaces:
        out["spaces"][space] = {}
        for det_cls in (KNNDistance, SpectralSignature, ActivationClustering):
            det: PoisonDetector = det_cls(expected_fraction=min(0.5, k / (n + k)))
            trials = [_trial_samples(features, space, chunk) for chunk in chunks]
            for _, _, _, per_image in trials:
                if per_image is not None:
                    out["samples_per_image"] = per_image
            summary = _run_detector(det, [t[:3] for t in trials], fpr)
            if summary is not None:
                out["spaces"][space][det.name] = summary
    return out


def _trial_samples(features: Sequence[dict[str, dict]], space: str, chunk: Sequence[int]
                   ) -> tuple[list[torch.Tensor], list[bool], list[int], int | None]:
    """One trial's samples in ``space``: the clean features of every image and the protected ones of
    ``chunk``. Returns (feature blocks, is-clean per sample, picture per sample, samples per image)."""
    rows, truth, groups, per_image = [], [], [], None
    for i in range(len(features)):
        if space not in features[i]:
            continue
        for kind in (["clean", "protected"] if i in chunk else ["clean"]):
            v = features[i][space][kind]
            rows.append(v)
            truth += [kind == "clean"] * v.shape[0]
            groups += [i] * v.shape[0]
            per_image = int(v.shape[0])
    return rows, truth, groups, per_image


def _run_detector(det: PoisonDetector, trials: Sequence[tuple[list, list[bool], list[int]]], fpr: float
                  ) -> dict | None:
    """A detector over the trials: mean ROC-AUC, detection rate at ``fpr``, the pooled ROC curve and
    its own decisions summed; None when no trial had both clean and protected samples."""
    aucs, rates, pos_all, neg_all, evals = [], [], [], [], []
    for rows, truth, groups in trials:
        if not any(not t for t in truth) or all(not t for t in truth):
            continue
        x = torch.cat(rows)
        s = det.scores(x, groups)
        is_clean = torch.tensor(truth)
        pos, neg = s[~is_clean], s[is_clean]
        aucs.append(roc_auc(pos, neg))
        rates.append(detection_rate_at_fpr(pos, neg, fpr))
        pos_all.append(pos)
        neg_all.append(neg)
        evals.append(det.evaluate_defence(truth, *det.detect_poison(x, groups)))
    if not aucs:
        return None
    fprs, tprs = roc_curve(torch.cat(pos_all), torch.cat(neg_all))
    decision = {key: sum(e[key] for e in evals) for key in
                ("true_positives", "false_positives", "false_negatives", "true_negatives")}
    mean_auc = mean(aucs)
    return {
        "roc_auc": mean_auc,
        "auc_either_direction": max(mean_auc, 1 - mean_auc) if mean_auc is not None else None,
        "detection_rate_at_fpr": mean(rates),
        "per_trial_auc": aucs,
        "pooled_roc": {"fpr": fprs, "tpr": tprs},
        "own_threshold": decision,
    }
