"""The pieces every evaluation page is made of: number formatting, the page style, HTML and Markdown
tables, embedded PNG figures, and an atomic file write. Used by the strength report
(:mod:`fixative.eval.report`), the fine-tuning report (:mod:`fixative.eval.mimicry_report`) and the
side-by-side comparison (:mod:`fixative.eval.compare`).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .55em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em}.good{background:#e8f6e8}.weak{background:#fbeaea}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
code{background:#f4f4f4;padding:0 .2em}
"""


def fmt(value, digits: int = 3, pct: bool = False) -> str:
    """A value for a table cell: "–" for None, yes/no, a percentage, or ``digits`` decimals (escaped text else)."""
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


def html_table(rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    """An HTML table: ``rows[0]`` the header (escaped), the other cells as given (HTML); ``classes`` per body cell."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for i, r in enumerate(rows[1:]):
        cells = []
        for j, c in enumerate(r):
            cls = classes[i][j] if classes and i < len(classes) and j < len(classes[i]) else ""
            cells.append(f'<td class="{cls}">{c}</td>' if cls else f"<td>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def img_tag(b64: str, alt: str) -> str:
    """An ``<img>`` of a base64 PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def markdown_table(rows: list[list[str]]) -> str:
    """``rows`` (the first is the header) as a Markdown table."""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG (110 dpi); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def atomic_write(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (:func:`fixative.files.atomic.atomic_write`), folders made."""
    from fixative.files.atomic import atomic_write as write

    dest.parent.mkdir(parents=True, exist_ok=True)
    write(dest, data)
