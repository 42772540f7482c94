"""Poison detectors and their metrics on synthetic features (no models)."""

from __future__ import annotations

import pytest
import torch

from fixative.eval.detectors import (
    DETECTORS,
    ActivationClustering,
    KNNDistance,
    SpectralSignature,
    detection_rate_at_fpr,
    roc_auc,
    roc_curve,
)


def test_roc_auc_extremes_and_ties():
    assert roc_auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert roc_auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    assert roc_auc(torch.tensor([2.0, 0.0]), torch.tensor([1.0])) == 0.5
    assert roc_auc(torch.tensor([]), torch.tensor([1.0])) is None


def test_detection_rate_at_fpr():
    neg = torch.arange(20, dtype=torch.float32)  # 0..19
    pos = torch.tensor([18.5, 19.5, 25.0, 1.0])
    # 5 % of 20 negatives = 1 may be above the cut: the cut is the second-highest negative (18)
    assert detection_rate_at_fpr(pos, neg, 0.05) == pytest.approx(0.75)
    assert detection_rate_at_fpr(pos, neg, 0.0) == pytest.approx(0.5)
    fprs, tprs = roc_curve(pos, neg)
    assert fprs[0] == 0 and tprs[0] == 0 and fprs[-1] == 1 and tprs[-1] == 1
    assert all(a <= b for a, b in zip(fprs, fprs[1:], strict=False))


def _mix(n_clean=60, n_poison=8, dim=16, shift=6.0, seed=0, coherent=True):
    """Clean N(0, I) samples and a minority shifted by ``shift``: all the same way (``coherent``, a
    poison cluster) or each its own way (isolated outliers)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(n_clean, dim, generator=g)
    direction = torch.randn(1 if coherent else n_poison, dim, generator=g)
    poison = torch.randn(n_poison, dim, generator=g) + shift * direction / direction.norm(dim=1, keepdim=True)
    feats = torch.cat([clean, poison])
    truth = [True] * n_clean + [False] * n_poison
    return feats, truth


@pytest.mark.parametrize("cls,coherent", [(KNNDistance, False), (SpectralSignature, True),
                                          (ActivationClustering, True)])
def test_detectors_find_a_shifted_minority(cls, coherent):
    # k-NN finds isolated outliers; spectral signatures and activation clustering find a poison
    # population shifted one way
    feats, truth = _mix(shift=8.0 if not coherent else 6.0, coherent=coherent)
    det = cls(expected_fraction=8 / 68)
    s = det.scores(feats)
    is_clean = torch.tensor(truth)
    assert roc_auc(s[~is_clean], s[is_clean]) > 0.9
    report, flags = det.detect_poison(feats)
    assert len(flags) == len(truth) and report["samples"] == len(truth)
    ev = det.evaluate_defence(truth, report, flags)
    assert ev["true_positives"] + ev["false_negatives"] == 8
    assert ev["tpr"] >= 0.6 and ev["fpr"] <= 0.2
    assert ev["roc_auc"] > 0.9


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detectors_are_near_chance_without_poison_signal(name):
    aucs = []
    for seed in range(6):
        feats, truth = _mix(shift=0.0, seed=seed)
        s = DETECTORS[name]().scores(feats)
        is_clean = torch.tensor(truth)
        aucs.append(roc_auc(s[~is_clean], s[is_clean]))
    assert 0.25 < sum(aucs) / len(aucs) < 0.75


def test_knn_ignores_neighbours_of_the_same_group():
    # two near-identical samples of one picture far from the rest: without groups they vouch for
    # each other (low score); grouped, both are outliers
    g = torch.Generator().manual_seed(0)
    feats = torch.cat([torch.randn(10, 4, generator=g), torch.full((2, 4), 8.0) + 0.01 * torch.randn(2, 4,
                                                                                                       generator=g)])
    plain = KNNDistance(k=1).scores(feats)
    grouped = KNNDistance(k=1).scores(feats, groups=list(range(10)) + [10, 10])
    assert plain[-1] < plain[:10].max()
    assert grouped[-1] > grouped[:10].max()


def test_evaluate_defence_needs_matching_truth():
    det = SpectralSignature()
    feats, truth = _mix()
    report, flags = det.detect_poison(feats)
    with pytest.raises(ValueError):
        det.evaluate_defence(truth[:-1], report, flags)
