"""Artist-facing presets: ``--intensity`` picks how visible the protection may be, ``--quality`` the search effort.

Each intensity names its visibility: the protected file is no more visible than the same image saved
as JPEG at a quality, both measured by FLIP (NVIDIA's perceived-difference metric) on that very image,
and guaranteed on the saved pixels (quantise, then scale back). Measured on the images of
``benchmarks/visibility.py`` (see the README for the table):

| ``--intensity`` | no more visible than | what it looks like |
| --- | --- | --- |
| ``low`` | JPEG quality 90 | invisible at 100 %; at 200 % a faint grain where a q90 JPEG shows its ringing |
| ``medium`` (default) | JPEG quality 75 | like a web JPEG: a fine grain on close inspection of flat areas |
| ``high`` | JPEG quality 50 | visible at 200 % on flat areas and gradients; strongest protection |

The budget holds both at the image's own size (FLIP at 67 pixels per degree) and zoomed to 200 %
(:data:`fixative.core.budgets.DEFAULT_ZOOMS`). ``--budget`` gives an LPIPS budget instead (the guarantee of
earlier versions; no pixel cap unless ``--linf`` is given); its former presets are kept in
:data:`LPIPS_INTENSITIES` / :data:`LPIPS_INTENSITY_LINF` for comparisons (``benchmarks/visibility.py``).

| ``--quality`` | steps | search time limit per image |
| --- | --- | --- |
| ``preview`` | 8 | 5 s, without the robust mix unless ``--robust`` asks for it (a first look, not for posting) |
| ``fast`` | 60 | 60 s |
| ``standard`` (default) | 300 | 200 s |
| ``best`` | 1000 | 900 s |

With training views (``--views train``, the default) a step costs the same at any image size above
about 1 MP, so each preset gives the same protection in the same time on a 1 MP and an 18 MP
artwork; the limits were chosen from the gain-versus-steps curve of ``benchmarks/artwork.py``.

``--budget`` and ``--steps``/``--seconds`` give the numbers directly and win over a preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from fixative.defaults import DEFAULT_INTENSITY, DEFAULT_LPIPS_BUDGET, DEFAULT_QUALITY

#: --intensity -> the JPEG quality whose visibility (FLIP, per image) the protection may not exceed
INTENSITIES: dict[str, int] = {"low": 90, "medium": 75, "high": 50}
#: what each intensity measured (benchmarks/visibility.py, taef2 towards Wood.jpg, at the training views; the
#: README's runs): FLIP of the saved file against the original (the picture's own JPEG's in brackets), and the
#: distance ratio (the former LPIPS presets scaled back to the same FLIP in brackets). ``medium``: Elephants,
#: Storm and LadyBird at 1024 px, 30 steps; ``low``/``high``: the four images of the trade-off table, 256 px, 15 steps
INTENSITY_MEASURED: dict[str, tuple[str, str] | None] = {
    "low": ("0.038-0.047 (JPEG 0.046-0.064)", "0.68-0.76 (former presets at equal FLIP: 0.72-0.85)"),
    "medium": ("0.032-0.057 (JPEG 0.034-0.061)", "0.73-0.80 (former default at equal FLIP: 0.78-0.89)"),
    "high": ("0.049-0.088 (JPEG 0.082-0.094)", "0.67-0.70 (former presets at equal FLIP: 0.70-0.74)"),
}
#: the LPIPS presets of earlier versions (LPIPS budget, per-pixel cap in [0,1] units), for comparisons
LPIPS_INTENSITIES: dict[str, float] = {"low": 0.03, "medium": DEFAULT_LPIPS_BUDGET, "high": 0.10}
LPIPS_INTENSITY_LINF: dict[str, float] = {"low": 4 / 255, "medium": 8 / 255, "high": 16 / 255}


@dataclass(frozen=True)
class Quality:
    """An effort preset: at most ``steps`` steps and ``seconds`` of search per image (None = no limit);
    ``robust``: the robust mix it implies when the user names none (None = the command's default)."""

    steps: int
    seconds: float | None
    robust: str | None = None


QUALITIES: dict[str, Quality] = {
    # at 8 steps the robust mix halves the gain (benchmarks/artwork.py's curve): a preview shows the file as saved
    "preview": Quality(steps=8, seconds=5.0, robust="off"),
    "fast": Quality(steps=60, seconds=60.0),
    "standard": Quality(steps=300, seconds=200.0),
    "best": Quality(steps=1000, seconds=900.0),
}


def like_jpeg_for(intensity: str | None, like_jpeg: int | None) -> int:
    """The JPEG quality of the visibility budget: ``like_jpeg`` when given, else the intensity preset's."""
    if like_jpeg is not None:
        return like_jpeg
    return INTENSITIES[intensity or DEFAULT_INTENSITY]


def robust_for_quality(quality: str | None, robust: str | None, default: str) -> str:
    """The robust level: ``robust`` when given, else the quality preset's, else ``default``."""
    return robust or QUALITIES[quality or DEFAULT_QUALITY].robust or default


def effort_for(quality: str | None, steps: int | None, seconds: float | None) -> tuple[int, float | None]:
    """(steps, seconds): each explicit value wins over the quality preset's."""
    preset = QUALITIES[quality or DEFAULT_QUALITY]
    return (steps if steps is not None else preset.steps, seconds if seconds is not None else preset.seconds)
