"""Writing a :class:`~fixative.eval.strength.StrengthReport`: ``report.json``, a self-contained ``report.html``
(tables, matplotlib plots and image grids embedded as PNG data), and a plain-text headline table.

The HTML needs no network and no code to read: every number has a sentence saying what it means. The
pieces: :mod:`fixative.eval.report_text` (the tables and the Markdown headline),
:mod:`fixative.eval.report_plots` (the figures), :mod:`fixative.eval.report_html` (the page, one
function per section) and :mod:`fixative.eval.report_page` (what every evaluation page shares).
"""

from __future__ import annotations

import json
from pathlib import Path

from fixative.eval.report_html import render_html
from fixative.eval.report_page import atomic_write, markdown_table
from fixative.eval.report_plots import plots
from fixative.eval.report_text import detector_rows, headline_rows, headline_text
from fixative.eval.strength_types import StrengthReport

__all__ = ["detector_rows", "headline_rows", "headline_text", "markdown_table", "plots", "render_html",
           "write_json", "write_report"]


def write_json(report: StrengthReport, dest: str | Path) -> Path:
    """Write ``report.to_json()`` to ``dest`` (indented, atomically); returns the path."""
    dest = Path(dest)
    atomic_write(dest, (json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n").encode())
    return dest


def write_report(report: StrengthReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``headline.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(report, out_dir / "report.json")}
    html_path = out_dir / "report.html"
    atomic_write(html_path, render_html(report).encode())
    paths["html"] = html_path
    md = out_dir / "headline.md"
    atomic_write(md, (headline_text(report) + "\n").encode())
    paths["headline"] = md
    return paths
