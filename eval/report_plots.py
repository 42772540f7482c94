"""The strength report's figures (matplotlib, Agg backend), each a base64 PNG: efficacy per
condition, protection retained, detectors' ROC curves, and visibility against gain per image."""

from __future__ import annotations

from typing import Any

from fixative.eval.report_page import figure_png
from fixative.eval.report_text import encoder_display, encoder_names, space_label, tick
from fixative.eval.strength_types import NONE, StrengthReport


def plots(report: StrengthReport) -> dict[str, str]:
    """Base64 PNGs: ``efficacy`` per condition, ``retention``, ``roc`` curves (when the stealth
    evaluation ran), ``scatter`` (LPIPS vs gain per image)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = {"efficacy": _efficacy_plot(plt, report), "retention": _retention_plot(plt, report)}
    if report.stealth.get("spaces"):
        out["roc"] = _roc_plot(plt, report)
    out["scatter"] = _scatter_plot(plt, report)
    return out


def _bar_offsets(n_encoders: int) -> tuple[float, Any]:
    """(bar width, offset of encoder i's bar) for grouped bars."""
    width = 0.8 / max(1, n_encoders)
    return width, lambda i: i * width - 0.4 + width / 2


def _efficacy_plot(plt: Any, report: StrengthReport) -> str:
    """Grouped bars of the mean gain per condition and encoder; dashed lines for the noise control."""
    import numpy as np

    agg, names, show = report.aggregate["efficacy"], encoder_names(report), encoder_display(report)
    conds = list(agg)
    width, offset = _bar_offsets(len(names))
    x = np.arange(len(conds))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(conds)), 3.6))
    for i, n in enumerate(names):
        vals = [agg[c][n]["gain"] or 0.0 for c in conds]
        ax.bar(x + offset(i), vals, width, label=show[n])
    control = report.aggregate.get("noise_control")
    if control:
        for i, n in enumerate(names):
            g = control["encoders"][n]["gain"]
            if g is not None:
                ax.axhline(g, ls="--", lw=1, color=f"C{i}", label=f"{show[n]}: LPIPS-matched noise")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [tick(c) for c in conds], rotation=35, ha="right")
    ax.set_ylabel("gain (1 - distance ratio)")
    ax.set_title("Efficacy before and after each countermeasure (higher = stronger)")
    ax.legend(fontsize=7)
    return figure_png(fig)


def _retention_plot(plt: Any, report: StrengthReport) -> str:
    """Grouped bars of the share of the protection retained under each countermeasure."""
    import numpy as np

    agg, names, show = report.aggregate["efficacy"], encoder_names(report), encoder_display(report)
    conds = list(agg)
    width, offset = _bar_offsets(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(conds)), 3.2))
    for i, n in enumerate(names):
        vals = [(agg[c][n]["retention"] if agg[c][n]["retention"] is not None else np.nan) for c in conds[1:]]
        ax.bar(np.arange(len(conds) - 1) + offset(i), vals, width, label=show[n])
    ax.axhline(1, color="black", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(conds) - 1), [tick(c) for c in conds[1:]], rotation=35,
                  ha="right")
    ax.set_ylabel("protection retained")
    ax.set_title("Share of the protection that survives each countermeasure (1 = all)")
    ax.legend(fontsize=7)
    return figure_png(fig)


def _roc_plot(plt: Any, report: StrengthReport) -> str:
    """One panel per feature space: each detector's ROC curve pooled over trials."""
    spaces = report.stealth["spaces"]
    fig, axes = plt.subplots(1, len(spaces), figsize=(3.4 * len(spaces), 3.6), squeeze=False,
                             constrained_layout=True)
    for i, (ax, (space, per)) in enumerate(zip(axes[0], spaces.items(), strict=True)):
        for det, v in per.items():
            roc = v["pooled_roc"]
            ax.plot(roc["fpr"], roc["tpr"], label=f"{det} (mean AUC {v['roc_auc']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(space_label(report, space), fontsize=9)
        ax.set_xlabel("false positive rate")
        if i == 0:
            ax.set_ylabel("detection rate")
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("Poison detectors: ROC curves (pooled over trials; diagonal = chance)", fontsize=10)
    return figure_png(fig)


def _scatter_plot(plt: Any, report: StrengthReport) -> str:
    """Per image: LPIPS (alex) against gain, with the LPIPS-matched noise as crosses."""
    names, show = encoder_names(report), encoder_display(report)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, n in enumerate(names):
        lp = [r.imperceptibility["lpips_alex"] for r in report.images]
        gains = [r.efficacy[NONE][n].gain for r in report.images]
        ax.scatter(lp, gains, label=show[n], color=f"C{i}")
        if all(r.noise_control for r in report.images):
            ax.scatter([r.noise_control["lpips_alex"] for r in report.images],
                       [r.noise_control["encoders"][n]["gain"] for r in report.images], marker="x",
                       color=f"C{i}", label=f"{show[n]}: noise control")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("LPIPS (alex) to the original")
    ax.set_ylabel("gain")
    ax.set_title("Per image: visibility vs efficacy")
    ax.legend(fontsize=7)
    return figure_png(fig)
