"""What the app says in words: the presets, the expected time on this machine, the achieved
metrics, and the progress bars (as HTML). Plain functions of plain data, no gradio here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from fixative.batch.timing import duration
from fixative.presets import INTENSITIES, INTENSITY_MEASURED, QUALITIES

#: how each intensity looks (the measurements behind it: protect/presets.py, INTENSITY_MEASURED)
INTENSITY_LOOKS = {
    "low": "invisible at normal size; a faint grain when zoomed in, where a JPEG shows its ringing",
    "medium": "like a web JPEG: a fine grain on flat areas on close inspection",
    "high": "visible when zoomed in on flat areas and gradients; the strongest protection",
}
INTENSITY_LABELS = {"low": "Low (subtle)", "medium": "Medium (balanced)", "high": "High (strongest)"}
#: the most megapixels a search with training views runs at (shorter side 1024 px of a 16:9 image)
SEARCH_MEGAPIXELS = 1.87
QUALITY_LABELS = {"preview": "Preview", "fast": "Fast", "standard": "Standard", "best": "Best"}


@dataclass
class SpeedTable:
    """Measured search speed on this machine: seconds per step per megapixel, per (encoders, device).

    Filled from the app's own runs (every protected image) and from "Measure speed"; time grows about
    in proportion to the number of pixels, which is the estimate's assumption.
    """

    samples: dict[tuple[tuple[str, ...], str], tuple[float, float, str]] = field(default_factory=dict)

    def add(self, encoders: list[str], device: str, steps: int, seconds: float, megapixels: float,
            source: str) -> None:
        """Add ``steps`` search steps that took ``seconds`` on an image of ``megapixels`` (``source`` says how)."""
        if steps <= 0 or megapixels <= 0 or seconds <= 0:
            return
        key = (tuple(encoders), device)
        total_s, total_work, _ = self.samples.get(key, (0.0, 0.0, ""))
        self.samples[key] = (total_s + seconds, total_work + steps * megapixels, source)

    def per_step_mp(self, encoders: list[str], device: str) -> tuple[float, str] | None:
        """(seconds per step per megapixel, how it was measured), or None before any measurement."""
        entry = self.samples.get((tuple(encoders), device))
        if entry is None:
            return None
        seconds, work, source = entry
        return seconds / work, source

    def estimate(self, encoders: list[str], device: str, steps: int, limit: float | None,
                 megapixels: float) -> float | None:
        """Expected search seconds for one image of ``megapixels`` (None before any measurement). With training
        views the search runs at most at the largest view's size, so the cost stops growing above it."""
        rate = self.per_step_mp(encoders, device)
        if rate is None:
            return None
        seconds = steps * rate[0] * min(megapixels, SEARCH_MEGAPIXELS)
        return min(seconds, limit) if limit else seconds


def intensity_table(selected: str | None = None) -> str:
    """Markdown: each intensity's visibility (as a JPEG quality), its measured FLIP and effect, and its look."""
    rows = ["| Intensity | No more visible than | Measured FLIP | Measured effect (distance ratio) | "
            "What it looks like |", "| --- | --- | --- | --- | --- |"]
    for name, quality in INTENSITIES.items():
        label = INTENSITY_LABELS[name]
        label = f"**{label}**" if name == selected else label
        flip, ratio = INTENSITY_MEASURED[name] or ("not measured yet", "not measured yet")
        rows.append(f"| {label} | the picture saved as JPEG at quality {quality} | {flip} | {ratio} | "
                    f"{INTENSITY_LOOKS[name]} |")
    return "\n".join(rows) + ("\n\nFLIP measures the difference a viewer sees when flipping between two pictures "
                              "(0 = none), at the picture's own size and zoomed to 200 %; each picture is compared "
                              "with its own JPEG, and the saved file is checked after rounding. The measured "
                              "figures come from benchmarks/visibility.py (see the README).")


def quality_table(speed: SpeedTable, encoders: list[str], device: str, megapixels: float | None,
                  selected: str | None = None, steps_override: int | None = None) -> str:
    """Markdown: each quality's steps, time limit and expected time per image on this machine."""
    mp = megapixels or 1.0
    size = f"your images' average size ({mp:.2f} megapixels)" if megapixels else "a 1-megapixel image"
    rows = ["| Quality | Search steps | Time limit per image | Expected time per image here |",
            "| --- | --- | --- | --- |"]
    for name, q in QUALITIES.items():
        steps = steps_override or q.steps
        label = f"**{QUALITY_LABELS[name]}**" if name == selected else QUALITY_LABELS[name]
        expected = speed.estimate(encoders, device, steps, q.seconds, mp)
        rows.append(f"| {label} | {steps} | {duration(q.seconds) if q.seconds else 'none'} | "
                    f"{'about ' + duration(expected) if expected is not None else 'not measured yet'} |")
    rate = speed.per_step_mp(encoders, device)
    if rate is None:
        how = ("Expected times appear once the speed of this machine is known: press **Measure speed** "
               "(a few steps on a test image) or protect a first image.")
    else:
        how = (f"Estimated for {size} from a measured {rate[0]:.3g} s per step per megapixel with "
               f"{', '.join(encoders)} on {device} ({rate[1]}); time grows about in proportion to the pixels. "
               "Loading the models the first time adds to it.")
    return "\n".join(rows) + "\n\nMore steps give a stronger protection for the same visible change. " + how


# --- metrics in words -------------------------------------------------------------------------------

_STOPPED = {
    "steps": "it reached the step limit",
    "seconds": "it reached the time limit",
    "early-stop": "it stopped improving (early stop)",
    "cancelled": "it was cancelled",
}


def _short(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def metrics_words(record: dict) -> str:
    """The achieved metrics of one protected image, from its provenance record, in plain words (Markdown)."""
    m, s = record.get("metrics", {}), record.get("settings", {})
    budget = s.get("budget")
    lines = []
    flip = m.get("flip")
    if flip is not None:
        allowed = ""
        if m.get("flip_limit") is not None and s.get("like_jpeg"):
            allowed = (f" (allowed: {m['flip_limit']:.4f}, what saving this picture as JPEG at quality "
                       f"{s['like_jpeg']} does to it)")
        like = (f"; about as visible as saving it as JPEG at quality {m['like_jpeg']}"
                if m.get("like_jpeg") is not None else "")
        lines.append(f"- **Visible change**: FLIP {flip:.4f}{allowed}{like}. FLIP is the difference a viewer sees "
                     "when flipping between the two pictures; 0 means none.")
    lp = m.get("lpips")
    if lp is not None:
        allowed = f" (allowed: {budget:.3f})" if budget else ""
        lines.append(f"- **Perceptual distance**: LPIPS {lp:.4f}{allowed} (0 = identical).")
    if m.get("linf") is not None:
        cap = f" (cap: {s['linf'] * 255:.0f})" if s.get("linf") else ""
        lines.append(f"- **Largest change of any pixel**: {m['linf'] * 255:.1f} of 255 levels{cap}.")
    if m.get("psnr") is not None:
        lines.append(f"- **Similarity**: PSNR {m['psnr']:.1f} dB (higher = closer), SSIM "
                     f"{m.get('ssim', float('nan')):.3f} (1 = identical structure).")
    ratio = m.get("ratio")
    after = m.get("distance_after") or {}
    if ratio:
        for name, r in ratio.items():
            checked = " (measured only, not protected against)" if name in (m.get("checked") or []) else ""
            lines.append(f"- **Effect on the model ({_short(name)})**{checked}: the distance between what it sees "
                         f"and the target shrank to {r * 100:.0f} % of what it was (ratio {r:.3f}; lower is "
                         "stronger, 1 = no effect).")
    elif after:
        for name, d in after.items():
            lines.append(f"- **Effect on the model ({_short(name)})**: what it sees moved {d:.2f} away from the "
                         "original's encoding (latent distance; larger is stronger).")
    at_views = m.get("view_ratio") or {}
    if at_views:
        lines.append("- **What a model trained on it sees** (the file resized as trainers do): ratio "
                     + ", ".join(f"{r:.3f} at the {name} view" for name, r in at_views.items()) + ".")
    if m.get("steps") is not None:
        why = _STOPPED.get(m.get("stopped", ""), m.get("stopped", ""))
        tiles = f" over {m['tiles']} tiles" if m.get("tiles", 1) > 1 else ""
        lines.append(f"- **Search**: {m['steps']} steps{tiles} in {m.get('seconds', 0):.1f} s; it ended because {why}.")
    scale = m.get("scale")
    if scale is not None and abs(scale - 1) > 1e-6:
        what = ("scaled back to stay within the budget after rounding to whole levels" if scale < 1
                else "stretched into budget the search left unused")
        lines.append(f"- The change was {what} (x{scale:.2f}).")
    target = record.get("target") or {}
    if target:
        kind = target.get("kind")
        desc = {"style": f"the image re-rendered in the style '{target.get('style', '?')}'",
                "anchor": f"a made image of '{target.get('anchor', '?')}'",
                "pattern": f"the built-in '{target.get('pattern', '?')}' pattern",
                "code": f"made on this computer by code: the built-in '{target.get('name', '?')}' (no diffusion "
                        "model)",
                "image": f"your target image {_short(str(target.get('path', '')))}"}.get(kind, str(kind))
        lines.append(f"- **Target**: {desc}.")
    return "\n".join(lines)


# --- errors in plain words ---------------------------------------------------------------------------


def plain_error(exc: Exception) -> str:
    """A job's failure in words an artist can act on (Markdown): what went wrong, what to do, then the details."""
    from fixative.errors import ModelNotFoundError

    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, ModelNotFoundError):
        message = (f"**A model this protection needs is not on this computer** ({first}).\n\n"
                   "What to do: choose the style **built-in** (made on this computer, no download) or drop your "
                   "own target image, and press Protect again. To use this model instead, run "
                   "`fixative models fetch NAME` once on a computer with internet access (`fixative models list` "
                   "shows the names and where files go).")
    else:
        message = (f"**Could not protect**: {first}\n\nWhat to do: change the setting it names and press Protect "
                   "again; the images you dropped are untouched.")
    if "\n" in text:
        message += "\n\n<details><summary>Details</summary>\n\n```\n" + text + "\n```\n</details>"
    return message


# --- progress ----------------------------------------------------------------------------------------


@dataclass
class JobProgress:
    """Where a job is, updated from the engine's callbacks (read by the app to draw the bars).

    ``phase``: "waiting", "loading", "preparing", "protecting", "finishing", "done", "cancelled" or
    "failed"; ``index``/``count``: images done so far / in the job; ``step``/``steps``/``tile``/``tiles``:
    the current image's search; ``fraction``: the current image's progress in [0,1].
    """

    phase: str = "waiting"
    message: str = ""
    index: int = 0
    count: int = 0
    name: str = ""
    step: int = 0
    steps: int = 0
    tile: int = 1
    tiles: int = 1
    fraction: float = 0.0
    lpips: float | None = None
    eta: float | None = None  # seconds left in the whole job (estimated), None before it is known

    @property
    def batch_fraction(self) -> float:
        if not self.count:
            return 0.0
        return min(1.0, (self.index + (self.fraction if self.phase == "protecting" else 0.0)) / self.count)


def _bar(label: str, fraction: float, detail: str, elem: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="fx-bar" id="{elem}"><div class="fx-bar-label">{html.escape(label)}'
            f'<span class="fx-bar-detail">{html.escape(detail)}</span></div>'
            f'<div class="fx-track"><div class="fx-fill" style="width:{pct:.1f}%"></div></div></div>')


def progress_html(p: JobProgress) -> str:
    """Two bars (the portfolio and the current image) and a status line, as HTML."""
    status = f'<div class="fx-status" data-phase="{p.phase}">{html.escape(p.message)}</div>'
    if p.phase == "waiting" and not p.count:
        return status
    done = p.count if p.phase == "done" else p.index
    left = f", about {duration(p.eta)} left" if p.eta is not None and p.phase == "protecting" else ""
    batch = _bar("All images", 1.0 if p.phase == "done" else p.batch_fraction, f"{done} of {p.count} done{left}",
                 "fx-bar-batch")
    if p.phase == "protecting":
        tiles = f", tile {p.tile} of {p.tiles}" if p.tiles > 1 else ""
        lp = f", visible change {p.lpips:.3f}" if p.lpips is not None else ""  # the budget's measure (FLIP or LPIPS)
        detail = f"step {p.step} of {p.steps}{tiles}{lp}"
        image = _bar(f"This image: {p.name}", p.fraction, detail, "fx-bar-image")
    elif p.phase == "done":
        image = _bar("This image", 1.0, "finished", "fx-bar-image")
    else:
        image = _bar(f"This image: {p.name}" if p.name else "This image", 0.0, p.phase, "fx-bar-image")
    return status + batch + image


PROGRESS_CSS = """
.fx-bar { margin: 6px 0; }
.fx-bar-label { font-size: 0.9em; display: flex; justify-content: space-between; gap: 1em; }
.fx-bar-detail { opacity: 0.75; }
.fx-track { height: 10px; border-radius: 5px; background: rgba(128,128,128,0.25); overflow: hidden; }
.fx-fill { height: 100%; background: #3b82f6; transition: width 0.2s; }
.fx-status { font-weight: 600; margin: 4px 0; }
"""


def posting_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for "where will you post it?": any site (the default), each platform of
    ``protect/platforms.toml`` with what it does to uploads, or nowhere (no robust layer)."""
    from fixative.batch.platforms import platforms

    choices = [("Online, any site (default: survives resizing to 2048 px and JPEG 85)", "generic")]
    for key, p in platforms().items():
        if key != "generic":
            choices.append((f"{p.name} (up to {p.long_side} px, JPEG about {p.jpeg_quality})", key))
    choices.append(("Nowhere online: strongest on the file itself, weaker once re-compressed", "off"))
    return choices
