"""The strength report's tables as rows and text: labels for conditions, encoders and feature spaces,
the headline (efficacy before and after each countermeasure) and detector tables, and the Markdown
headline printed by ``fixative eval strength``.
"""

from __future__ import annotations

from fixative.eval.report_page import fmt, markdown_table
from fixative.eval.strength_types import NONE, StrengthReport


def condition_labels(report: StrengthReport) -> dict[str, str]:
    """Condition name -> its label ('no countermeasure' for none)."""
    labels = {NONE: "no countermeasure"}
    labels.update({c["name"]: c.get("label", c["name"]) for c in report.countermeasures})
    return labels


def tick(name: str) -> str:
    """A short axis label for a condition: 'JPEG 75', 'blur1', 'IMPRESS'..."""
    if name == NONE:
        return "none"
    if name.startswith("jpeg"):
        return f"JPEG {name[4:]}"
    if name.startswith("platform"):
        return "platform " + name[len("platform"):].replace("q", " q")
    if "_downup" in name:
        return "noise+down-up"
    return {"noisy_upscale": "noisy upscale", "impress": "IMPRESS"}.get(name, name)


def encoder_names(report: StrengthReport) -> list[str]:
    """The encoder specs in report order."""
    return [e["name"] for e in report.encoders]


def encoder_display(report: StrengthReport) -> dict[str, str]:
    """Encoder spec -> the short name shown in tables and plots."""
    return {e["name"]: e.get("display", e["name"]) for e in report.encoders}


def space_label(report: StrengthReport, space: str) -> str:
    """A detector feature space for display: ``latent:NAME`` with the encoder's short name."""
    kind, _, name = space.partition(":")
    return f"{kind}:{encoder_display(report).get(name, name)}" if kind == "latent" else space



def headline_rows(report: StrengthReport) -> list[list[str]]:
    """Rows of the headline table: condition, then per encoder the gain, the retention and (where
    a decoder and classifier ran) the concept success; last, the LPIPS-matched noise control."""
    agg = report.aggregate["efficacy"]
    names = encoder_names(report)
    labels = condition_labels(report)
    concept = {n: any("concept_success" in agg[c][n] for c in agg) for n in names}
    show = encoder_display(report)
    header = ["condition"]
    for n in names:
        header += [f"{show[n]} gain", f"{show[n]} retained"] + ([f"{show[n]} concept"] if concept[n] else [])
    rows = [header]
    for cname, per in agg.items():
        row = [labels.get(cname, cname)]
        for n in names:
            e = per[n]
            row += [fmt(e["gain"]), "100%" if cname == NONE else fmt(e["retention"], pct=True)]
            if concept[n]:
                row.append(fmt(e.get("concept_success"), pct=True))
        rows.append(row)
    control = report.aggregate.get("noise_control")
    if control:
        row = [f"noise control (LPIPS {control['lpips_alex']:.3f})"]
        for n in names:
            row += [fmt(control["encoders"][n]["gain"]), ""] + ([""] if concept[n] else [])
        rows.append(row)
    return rows


def detector_rows(report: StrengthReport) -> list[list[str]]:
    """Rows of the stealth table: per feature space, each detector's ROC-AUC and detection rate at the FPR."""
    spaces = report.stealth.get("spaces", {})
    dets = ["knn", "spectral", "activation_clustering"]
    rows = [["feature space"] + [f"{d} AUC" for d in dets] + [f"{d} TPR@{report.stealth.get('fpr', 0.05):.0%}FPR"
                                                              for d in dets]]
    for space, per in spaces.items():
        rows.append([space_label(report, space)] + [fmt(per.get(d, {}).get("roc_auc")) for d in dets]
                    + [fmt(per.get(d, {}).get("detection_rate_at_fpr"), pct=True) for d in dets])
    return rows


def headline_text(report: StrengthReport) -> str:
    """The headline tables (efficacy before/after countermeasures; detector AUCs) as Markdown."""
    imp = report.aggregate["imperceptibility"]
    parts = [
        f"{report.aggregate['images']} images, mode {', '.join(report.aggregate['mode'])}; "
        f"FLIP mean {fmt(imp['flip']['mean'])} (as visible as JPEG quality {fmt(imp['like_jpeg']['median'], 0)}, "
        f"median), LPIPS alex mean {fmt(imp['lpips_alex']['mean'])}, vgg {fmt(imp['lpips_vgg']['mean'])}, "
        f"PSNR {fmt(imp['psnr']['mean'], 1)} dB, SSIM {fmt(imp['ssim']['mean'])}, "
        f"L-inf {fmt(imp['linf']['max'])} (max)",
        "",
        "Efficacy (gain = 1 - distance ratio to the target; retained = gain after / gain before):",
        "",
        markdown_table(headline_rows(report)),
    ]
    if report.stealth.get("spaces"):
        parts += ["", f"Stealth ({report.stealth['trials']} trials, "
                      f"{report.stealth['poisoned_images_per_trial']} protected image(s) among all clean originals "
                      "per trial; AUC 0.5 = undetectable, 1 = always found):", "",
                  markdown_table(detector_rows(report))]
    noisy = next((c for c in report.countermeasures if c["name"] == "noisy_upscale"), None)
    if noisy:
        parts += ["", f"Noisy upscaling ran with: {noisy.get('method')}"]
    return "\n".join(parts)
