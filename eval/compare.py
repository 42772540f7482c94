"""Several protections of the same originals, measured side by side (e.g. robust and non-robust).

``fixative eval strength --original DIR --protected robust=DIR1 --protected plain=DIR2 --out OUT``
measures each labelled set with the same evaluator (same countermeasures, same noise draws) into
``OUT/LABEL/`` (a full report each) and writes ``OUT/comparison.md`` and ``OUT/comparison.json``:
per condition, each set's gain and retention next to the others'.
"""

from __future__ import annotations

import json
from pathlib import Path

from fixative.errors import ConfigError
from fixative.eval.report_page import atomic_write, fmt, markdown_table
from fixative.eval.report_text import condition_labels, encoder_display
from fixative.eval.strength_types import NONE, StrengthReport


def parse_protected(specs: list[str]) -> list[tuple[str, Path]]:
    """``["DIR"]`` or ``["LABEL=DIR", ...]`` -> [(label, folder)]; a bare DIR is labelled by its name."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        label, sep, folder = spec.partition("=")
        if not sep:
            label, folder = Path(spec).name or "protected", spec
        label = label.strip()
        if not label or any(c in label for c in "/\\") or label.startswith("."):
            raise ConfigError(f"--protected {spec!r}: the label must be a plain name (LABEL=DIR)")
        if not Path(folder).is_dir():
            raise ConfigError(f"--protected {spec!r}: {folder} is not a folder")
        out.append((label, Path(folder)))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--protected: labels must differ, got {', '.join(labels)} (use LABEL=DIR)")
    return out


def comparison_rows(reports: dict[str, StrengthReport]) -> list[list[str]]:
    """Rows: condition, then per set (and encoder) the gain and the retention."""
    first = next(iter(reports.values()))
    names = [e["name"] for e in first.encoders]
    show = encoder_display(first)
    labels = condition_labels(first)
    header = ["condition"]
    for label in reports:
        for n in names:
            who = label if len(names) == 1 else f"{label} {show[n]}"
            header += [f"{who} gain", f"{who} retained"]
    rows = [header]
    for cname in first.aggregate["efficacy"]:
        row = [labels.get(cname, cname)]
        for report in reports.values():
            per = report.aggregate["efficacy"].get(cname, {})
            for n in names:
                e = per.get(n)
                if e is None:
                    row += ["–", "–"]
                    continue
                row += [fmt(e["gain"]), "100%" if cname == NONE else fmt(e["retention"], pct=True)]
        rows.append(row)
    return rows


def comparison_text(reports: dict[str, StrengthReport]) -> str:
    """Markdown: one imperceptibility line per set, then the side-by-side efficacy table."""
    parts = []
    for label, report in reports.items():
        imp = report.aggregate["imperceptibility"]
        parts.append(f"- {label}: {report.aggregate['images']} images, LPIPS alex mean "
                     f"{fmt(imp['lpips_alex']['mean'])} (max {fmt(imp['lpips_alex']['max'])}), "
                     f"PSNR {fmt(imp['psnr']['mean'], 1)} dB, "
                     f"SSIM {fmt(imp['ssim']['mean'])}")
    parts += ["", "Efficacy side by side (gain = 1 - distance ratio to the target; retained = gain after the "
                  "countermeasure / gain without it):", "", markdown_table(comparison_rows(reports))]
    return "\n".join(parts)


def comparison_json(reports: dict[str, StrengthReport]) -> dict:
    """Per set: imperceptibility and, per condition and encoder, gain, ratio and retention."""
    return {label: {"images": r.aggregate["images"], "imperceptibility": r.aggregate["imperceptibility"],
                    "efficacy": {c: {n: {k: e.get(k) for k in ("gain", "ratio", "retention")} for n, e in per.items()}
                                 for c, per in r.aggregate["efficacy"].items()},
                    "countermeasures": r.countermeasures}
            for label, r in reports.items()}


def write_comparison(reports: dict[str, StrengthReport], out_dir: str | Path) -> dict[str, Path]:
    """Write ``comparison.md`` and ``comparison.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    md, js = out_dir / "comparison.md", out_dir / "comparison.json"
    atomic_write(md, (comparison_text(reports) + "\n").encode())
    atomic_write(js, (json.dumps(comparison_json(reports), indent=2, allow_nan=False) + "\n").encode())
    return {"markdown": md, "json": js}
