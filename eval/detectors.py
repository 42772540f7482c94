"""Poison detectors from the data-poisoning literature, to measure how stealthy a protection is.

Each detector scores feature vectors (one per sample; encoder latents or classifier features)
so that a higher score means "more likely poisoned", without being told which samples are.
The interface follows ART's ``art.defences.detector.poison`` detectors, with tensors kept on
their device:

- ``detect_poison(features, groups=None) -> (report, is_clean)`` flags the samples whose score
  is above the detector's own threshold (fit without labels);
- ``evaluate_defence(is_clean_truth, report, is_clean) -> dict`` compares that decision with the truth
  (no result is stored in the detector: unlike ART's, the decision is passed back);
- ``scores(features, groups=None)`` exposes the continuous score, from which
  :func:`roc_auc` and :func:`detection_rate_at_fpr` measure the detector threshold-free.

Detectors:

- :class:`KNNDistance`: mean distance to the k nearest other samples, features standardised
  (an outlier score). ``groups`` (one id per source picture) excludes a sample's own group from
  its neighbours, so crops of one picture do not vouch for each other.
- :class:`SpectralSignature` (Tran et al. 2018): squared projection of the centred features on
  their top singular vector; flags the top ``1.5 * expected_fraction`` of samples.
- :class:`ActivationClustering` (Chen et al. 2019): PCA to a few dimensions, 2-means; the smaller
  cluster is suspect. The score is how much closer a sample is to the smaller cluster's centre
  than to the larger one's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor


def _as_float(features: Tensor) -> Tensor:
    f = torch.as_tensor(features)
    if f.ndim != 2:
        f = f.reshape(f.shape[0], -1)
    return f.double()


def _standardise(f: Tensor) -> Tensor:
    return (f - f.mean(dim=0)) / f.std(dim=0, unbiased=False).clamp_min(1e-8)


class PoisonDetector(ABC):
    """The contract of a detector: :meth:`scores` (continuous, higher = more likely poisoned), :meth:`threshold`
    (the unsupervised cut), and from them :meth:`detect_poison` and :meth:`evaluate_defence`, as ART's
    ``PoisonFilteringDefence`` has them but without stored results: a detector holds only its settings, and
    the decision is passed to :meth:`evaluate_defence` (the same detector can score several sets at once)."""

    name = "detector"

    def __init__(self, expected_fraction: float = 0.15):
        if not 0 < expected_fraction < 1:
            raise ValueError(f"expected_fraction must be in (0, 1), got {expected_fraction}")
        self.expected_fraction = float(expected_fraction)

    @abstractmethod
    def scores(self, features: Tensor, groups: Sequence[int] | None = None) -> Tensor:
        """One score per sample (row of ``features``), higher = more likely poisoned; ``groups``: one id per
        sample, samples of one group being the same source picture."""

    def threshold(self, scores: Tensor) -> float:
        """Unsupervised cut: flag the top ``expected_fraction`` of scores."""
        k = max(1, round(self.expected_fraction * scores.numel()))
        return float(torch.topk(scores, k).values.min())

    def detect_poison(self, features: Tensor, groups: Sequence[int] | None = None) -> tuple[dict, list[bool]]:
        """Score and flag samples. Returns (report, is_clean), ``is_clean[i]`` False = flagged; the report
        (JSON-ready) holds the threshold, the counts and the ``scores``."""
        s = self.scores(features, groups)
        cut = self.threshold(s)
        is_clean = [bool(v < cut) for v in s.tolist()]
        report = {"detector": self.name, "threshold": cut, "flagged": int(sum(not c for c in is_clean)),
                  "samples": len(is_clean), "scores": s.tolist()}
        return report, is_clean

    def evaluate_defence(self, is_clean: Sequence[bool], report: dict, flagged_clean: Sequence[bool]) -> dict:
        """Confusion counts and rates of one :meth:`detect_poison` decision (its ``report`` and
        ``flagged_clean``, its is_clean) against the truth ``is_clean``; ``roc_auc`` from the report's scores."""
        if len(is_clean) != len(flagged_clean):
            raise ValueError("evaluate_defence needs one truth value per sample of the detect_poison decision")
        pairs = list(zip(is_clean, flagged_clean, strict=True))
        tp = sum((not t) and (not p) for t, p in pairs)
        fp = sum(t and (not p) for t, p in pairs)
        fn = sum((not t) and p for t, p in pairs)
        tn = sum(t and p for t, p in pairs)
        out = {"true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
               "tpr": tp / (tp + fn) if tp + fn else None, "fpr": fp / (fp + tn) if fp + tn else None}
        if report.get("scores") is not None:
            scores = torch.tensor(report["scores"])
            out["roc_auc"] = roc_auc(scores[[not c for c in is_clean]], scores[list(is_clean)])
        return out


class KNNDistance(PoisonDetector):
    name = "knn"

    def __init__(self, k: int = 3, expected_fraction: float = 0.15):
        super().__init__(expected_fraction)
        self.k = int(k)

    def scores(self, features: Tensor, groups: Sequence[int] | None = None) -> Tensor:
        f = _standardise(_as_float(features))
        d = torch.cdist(f, f)
        n = f.shape[0]
        mask = torch.eye(n, dtype=torch.bool, device=d.device)
        if groups is not None:
            g = torch.as_tensor(list(groups), device=d.device)
            mask = mask | (g[:, None] == g[None, :])
        d = d.masked_fill(mask, float("inf"))
        available = int((~mask).sum(dim=1).min())
        k = max(1, min(self.k, available))
        near = torch.topk(d, k, dim=1, largest=False).values
        return near.masked_fill(torch.isinf(near), 0).mean(dim=1).float()


class SpectralSignature(PoisonDetector):
    name = "spectral"

    def scores(self, features: Tensor, groups: Sequence[int] | None = None) -> Tensor:
        f = _as_float(features)
        centred = f - f.mean(dim=0)
        if centred.abs().max() == 0:
            return torch.zeros(f.shape[0])
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        return ((centred @ vh[0]) ** 2).float()

    def threshold(self, scores: Tensor) -> float:
        k = max(1, min(scores.numel(), round(1.5 * self.expected_fraction * scores.numel())))
        return float(torch.topk(scores, k).values.min())


def _kmeans2(x: Tensor, seed: int = 0, restarts: int = 8, iters: int = 50) -> tuple[Tensor, Tensor]:
    """2-means with k-means++ starts; returns (labels, centres) of the lowest-inertia run."""
    g = torch.Generator().manual_seed(seed)
    best, best_inertia = None, float("inf")
    n = x.shape[0]
    for _ in range(restarts):
        first = x[torch.randint(n, (1,), generator=g)]
        d = ((x - first) ** 2).sum(dim=1)
        p = d / d.sum() if d.sum() > 0 else torch.full((n,), 1.0 / n, dtype=x.dtype)
        second = x[torch.multinomial(p.float(), 1, generator=g)]
        centres = torch.cat([first, second])
        for _ in range(iters):
            labels = torch.cdist(x, centres).argmin(dim=1)
            new = torch.stack([x[labels == j].mean(dim=0) if (labels == j).any() else centres[j] for j in range(2)])
            if torch.allclose(new, centres):
                break
            centres = new
        labels = torch.cdist(x, centres).argmin(dim=1)
        inertia = float(((x - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = (labels, centres), inertia
    return best


class ActivationClustering(PoisonDetector):
    name = "activation_clustering"

    def __init__(self, components: int = 10, expected_fraction: float = 0.15, seed: int = 0):
        super().__init__(expected_fraction)
        self.components = int(components)
        self.seed = int(seed)

    def scores(self, features: Tensor, groups: Sequence[int] | None = None) -> Tensor:
        f = _standardise(_as_float(features))
        n = f.shape[0]
        if n < 3:
            return torch.zeros(n)
        centred = f - f.mean(dim=0)
        q = max(1, min(self.components, n - 1, f.shape[1]))
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        reduced = centred @ vh[:q].T
        labels, centres = _kmeans2(reduced, self.seed)
        sizes = torch.bincount(labels, minlength=2)
        small = int(sizes.argmin())  # ties -> cluster 0
        d = torch.cdist(reduced, centres)
        return (d[:, 1 - small] - d[:, small]).float()

    def threshold(self, scores: Tensor) -> float:
        """Flag the smaller cluster (samples closer to its centre), as Chen et al. do."""
        flagged = scores[scores > 0]
        return float(flagged.min()) if flagged.numel() else float(scores.max()) + 1.0


DETECTORS = {"knn": KNNDistance, "spectral": SpectralSignature, "activation_clustering": ActivationClustering}


def roc_auc(positive: Tensor, negative: Tensor) -> float | None:
    """Area under the ROC curve of scores (positive = poisoned should score higher); ties count half.

    The Mann-Whitney U statistic divided by n_pos * n_neg; None when a class is empty.
    """
    pos, neg = torch.as_tensor(positive).double().flatten(), torch.as_tensor(negative).double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (pos.numel() * neg.numel()))


def detection_rate_at_fpr(positive: Tensor, negative: Tensor, fpr: float = 0.05) -> float | None:
    """Fraction of positives flagged at the threshold that flags at most ``fpr`` of the negatives.

    The threshold is the smallest score above the ``(1 - fpr)`` quantile of negative scores
    (flag when score > threshold); with few negatives the achieved FPR is at most ``fpr``.
    """
    pos, neg = torch.as_tensor(positive).double().flatten(), torch.as_tensor(negative).double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    allowed = int(fpr * neg.numel())  # negatives that may score above the threshold
    ordered = torch.sort(neg, descending=True).values
    cut = float(ordered[allowed]) if allowed < neg.numel() else float("-inf")
    return float((pos > cut).double().mean())


def roc_curve(positive: Tensor, negative: Tensor) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) over all thresholds, from (0, 0) to (1, 1)."""
    pos, neg = torch.as_tensor(positive).double().flatten(), torch.as_tensor(negative).double().flatten()
    cuts = torch.unique(torch.cat([pos, neg])).flip(0)
    fprs, tprs = [0.0], [0.0]
    for c in cuts:
        fprs.append(float((neg >= c).double().mean()))
        tprs.append(float((pos >= c).double().mean()))
    return fprs, tprs
