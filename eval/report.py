"""Writing a :class:`~fixative.eval.strength.StrengthReport`: ``report.json``, a self-contained ``report.html``
(tables, matplotlib plots and image grids embedded as PNG data), and a plain-text headline table.

The HTML needs no network and no code to read: every number has a sentence saying what it means.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from pathlib import Path

from fixative.eval.strength import NONE, StrengthReport


def _fmt(value, digits: int = 3, pct: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if pct:
            return f"{100 * value:.0f}%"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _condition_labels(report: StrengthReport) -> dict[str, str]:
    labels = {NONE: "no countermeasure"}
    labels.update({c["name"]: c.get("label", c["name"]) for c in report.countermeasures})
    return labels


def _tick(name: str) -> str:
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


def _encoder_names(report: StrengthReport) -> list[str]:
    return [e["name"] for e in report.encoders]


def _display(report: StrengthReport) -> dict[str, str]:
    """Encoder spec -> the short name shown in tables and plots."""
    return {e["name"]: e.get("display", e["name"]) for e in report.encoders}


def _space_label(report: StrengthReport, space: str) -> str:
    kind, _, name = space.partition(":")
    return f"{kind}:{_display(report).get(name, name)}" if kind == "latent" else space


# --- plain text -------------------------------------------------------------------------------


def headline_rows(report: StrengthReport) -> list[list[str]]:
    """Rows of the headline table: condition, then per encoder the gain, the retention and (where
    a decoder and classifier ran) the concept success; last, the LPIPS-matched noise control."""
    agg = report.aggregate["efficacy"]
    names = _encoder_names(report)
    labels = _condition_labels(report)
    concept = {n: any("concept_success" in agg[c][n] for c in agg) for n in names}
    show = _display(report)
    header = ["condition"]
    for n in names:
        header += [f"{show[n]} gain", f"{show[n]} retained"] + ([f"{show[n]} concept"] if concept[n] else [])
    rows = [header]
    for cname, per in agg.items():
        row = [labels.get(cname, cname)]
        for n in names:
            e = per[n]
            row += [_fmt(e["gain"]), "100%" if cname == NONE else _fmt(e["retention"], pct=True)]
            if concept[n]:
                row.append(_fmt(e.get("concept_success"), pct=True))
        rows.append(row)
    control = report.aggregate.get("noise_control")
    if control:
        row = [f"noise control (LPIPS {control['lpips_alex']:.3f})"]
        for n in names:
            row += [_fmt(control["encoders"][n]["gain"]), ""] + ([""] if concept[n] else [])
        rows.append(row)
    return rows


def detector_rows(report: StrengthReport) -> list[list[str]]:
    spaces = report.stealth.get("spaces", {})
    dets = ["knn", "spectral", "activation_clustering"]
    rows = [["feature space"] + [f"{d} AUC" for d in dets] + [f"{d} TPR@{report.stealth.get('fpr', 0.05):.0%}FPR"
                                                              for d in dets]]
    for space, per in spaces.items():
        rows.append([_space_label(report, space)] + [_fmt(per.get(d, {}).get("roc_auc")) for d in dets]
                    + [_fmt(per.get(d, {}).get("detection_rate_at_fpr"), pct=True) for d in dets])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def headline_text(report: StrengthReport) -> str:
    """The headline tables (efficacy before/after countermeasures; detector AUCs) as Markdown."""
    imp = report.aggregate["imperceptibility"]
    parts = [
        f"{report.aggregate['images']} images, mode {', '.join(report.aggregate['mode'])}; "
        f"FLIP mean {_fmt(imp['flip']['mean'])} (as visible as JPEG quality {_fmt(imp['like_jpeg']['median'], 0)}, "
        "median), LPIPS alex mean {_fmt(imp['lpips_alex']['mean'])}, vgg {_fmt(imp['lpips_vgg']['mean'])}, "
        f"PSNR {_fmt(imp['psnr']['mean'], 1)} dB, SSIM {_fmt(imp['ssim']['mean'])}, "
        f"L-inf {_fmt(imp['linf']['max'])} (max)",
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


# --- JSON -------------------------------------------------------------------------------------


def _atomic_write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(report: StrengthReport, dest: str | Path) -> Path:
    dest = Path(dest)
    _atomic_write(dest, (json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n").encode())
    return dest


# --- plots ------------------------------------------------------------------------------------


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(report: StrengthReport) -> dict[str, str]:
    """Base64 PNGs: efficacy per condition, retention, ROC curves, LPIPS vs gain per image."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, str] = {}
    agg = report.aggregate["efficacy"]
    names = _encoder_names(report)
    show = _display(report)
    conds = list(agg)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(conds))

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(conds)), 3.6))
    for i, n in enumerate(names):
        vals = [agg[c][n]["gain"] or 0.0 for c in conds]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=show[n])
    control = report.aggregate.get("noise_control")
    if control:
        for i, n in enumerate(names):
            g = control["encoders"][n]["gain"]
            if g is not None:
                ax.axhline(g, ls="--", lw=1, color=f"C{i}", label=f"{show[n]}: LPIPS-matched noise")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [_tick(c) for c in conds], rotation=35, ha="right")
    ax.set_ylabel("gain (1 - distance ratio)")
    ax.set_title("Efficacy before and after each countermeasure (higher = stronger)")
    ax.legend(fontsize=7)
    out["efficacy"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(conds)), 3.2))
    for i, n in enumerate(names):
        vals = [(agg[c][n]["retention"] if agg[c][n]["retention"] is not None else np.nan) for c in conds[1:]]
        ax.bar(np.arange(len(conds) - 1) + i * width - 0.4 + width / 2, vals, width, label=show[n])
    ax.axhline(1, color="black", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(conds) - 1), [_tick(c) for c in conds[1:]], rotation=35,
                  ha="right")
    ax.set_ylabel("protection retained")
    ax.set_title("Share of the protection that survives each countermeasure (1 = all)")
    ax.legend(fontsize=7)
    out["retention"] = _figure_png(fig)

    spaces = report.stealth.get("spaces", {})
    if spaces:
        fig, axes = plt.subplots(1, len(spaces), figsize=(3.4 * len(spaces), 3.6), squeeze=False,
                                 constrained_layout=True)
        for i, (ax, (space, per)) in enumerate(zip(axes[0], spaces.items(), strict=True)):
            for det, v in per.items():
                roc = v["pooled_roc"]
                ax.plot(roc["fpr"], roc["tpr"], label=f"{det} (mean AUC {v['roc_auc']:.2f})")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            ax.set_title(_space_label(report, space), fontsize=9)
            ax.set_xlabel("false positive rate")
            if i == 0:
                ax.set_ylabel("detection rate")
            ax.legend(fontsize=6, loc="lower right")
        fig.suptitle("Poison detectors: ROC curves (pooled over trials; diagonal = chance)", fontsize=10)
        out["roc"] = _figure_png(fig)

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
    out["scatter"] = _figure_png(fig)
    return out


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .55em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em}.good{background:#e8f6e8}.weak{background:#fbeaea}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
code{background:#f4f4f4;padding:0 .2em}
"""


def _table(rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for i, r in enumerate(rows[1:]):
        cells = []
        for j, c in enumerate(r):
            cls = classes[i][j] if classes and i < len(classes) and j < len(classes[i]) else ""
            cells.append(f'<td class="{cls}">{c}</td>' if cls else f"<td>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def render_html(report: StrengthReport) -> str:
    """The report as one self-contained HTML page."""
    agg = report.aggregate
    names = _encoder_names(report)
    show = _display(report)
    labels = _condition_labels(report)
    figs = plots(report)
    mode = ", ".join(agg["mode"])
    h: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Fixative protection-strength report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Protection-strength report</h1>",
        f"<p>{agg['images']} image pair(s) measured in {report.seconds:.0f} s. Mode: <b>{html.escape(mode)}</b> "
        "(<i>target</i>: the protection should make the encoder see a target image; <i>away</i>: it should "
        "move the encoder's view away from the image's own).</p>",
    ]
    enc_rows = [["encoder", "role", "decoder", "source"]] + [
        [html.escape(e.get("display", e["name"])), html.escape(e["role"]), "yes" if e["can_decode"] else "no",
         html.escape(str(e["source"]))] for e in report.encoders]
    h += ["<h2>What was measured with</h2>", _table(enc_rows),
          f"<p>Classifier for concept success and detector features: "
          f"{html.escape(report.classifier or 'none')}.</p>"]

    # headline
    h += ["<h2>Headline: efficacy before and after each countermeasure</h2>",
          "<p><b>Gain</b> = 1 &minus; (distance of the protected image's latent to the target) / (distance of the "
          "original's latent to the target), after the same countermeasure was applied to both. 0 = no effect, "
          "1 = the encoder sees the target. In <i>away</i> mode the gain is the latent shift relative to the "
          "latent's size. <b>Retained</b> = gain after the countermeasure / gain without one. <b>Concept</b> = "
          "share of images whose decoded view the classifier labels as the target's class. The last row is plain "
          "Gaussian noise of the same LPIPS: a real protection must beat it clearly.</p>"]
    rows = headline_rows(report)
    classes = []
    for r in rows[1:]:
        cls = []
        for j, c in enumerate(r):
            if j > 0 and rows[0][j].endswith("retained") and c.endswith("%"):
                v = float(c[:-1])
                cls.append("good" if v >= 50 else "weak")
            else:
                cls.append("")
        classes.append(cls)
    h.append(_table(rows, classes))
    h.append(f"<figure>{_img(figs['efficacy'], 'efficacy per countermeasure')}"
             "<figcaption>Bars: mean gain per condition and encoder; dashed lines: the noise control.</figcaption>"
             "</figure>")
    h.append(f"<figure>{_img(figs['retention'], 'retention')}<figcaption>Share of the protection retained; "
             "1 (dotted) = unaffected.</figcaption></figure>")
    cm_rows = [["countermeasure", "what it does"]] + [[html.escape(c["name"]), html.escape(
        c.get("label", "") + (f" — {c['method']}" if c.get("method") else ""))] for c in report.countermeasures]
    h += ["<h3>Countermeasures</h3>", _table(cm_rows)]

    # concept and style details
    detail = [["condition", "encoder", "concept success (top-1)", "top-5", "clean view labelled as anchor",
               "P(anchor) protected view", "P(anchor) clean view", "style ratio", "closer to target style"]]
    for cname, per in agg["efficacy"].items():
        for n in names:
            e = per[n]
            if "concept_success" in e or "style_ratio" in e:
                detail.append([html.escape(labels.get(cname, cname)), html.escape(show[n]),
                               _fmt(e.get("concept_success"), pct=True), _fmt(e.get("concept_success_top5"), pct=True),
                               _fmt(e.get("concept_success_clean_view"), pct=True),
                               _fmt(e.get("p_anchor_protected_view")), _fmt(e.get("p_anchor_clean_view")),
                               _fmt(e.get("style_ratio")), _fmt(e.get("style_closer_to_target"), pct=True)])
    if len(detail) > 1:
        h += ["<h2>Decoded views: concept and style</h2>",
              "<p>The <i>decoded view</i> is what the diffusion model's decoder makes of the protected image's "
              "latent: roughly what a model trained on the image learns from it. The anchor is the classifier's "
              "label for the target image. <b>Style ratio</b> = Gram-matrix (VGG16) style distance of the decoded "
              "protected view to the target, divided by that of the decoded original; below 1 = the style moved "
              "towards the target.</p>", _table(detail)]

    # imperceptibility
    imp = agg["imperceptibility"]
    imp_rows = [["metric", "mean", "median", "min", "max", "meaning"]]
    meaning = {"flip": "difference a viewer sees flipping between the two (NVIDIA FLIP; 0 = none)",
               "like_jpeg": "JPEG quality of equal visibility (FLIP): the protection is as visible as saving the "
                            "image at this quality",
               "lpips_alex": "perceptual distance (0 = identical; 0.07 is hard to see)",
               "lpips_vgg": "perceptual distance, VGG backbone (usually larger than alex)",
               "psnr": "dB; above 35 the change is hard to see", "ssim": "1 = structurally identical",
               "linf": "largest change of any pixel (0-1; 0.03 = 8 levels of 255)"}
    for k, st in imp.items():
        d = 1 if k == "psnr" else 0 if k == "like_jpeg" else 4
        imp_rows.append([k, _fmt(st["mean"], d), _fmt(st["median"], d), _fmt(st["min"], d), _fmt(st["max"], d),
                         html.escape(meaning.get(k, ""))])
    h += ["<h2>Imperceptibility</h2>", _table(imp_rows)]
    if "protected_keeps_label" in agg:
        h.append(f"<p>The classifier gives the protected image the same label as the original for "
                 f"{_fmt(agg['protected_keeps_label'], pct=True)} of images.</p>")
    h.append(f"<figure>{_img(figs['scatter'], 'lpips vs gain')}<figcaption>Each point is an image; crosses: the "
             "same images with LPIPS-matched noise.</figcaption></figure>")

    # stealth
    st = report.stealth
    h.append("<h2>Stealth: can poison detectors find the protected images?</h2>")
    if st.get("spaces"):
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
        h.append(_table(detector_rows(report)))
        if "roc" in figs:
            h.append(f"<figure>{_img(figs['roc'], 'ROC curves')}</figure>")
    else:
        h.append(f"<p>{html.escape(str(st.get('skipped', 'not run')))}</p>")

    # per image
    per_rows = [["image", "size", "FLIP", "like JPEG q", "LPIPS alex", "LPIPS vgg", "PSNR", "SSIM", "L-inf"]
                + [f"{show[n]} gain" for n in names] + ["noise-control gain", "labels (original / protected / target)"]]
    for r in report.images:
        nc = r.noise_control["encoders"] if r.noise_control else {}
        lab = r.labels or {}
        per_rows.append([html.escape(r.name), f"{r.size[0]}x{r.size[1]}", _fmt(r.imperceptibility.get("flip"), 4),
                         _fmt(r.imperceptibility.get("like_jpeg"), 0), _fmt(r.imperceptibility["lpips_alex"], 4),
                         _fmt(r.imperceptibility["lpips_vgg"], 4), _fmt(r.imperceptibility["psnr"], 1),
                         _fmt(r.imperceptibility["ssim"], 4), _fmt(r.imperceptibility["linf"], 4)]
                        + [_fmt(r.efficacy[NONE][n].gain) for n in names]
                        + [", ".join(f"{show.get(n, n)} {_fmt(v['gain'])}" for n, v in nc.items()),
                           html.escape(" / ".join(str(lab.get(k) or "–") for k in ("original", "protected",
                                                                                   "target")))])
    h += ["<h2>Per image</h2>", _table(per_rows)]

    # grids
    h.append("<h2>Images</h2><p>Each row: the original, the protected image, the difference amplified (grey = no "
             "change), the decoded views of the original and of the protected image (what the model's autoencoder "
             "sees), and the target.</p>")
    for name, grid in report.grids.items():
        cols = " | ".join(grid.get("columns", []))
        b64 = base64.b64encode(grid["png"]).decode()
        h.append(f"<figure>{_img(b64, name)}<figcaption><b>{html.escape(name)}</b>: "
                 f"{html.escape(cols)}</figcaption></figure>")

    if report.notes or any(r.notes for r in report.images):
        h.append("<h2>Notes</h2><ul>")
        h += [f"<li>{html.escape(n)}</li>" for n in report.notes]
        h += [f"<li>{html.escape(r.name)}: {html.escape(n)}</li>" for r in report.images for n in r.notes]
        h.append("</ul>")
    h += ["<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(report.settings, indent=1))}</pre>",
          "<p class='note'>Full numbers, per image and per condition, are in report.json beside this file.</p>",
          "</body></html>"]
    return "\n".join(h)


def write_report(report: StrengthReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``headline.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(report, out_dir / "report.json")}
    html_path = out_dir / "report.html"
    _atomic_write(html_path, render_html(report).encode())
    paths["html"] = html_path
    md = out_dir / "headline.md"
    _atomic_write(md, (headline_text(report) + "\n").encode())
    paths["headline"] = md
    return paths
