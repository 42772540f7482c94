"""Writing the fine-tuning experiment's report: ``report.json``, ``headline.md`` and a self-contained
``report.html`` (tables with 95% confidence intervals over seeds, loss curves, the poisoning sweep,
and image grids: one row per prompt, one column per model, all with the same seed).

Shares the page style and helpers of the strength report (:mod:`fixative.eval.report_page`).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from fixative.eval.report_page import CSS, atomic_write, figure_png, fmt, html_table, img_tag, markdown_table

RUN_LABELS = {"base": "base model (no fine-tune)", "clean": "trained on clean", "protected": "trained on protected"}


def _label(name: str) -> str:
    if name in RUN_LABELS:
        return RUN_LABELS[name]
    if name.startswith("purified-"):
        return f"trained on protected, purified ({name.removeprefix('purified-')})"
    return name


def _ci(entry: dict | None, digits: int = 3, pct: bool = False) -> str:
    """``mean [lo, hi]`` (or the mean alone when there is no interval)."""
    if not entry or entry.get("mean") is None:
        return "–"
    mean = fmt(entry["mean"], digits, pct)
    ci = entry.get("ci95")
    return f"{mean} [{fmt(ci[0], digits, pct)}, {fmt(ci[1], digits, pct)}]" if ci else mean


def style_rows(report: dict) -> list[list[str]]:
    style = report["style"]
    metric = style["metric"]
    unit = "CLIP cosine" if metric["kind"] == "clip" else "Gram distance"
    rows = [["model", f"style similarity to held-out ({unit}), mean [95% CI]", "final training loss", "steps"]]
    for name, entry in style["models"].items():
        run = report["runs"].get(name, {})
        rows.append([_label(name), _ci(entry, 4), fmt(run.get("final_loss"), 4) if run else "–",
                     str(run.get("steps", "–")) if run else "–"])
    for name, entry in style["effects"].items():
        rows.append([f"difference: {name}", _ci(entry, 4), "", ""])
    return rows


def poison_rows(report: dict) -> list[list[str]]:
    poison = report["poison"]
    rows = [["poisoned images N", "training images", f"attack success: share drawn as '{poison['anchor']}' [95% CI]",
             f"share drawn as '{poison['concept']}'", "final training loss"]]
    for key, entry in poison["counts"].items():
        run = report["runs"].get(f"poison-{key}", {})
        rows.append([key, str(entry["images"]), _ci(entry, pct=True), _ci(entry.get("concept_share"), pct=True),
                     fmt(run.get("final_loss"), 4)])
    return rows


def headline_text(report: dict) -> str:
    """The headline tables as Markdown."""
    parts = []
    if "style" in report:
        st = report["style"]
        parts += [f"Style mimicry: {len(st['prompts'])} prompt(s) x {len(report['generation']['seeds'])} seed(s); "
                  f"{st['metric']['name']}, {st['metric']['direction']}.", "", markdown_table(style_rows(report)), ""]
    if "poison" in report:
        po = report["poison"]
        parts += [f"Concept poisoning: prompt {po['prompt']!r}, {po['images_per_seed']} image(s) x "
                  f"{len(report['generation']['seeds'])} seed(s) per model; classifier {po['classifier']}; anchor "
                  f"classes: {', '.join(po['anchor_labels'][:6])}.", "", markdown_table(poison_rows(report)), ""]
    return "\n".join(parts).rstrip()


def plots(report: dict) -> dict[str, str]:
    """Base64 PNGs: loss curves, style similarity with CIs, the poisoning sweep."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (name, run) in enumerate(report["runs"].items()):
        if not run["loss"]:
            continue
        steps, loss = np.array(run["loss"]).T
        ax.plot(steps, loss, color=f"C{i}", alpha=0.3, lw=0.8)
        k = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color=f"C{i}", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("noise-prediction MSE")
    ax.set_title("Training loss (faint: per step; solid: moving average)")
    ax.legend(fontsize=7)
    out["loss"] = figure_png(fig)

    if "style" in report:
        models = report["style"]["models"]
        names = list(models)
        means = [models[n]["mean"] for n in names]
        err = [[m - (models[n]["ci95"] or [m, m])[0] for n, m in zip(names, means, strict=True)],
               [(models[n]["ci95"] or [m, m])[1] - m for n, m in zip(names, means, strict=True)]]
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names)), 3.4))
        ax.bar(range(len(names)), means, yerr=err, capsize=4, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylabel(report["style"]["metric"]["kind"])
        ax.set_title(f"Style similarity to the held-out works ({report['style']['metric']['direction']}); 95% CI")
        out["style"] = figure_png(fig)

    if "poison" in report:
        counts = report["poison"]["counts"]
        ns = [int(k) for k in counts]
        means = [counts[k]["mean"] for k in counts]
        lo = [m - (counts[k]["ci95"] or [m, m])[0] for k, m in zip(counts, means, strict=True)]
        hi = [(counts[k]["ci95"] or [m, m])[1] - m for k, m in zip(counts, means, strict=True)]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.errorbar(ns, means, yerr=[lo, hi], marker="o", capsize=4)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("poisoned training images N")
        ax.set_ylabel(f"share drawn as '{report['poison']['anchor']}'")
        ax.set_title("Concept poisoning: attack success vs N (95% CI)")
        out["poison"] = figure_png(fig)
    return out


def _thumb(path: str, width: int = 96) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<img alt="{html.escape(Path(path).name)}" title="{html.escape(Path(path).name)}" '
            f'src="data:image/png;base64,{data}" '
            f'style="width:{width}px;max-width:none;margin:1px;image-rendering:pixelated">')


def _grid(prompts: list[str], samples: dict[str, list[list[str]]], seeds: list) -> str:
    """Rows = prompts, columns = models; each cell the images of every seed, in seed order."""
    width = max(32, min(96, 880 // max(1, len(samples) * len(seeds))))  # one row of images fits the page
    head = "<tr><th>prompt</th>" + "".join(f"<th style='text-align:center'>{html.escape(_label(m))}</th>"
                                           for m in samples) + "</tr>"
    rows = []
    for i, prompt in enumerate(prompts):
        cells = "".join("<td style='text-align:center;white-space:nowrap'>"
                        + "".join(_thumb(p, width) for p in samples[m][i]) + "</td>"
                        for m in samples)
        rows.append(f"<tr><td>{html.escape(prompt)}</td>{cells}</tr>")
    return (f"<p class='note'>Seeds {', '.join(map(str, seeds))}, left to right in each cell.</p>"
            f"<table>{head}{''.join(rows)}</table>")


def render_html(report: dict) -> str:
    figs = plots(report)
    seeds = report["generation"]["seeds"]
    h = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
         "<title>Fixative fine-tuning evaluation</title>", f"<style>{CSS}</style></head><body>",
         "<h1>Fine-tuning evaluation: what a model trained on the images learns</h1>",
         "<p class='note'>Each fine-tune is trained with the same captions, seed and steps; every model draws the "
         f"same prompts with the same seeds ({', '.join(map(str, seeds))}). Intervals are 95% t-intervals over the "
         "generation seeds (each set is trained once).</p>"]
    if "style" in report:
        st = report["style"]
        h += ["<h2>Style mimicry</h2>",
              f"<p>Similarity of the generations to the artist's {len(st['heldout'])} held-out clean image(s): "
              f"{html.escape(st['metric']['name'])}, {html.escape(st['metric']['direction'])}, averaged over prompts "
              "and references. A protection works when the model trained on protected images is <b>further</b> "
              "from the artist's style than the model trained on the clean images (the difference row).</p>",
              html_table(style_rows(report)), img_tag(figs["style"], "style similarity"),
              "<h3>Generations (rows: prompts; columns: models; same seeds in every cell)</h3>",
              _grid(st["prompts"], st["samples"], seeds)]
    if "poison" in report:
        po = report["poison"]
        h += ["<h2>Concept poisoning</h2>",
              f"<p>Prompt <code>{html.escape(po['prompt'])}</code>; a generation is an attack success when "
              f"{html.escape(po['classifier'])} labels it as one of: {html.escape(', '.join(po['anchor_labels']))}. "
              "N = 0 is the same training without poison.</p>",
              html_table(poison_rows(report)), img_tag(figs["poison"], "poisoning sweep")]
        rows = "".join(f"<tr><td>N = {html.escape(k.removeprefix('poison-'))}</td><td style='text-align:left'>"
                       + "".join(_thumb(p) for p in v[0][:8]) + "</td></tr>" for k, v in po["samples"].items())
        h += [f"<h3>Generations of <code>{html.escape(po['prompt'])}</code> (first 8 of each model)</h3>",
              f"<table><tr><th>model</th><th>images</th></tr>{rows}</table>"]
    h += ["<h2>Training</h2>", img_tag(figs["loss"], "loss curves"),
          html_table([["run", "data", "images", "steps", "resumed from", "seconds", "final loss",
                       "trainable parameters"]]
                     + [[n, html.escape(r["data"]), str(r["images"]), str(r["steps"]), fmt(r["resumed_from"]),
                         fmt(r["seconds"], 1), fmt(r["final_loss"], 4), str(r.get("trainable_parameters"))]
                        for n, r in report["runs"].items()]),
          "<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(report['settings'], indent=1))}</pre>",
          "<p class='note'>Every number, per seed and per prompt, is in report.json beside this file; the images "
          "are in samples/.</p></body></html>"]
    return "\n".join(h)


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``headline.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "html": out_dir / "report.html", "headline": out_dir / "headline.md"}
    atomic_write(paths["json"], (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    atomic_write(paths["html"], render_html(report).encode())
    atomic_write(paths["headline"], (headline_text(report) + "\n").encode())
    return paths
