"""Short display names for encoder specs (a path shows as its file name without ``_encoder.pth``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath


def short_name(spec: str) -> str:
    """``/models/taesd/tiny_encoder.pth`` -> ``tiny``; ``org/vae`` and short names stay as they are."""
    text = str(spec)
    if "/" not in text and "\\" not in text:
        return text
    path = PurePath(text)
    if path.suffix in (".pth", ".pt", ".safetensors", ".ckpt", ".bin") or text.startswith(("/", ".", "~")):
        stem = path.stem if path.suffix else path.name
        return stem.removesuffix("_encoder") or text
    return text


def display_names(specs: Sequence[str]) -> dict[str, str]:
    """Spec -> display name; a spec keeps its full text where short names would collide."""
    short = {s: short_name(s) for s in specs}
    counts: dict[str, int] = {}
    for v in short.values():
        counts[v] = counts.get(v, 0) + 1
    return {s: (v if counts[v] == 1 else s) for s, v in short.items()}
