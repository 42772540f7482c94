"""Artist-facing presets: ``--intensity`` picks the LPIPS budget, ``--quality`` the search effort.

The numbers (also in the README's options table):

| ``--intensity`` | LPIPS budget | L-inf cap | what it looks like |
| --- | --- | --- | --- |
| ``low`` | 0.03 | 4/255 | very hard to see, even side by side |
| ``medium`` (default) | 0.07 | 8/255 | faint texture on flat and blurred areas when compared side by side |
| ``high`` | 0.10 | 16/255 | visible on flat areas and gradients; strongest protection |

The L-inf cap is there because LPIPS (alex) alone is lenient on smooth, out-of-focus areas: a
poison towards an unrelated image at LPIPS 0.07 with no cap left a visible ghost of the target
in a soft-focus photo (PSNR 23 dB); with the 8/255 cap the same run gave PSNR 32 dB at a
distance ratio of 0.53 instead of 0.43. ``--budget`` alone (no preset) applies no cap unless
``--linf`` is given.

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

INTENSITIES: dict[str, float] = {"low": 0.03, "medium": 0.07, "high": 0.10}
#: per-pixel cap that goes with each intensity preset, in [0,1] units
INTENSITY_LINF: dict[str, float] = {"low": 4 / 255, "medium": 8 / 255, "high": 16 / 255}
DEFAULT_INTENSITY = "medium"


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
DEFAULT_QUALITY = "standard"


def budget_for(intensity: str | None, budget: float | None) -> float:
    """The LPIPS budget: ``budget`` when given, else the intensity preset's."""
    if budget is not None:
        return budget
    return INTENSITIES[intensity or DEFAULT_INTENSITY]


def linf_for(intensity: str | None, budget: float | None, linf: float | None) -> float | None:
    """The L-inf cap: ``linf`` when given; else the preset's, unless an explicit ``budget`` replaced the preset."""
    if linf is not None:
        return linf
    if budget is not None:
        return None
    return INTENSITY_LINF[intensity or DEFAULT_INTENSITY]


def robust_for_quality(quality: str | None, robust: str | None, default: str) -> str:
    """The robust level: ``robust`` when given, else the quality preset's, else ``default``."""
    return robust or QUALITIES[quality or DEFAULT_QUALITY].robust or default


def effort_for(quality: str | None, steps: int | None, seconds: float | None) -> tuple[int, float | None]:
    """(steps, seconds): each explicit value wins over the quality preset's."""
    preset = QUALITIES[quality or DEFAULT_QUALITY]
    return (steps if steps is not None else preset.steps, seconds if seconds is not None else preset.seconds)
