"""What the decoded views show: ``D(E(x))`` and ``D(E(x'))`` classified (does the protected view
look like the target's class, the anchor?) and compared in style (VGG16 Gram matrices) to the
target and the original."""

from __future__ import annotations

from torch import Tensor

from fixative.eval.classifier import ImageClassifier
from fixative.eval.style import StyleDistance


def decoded_concept(classifier: ImageClassifier, views: Tensor, anchor: int | None) -> dict:
    """``views`` = (decoded clean view, decoded protected view), (2,3,H,W) in [0,1]: each one's top-1
    label and, with an ``anchor`` class, whether the protected view is labelled as it (top-1, top-5)
    and the anchor's probability in each view."""
    p = classifier.probs(views)
    top = p.argmax(dim=1).tolist()
    concept = {"top1_clean_view": classifier.labels[top[0]], "top1_protected_view": classifier.labels[top[1]]}
    if anchor is not None:
        top5 = p[1].topk(min(5, p.shape[1])).indices.tolist()
        concept.update({
            "anchor": classifier.labels[anchor],
            "success": bool(top[1] == anchor),
            "success_top5": bool(anchor in top5),
            "clean_view_is_anchor": bool(top[0] == anchor),
            "p_anchor_protected_view": float(p[1, anchor]),
            "p_anchor_clean_view": float(p[0, anchor]),
        })
    return concept


def decoded_style(style: StyleDistance, views: Tensor, refs: dict) -> dict:
    """Gram style distances of the decoded views to ``refs["target"]`` and ``refs["original"]``
    (each :meth:`StyleDistance.grams` of an image); ``ratio`` below 1 = the protected view moved
    towards the target's style."""
    grams = style.grams(views)
    g0, g1 = [g[:1] for g in grams], [g[1:] for g in grams]
    to_t0 = float(style.gram_distance(g0, refs["target"])[0])
    to_t1 = float(style.gram_distance(g1, refs["target"])[0])
    to_o1 = float(style.gram_distance(g1, refs["original"])[0])
    return {"to_target_clean_view": to_t0, "to_target_protected_view": to_t1,
            "to_original_protected_view": to_o1,
            "ratio": to_t1 / to_t0 if to_t0 > 0 else None,
            "closer_to_target_than_original": bool(to_t1 < to_o1)}
