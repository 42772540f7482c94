"""The strength report's image grid: one row of thumbnails per image (original, protected, the
difference amplified, the decoded views, the target), as PNG bytes with its column names."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.eval.names import short_name

#: (encoder name, decoded protected view, decoded original view), or None when no encoder decodes
Decoded = tuple[str, Tensor, Tensor] | None


def to_png(image: Tensor) -> bytes:
    """(1,3,H,W) in [0,1] -> PNG bytes (8 bit, optimised)."""
    arr = (image[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def amplified_difference(original: Tensor, protected: Tensor) -> tuple[Tensor, float]:
    """Signed difference shown around mid-grey, amplified so its largest change reaches the
    full range (at most 50x). Returns (image, amplification)."""
    d = protected.float() - original.float()
    peak = float(d.abs().max())
    amp = min(50.0, 0.5 / peak) if peak > 0 else 1.0
    return (0.5 + d * amp).clamp(0, 1), amp


def grid_png(x: Tensor, xp: Tensor, t: Tensor | None, decoded: Decoded, height: int) -> bytes:
    """One row of thumbnails ``height`` px high: original, protected, amplified difference, decoded views, target."""
    diff, _ = amplified_difference(x, xp)
    tiles = [x, xp, diff]
    if decoded is not None:
        tiles += [decoded[2], decoded[1]]
    if t is not None:
        tiles.append(t)
    scale = height / x.shape[-2]
    w = max(1, round(x.shape[-1] * scale))
    small = [F.interpolate(v.float().cpu(), size=(height, w), mode="bicubic", antialias=scale < 1,
                           align_corners=False).clamp(0, 1) for v in tiles]
    gap = torch.ones(1, 3, height, 4)
    row = []
    for i, s in enumerate(small):
        row += [s] if i == 0 else [gap, s]
    return to_png(torch.cat(row, dim=-1))


def grid_columns(x: Tensor, xp: Tensor, t: Tensor | None, decoded: Decoded) -> list[str]:
    """The column names of :func:`grid_png`'s row."""
    _, amp = amplified_difference(x, xp)
    cols = ["original", "protected", f"difference x{amp:.0f}"]
    if decoded is not None:
        cols += [f"decoded original ({short_name(decoded[0])})", f"decoded protected ({short_name(decoded[0])})"]
    return cols + (["target"] if t is not None else [])
