"""Platform presets: what common platforms do to uploads, and robust protection tuned to it.

The data (longer-side limit, JPEG quality, chroma subsampling, sources, which figures are only
approximate) is in ``platforms.toml`` beside this module. ``fixative protect --for PLATFORM``
protects for that platform's pipeline: :func:`robust_for` takes a robust preset (``web`` unless
``--robust strong``) and replaces its JPEG and resizing parts with the platform's: JPEG around the
platform's quality with its subsampling, and, for an image larger than the platform's limit, the
downscale factor the platform will apply (with a little jitter), both drawn more often.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from fixative.core.robust import PRESETS, RobustSettings
from fixative.errors import ConfigError

DATA = Path(__file__).with_name("platforms.toml")
#: the platform ``--robust web`` protects for when ``--for`` names none (chosen from measurements:
#: see the README's "Posting online")
DEFAULT_PLATFORM = "generic"
SUBSAMPLINGS = ("4:2:0", "4:4:4")
_FIELDS = {"name", "long_side", "jpeg_quality", "subsampling", "sources", "approximate"}


@dataclass(frozen=True)
class Platform:
    """One platform's upload pipeline (see ``platforms.toml`` for the meaning of each field)."""

    key: str
    name: str
    long_side: int
    jpeg_quality: int
    subsampling: str
    sources: tuple[str, ...]
    approximate: tuple[str, ...]

    def describe(self) -> dict:
        """JSON-ready (records and the settings hash)."""
        return {"key": self.key, "name": self.name, "long_side": self.long_side, "jpeg_quality": self.jpeg_quality,
                "subsampling": self.subsampling, "approximate": list(self.approximate)}


def parse_platforms(text: str, where: str = "platforms.toml") -> dict[str, Platform]:
    """Parse and validate platform data (TOML text); raises ConfigError naming the entry and the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    out: dict[str, Platform] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: [{key}] must be a table")
        missing, extra = _FIELDS - set(entry), set(entry) - _FIELDS
        if missing or extra:
            raise ConfigError(f"{where}: [{key}] " + "; ".join(
                ([f"missing {', '.join(sorted(missing))}"] if missing else [])
                + ([f"unknown {', '.join(sorted(extra))}"] if extra else [])))
        side, quality, sub = entry["long_side"], entry["jpeg_quality"], entry["subsampling"]
        if not isinstance(side, int) or not 64 <= side <= 16384:
            raise ConfigError(f"{where}: [{key}] long_side must be a whole number of pixels, 64-16384, got {side!r}")
        if not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ConfigError(f"{where}: [{key}] jpeg_quality must be 1-100, got {quality!r}")
        if sub not in SUBSAMPLINGS:
            raise ConfigError(f"{where}: [{key}] subsampling must be one of {', '.join(SUBSAMPLINGS)}, got {sub!r}")
        sources, approx = entry["sources"], entry["approximate"]
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
            raise ConfigError(f"{where}: [{key}] needs at least one source (a list of strings)")
        if not isinstance(approx, list) or not set(approx) <= {"long_side", "jpeg_quality", "subsampling"}:
            raise ConfigError(f"{where}: [{key}] approximate must list fields among long_side, jpeg_quality, "
                              f"subsampling, got {approx!r}")
        out[key] = Platform(key, str(entry["name"]), side, quality, sub, tuple(sources), tuple(approx))
    if not out:
        raise ConfigError(f"{where}: no platforms")
    return out


@lru_cache(maxsize=1)
def platforms() -> dict[str, Platform]:
    """The bundled platform presets, by key."""
    return parse_platforms(DATA.read_text(encoding="utf-8"), str(DATA))


def get_platform(key: str) -> Platform:
    """One platform by key (case-insensitive; "twitter" is "x")."""
    known = platforms()
    k = key.strip().lower()
    k = {"twitter": "x"}.get(k, k)
    if k not in known:
        raise ConfigError(f"unknown platform {key!r}; choose one of {', '.join(known)}", field="search.platform")
    return known[k]


#: the smallest downscale factor a robust mix draws (fixative.core.robust.RobustSettings allows no less)
MIN_FACTOR = 0.05


def resize_range(factor: float) -> tuple[float, float]:
    """The downscale factors drawn for a platform that shrinks by ``factor`` (0-1): -20%/+10% around it,
    kept within [0.05, 1] and never empty (a 30000-px strip shrunk to 1080 px is drawn at 0.05)."""
    low = min(1.0, max(MIN_FACTOR, factor * 0.8))
    return low, min(1.0, max(low, factor * 1.1))


def robust_for(platform: Platform, size: tuple[int, int] | None = None, level: str = "web") -> RobustSettings:
    """The robust mix for ``platform``'s pipeline, for an image of ``size`` (H, W) px.

    Starts from the ``level`` preset ("web" or "strong"); JPEG is drawn with probability >= 0.8 at
    qualities from 10 below to 5 above the platform's, with its subsampling; when the image is
    larger than the platform's limit, resizing is drawn with probability >= 0.8 at the platform's
    downscale factor -20%/+10%.
    """
    if level not in PRESETS:
        raise ConfigError(f"search.platform needs robust protection: use search.robust web or strong, not {level!r}",
                          field="search.platform")
    base = PRESETS[level]
    q = platform.jpeg_quality
    changes: dict = {
        "name": f"{base.name}+{platform.key}",
        "jpeg_prob": max(base.jpeg_prob, 0.8),
        "jpeg_quality": (max(1, q - 10), min(100, q + 5)),
        "jpeg_subsampling": platform.subsampling == "4:2:0",
    }
    if size is not None:
        factor = platform.long_side / max(size)
        if factor < 1:
            changes["resize_prob"] = max(base.resize_prob, 0.8)
            changes["resize_factor"] = resize_range(factor)
    return replace(base, **changes)
