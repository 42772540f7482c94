"""The strength report as one self-contained HTML page (no network, no code to read it): one function
per section, each a list of HTML strings, every number with a sentence saying what it means."""

from __future__ import annotations

import base64
import html
import json

from fixative.eval.report_page import CSS, fmt, html_table, img_tag
from fixative.eval.report_plots import plots
from fixative.eval.report_text import condition_labels, detector_rows, encoder_display, encoder_names, headline_rows
from fixative.eval.strength_types import NONE, StrengthReport


def render_html(report: StrengthReport) -> str:
    """The report as one self-contained HTML page."""
    figs = plots(report)
    h = _intro(report) + _headline(report, figs) + _decoded_views(report) + _imperceptibility(report, figs)
    h += _stealth(report, figs) + _per_image(report) + _grids(report) + _notes(report)
    h += ["<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(report.settings, indent=1))}</pre>",
          "<p class='note'>Full numbers, per image and per condition, are in report.json beside this file.</p>",
          "</body></html>"]
    return "\n".join(h)


def _intro(report: StrengthReport) -> list[str]:
    """The page head, what was measured and with which encoders and classifier."""
    agg = report.aggregate
    mode = ", ".join(agg["mode"])
    enc_rows = [["encoder", "role", "decoder", "source"]] + [
        [html.escape(e.get("display", e["name"])), html.escape(e["role"]), "yes" if e["can_decode"] else "no",
         html.escape(str(e["source"]))] for e in report.encoders]
    return [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Fixative protection-strength report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Protection-strength report</h1>",
        f"<p>{agg['images']} image pair(s) measured in {report.seconds:.0f} s. Mode: <b>{html.escape(mode)}</b> "
        "(<i>target</i>: the protection should make the encoder see a target image; <i>away</i>: it should "
        "move the encoder's view away from the image's own).</p>",
        "<h2>What was measured with</h2>", html_table(enc_rows),
        f"<p>Classifier for concept success and detector features: "
        f"{html.escape(report.classifier or 'none')}.</p>",
    ]


def _retained_classes(rows: list[list[str]]) -> list[list[str]]:
    """Cell classes for the headline table: a retention of 50 % or more is ``good``, less ``weak``."""
    classes = []
    for r in rows[1:]:
        cls = []
        for j, c in enumerate(r):
            if j > 0 and rows[0][j].endswith("retained") and c.endswith("%"):
                cls.append("good" if float(c[:-1]) >= 50 else "weak")
            else:
                cls.append("")
        classes.append(cls)
    return classes


def _headline(report: StrengthReport, figs: dict[str, str]) -> list[str]:
    """Efficacy before and after each countermeasure: the table, its two figures, the countermeasures."""
    rows = headline_rows(report)
    cm_rows = [["countermeasure", "what it does"]] + [[html.escape(c["name"]), html.escape(
        c.get("label", "") + (f" — {c['method']}" if c.get("method") else ""))] for c in report.countermeasures]
    return [
        "<h2>Headline: efficacy before and after each countermeasure</h2>",
        "<p><b>Gain</b> = 1 &minus; (distance of the protected image's latent to the target) / (distance of the "
        "original's latent to the target), after the same countermeasure was applied to both. 0 = no effect, "
        "1 = the encoder sees the target. In <i>away</i> mode the gain is the latent shift relative to the "
        "latent's size. <b>Retained</b> = gain after the countermeasure / gain without one. <b>Concept</b> = "
        "share of images whose decoded view the classifier labels as the target's class. The last row is plain "
        "Gaussian noise of the same LPIPS: a real protection must beat it clearly.</p>",
        html_table(rows, _retained_classes(rows)),
        f"<figure>{img_tag(figs['efficacy'], 'efficacy per countermeasure')}"
        "<figcaption>Bars: mean gain per condition and encoder; dashed lines: the noise control.</figcaption>"
        "</figure>",
        f"<figure>{img_tag(figs['retention'], 'retention')}<figcaption>Share of the protection retained; "
        "1 (dotted) = unaffected.</figcaption></figure>",
        "<h3>Countermeasures</h3>", html_table(cm_rows),
    ]


def _decoded_views(report: StrengthReport) -> list[str]:
    """Concept success and style distance of the decoded views, where a decoder and classifier ran."""
    names, show, labels = encoder_names(report), encoder_display(report), condition_labels(report)
    detail = [["condition", "encoder", "concept success (top-1)", "top-5", "clean view labelled as anchor",
               "P(anchor) protected view", "P(anchor) clean view", "style ratio", "closer to target style"]]
    for cname, per in report.aggregate["efficacy"].items():
        for n in names:
            e = per[n]
            if "concept_success" in e or "style_ratio" in e:
                detail.append([html.escape(labels.get(cname, cname)), html.escape(show[n]),
                               fmt(e.get("concept_success"), pct=True), fmt(e.get("concept_success_top5"), pct=True),
                               fmt(e.get("concept_success_clean_view"), pct=True),
                               fmt(e.get("p_anchor_protected_view")), fmt(e.get("p_anchor_clean_view")),
                               fmt(e.get("style_ratio")), fmt(e.get("style_closer_to_target"), pct=True)])
    if len(detail) == 1:
        return []
    return ["<h2>Decoded views: concept and style</h2>",
            "<p>The <i>decoded view</i> is what the diffusion model's decoder makes of the protected image's "
            "latent: roughly what a model trained on the image learns from it. The anchor is the classifier's "
            "label for the target image. <b>Style ratio</b> = Gram-matrix (VGG16) style distance of the decoded "
            "protected view to the target, divided by that of the decoded original; below 1 = the style moved "
            "towards the target.</p>", html_table(detail)]


_IMPERCEPTIBILITY_MEANING = {
    "flip": "difference a viewer sees flipping between the two (NVIDIA FLIP; 0 = none)",
    "like_jpeg": "JPEG quality of equal visibility (FLIP): the protection is as visible as saving the "
                 "image at this quality",
    "lpips_alex": "perceptual distance (0 = identical; 0.07 is hard to see)",
    "lpips_vgg": "perceptual distance, VGG backbone (usually larger than alex)",
    "psnr": "dB; above 35 the change is hard to see", "ssim": "1 = structurally identical",
    "linf": "largest change of any pixel (0-1; 0.03 = 8 levels of 255)",
}


def _imperceptibility(report: StrengthReport, figs: dict[str, str]) -> list[str]:
    """Visibility statistics over the images, label agreement, and the LPIPS-vs-gain scatter."""
    agg = report.aggregate
    imp_rows = [["metric", "mean", "median", "min", "max", "meaning"]]
    for k, st in agg["imperceptibility"].items():
        d = 1 if k == "psnr" else 0 if k == "like_jpeg" else 4
        imp_rows.append([k, fmt(st["mean"], d), fmt(st["median"], d), fmt(st["min"], d), fmt(st["max"], d),
                         html.escape(_IMPERCEPTIBILITY_MEANING.get(k, ""))])
    h = ["<h2>Imperceptibility</h2>", html_table(imp_rows)]
    if "protected_keeps_label" in agg:
        h.append(f"<p>The classifier gives the protected image the same label as the original for "
                 f"{fmt(agg['protected_keeps_label'], pct=True)} of images.</p>")
    h.append(f"<figure>{img_tag(figs['scatter'], 'lpips vs gain')}<figcaption>Each point is an image; crosses: the "
             "same images with LPIPS-matched noise.</figcaption></figure>")
    return h


def _stealth(report: StrengthReport, figs: dict[str, str]) -> list[str]:
    """Whether poison detectors find the protected images: how it was run, the table, the ROC curves."""
    st = report.stealth
    h = ["<h2>Stealth: can poison detectors find the protected images?</h2>"]
    if not st.get("spaces"):
        return h + [f"<p>{html.escape(str(st.get('skipped', 'not run')))}</p>"]
    h.append(f"<p>{st['trials']} trial(s): in each, {st['poisoned_images_per_trial']} protected image(s) are "
             "mixed with the clean originals of all images (so the detector must find the perturbation, not an "
             "unusual picture); every image contributes "
             f"{st.get('samples_per_image')} samples (whole and quadrants). Detectors: k-NN distance outliers, "
             "spectral signatures (Tran et al. 2018), activation clustering (Chen et al. 2019), on encoder "
             "latents and classifier features. <b>ROC-AUC</b> 0.5 = chance (stealthy), 1 = always detected; "
             f"<b>TPR@{st['fpr']:.0%}FPR</b> = share of protected samples flagged when 5% of clean samples are "
             "flagged. An AUC well <i>below</i> 0.5 means the detector finds the protected images more typical "
             "than the clean ones: a defender who knew that could flip the score, so distance from 0.5 in "
             "either direction is what makes images separable (report.json gives "
             "<code>auc_either_direction</code>). With few images these numbers are coarse: with 5 protected "
             "and 20 clean samples, chance alone moves an AUC by about 0.1.</p>")
    h.append(html_table(detector_rows(report)))
    if "roc" in figs:
        h.append(f"<figure>{img_tag(figs['roc'], 'ROC curves')}</figure>")
    return h


def _per_image(report: StrengthReport) -> list[str]:
    """One row per image: size, every visibility figure, the gain per encoder, the noise control, labels."""
    names, show = encoder_names(report), encoder_display(report)
    per_rows = [["image", "size", "FLIP", "like JPEG q", "LPIPS alex", "LPIPS vgg", "PSNR", "SSIM", "L-inf"]
                + [f"{show[n]} gain" for n in names] + ["noise-control gain", "labels (original / protected / target)"]]
    for r in report.images:
        nc = r.noise_control["encoders"] if r.noise_control else {}
        lab = r.labels or {}
        imp = r.imperceptibility
        per_rows.append([html.escape(r.name), f"{r.size[0]}x{r.size[1]}", fmt(imp.get("flip"), 4),
                         fmt(imp.get("like_jpeg"), 0), fmt(imp["lpips_alex"], 4),
                         fmt(imp["lpips_vgg"], 4), fmt(imp["psnr"], 1),
                         fmt(imp["ssim"], 4), fmt(imp["linf"], 4)]
                        + [fmt(r.efficacy[NONE][n].gain) for n in names]
                        + [", ".join(f"{show.get(n, n)} {fmt(v['gain'])}" for n, v in nc.items()),
                           html.escape(" / ".join(str(lab.get(k) or "–") for k in ("original", "protected",
                                                                                   "target")))])
    return ["<h2>Per image</h2>", html_table(per_rows)]


def _grids(report: StrengthReport) -> list[str]:
    """The image grids: original, protected, amplified difference, decoded views, target."""
    h = ["<h2>Images</h2><p>Each row: the original, the protected image, the difference amplified (grey = no "
         "change), the decoded views of the original and of the protected image (what the model's autoencoder "
         "sees), and the target.</p>"]
    for name, grid in report.grids.items():
        cols = " | ".join(grid.get("columns", []))
        b64 = base64.b64encode(grid["png"]).decode()
        h.append(f"<figure>{img_tag(b64, name)}<figcaption><b>{html.escape(name)}</b>: "
                 f"{html.escape(cols)}</figcaption></figure>")
    return h


def _notes(report: StrengthReport) -> list[str]:
    """The report's and the images' notes, when there are any."""
    if not (report.notes or any(r.notes for r in report.images)):
        return []
    return (["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in report.notes]
            + [f"<li>{html.escape(r.name)}: {html.escape(n)}</li>" for r in report.images for n in r.notes]
            + ["</ul>"])
