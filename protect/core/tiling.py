"""Overlapping tiles for images too large to protect whole, and seamless blending of their results.

Tiles are at most ``tile`` pixels on a side, overlap their neighbours by ``overlap`` pixels,
and start on multiples of ``align`` (the encoders' downsampling factor) where the image allows,
so that each tile's latent grid lines up with its neighbours'. Each tile's perturbation is
weighted by a raised-cosine ramp across the overlaps, and the weights are normalised to sum to
one at every pixel (a partition of unity), so the blended perturbation has no seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Tile:
    """A window ``[top:bottom, left:right]`` of the image, in pixels."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def crop(self, image: Tensor) -> Tensor:
        """This tile of an NCHW tensor."""
        return image[..., self.top : self.bottom, self.left : self.right]


def _spans(length: int, tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, end) of the fewest equal tiles of at most ``tile`` px covering ``length`` px.

    The tiles are as small as the overlap allows, so the pixels processed more than once stay
    few (time stays proportional to the image's area); starts are multiples of ``align``
    except the last tile's, which ends at the border.
    """
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, math.ceil((length + (count - 1) * overlap) / count / align) * align)
    while True:
        last = length - size
        starts = [min(last, (round(i * last / (count - 1)) // align) * align) for i in range(count - 1)] + [last]
        if all(b - a <= size - overlap for a, b in zip(starts, starts[1:], strict=False)) or size >= tile:
            break
        size = min(tile, size + align)
    return sorted({(s, s + size) for s in starts})


def plan_tiles(height: int, width: int, tile: int = 1024, overlap: int = 128, align: int = 8) -> list[Tile]:
    """Cover a ``height`` x ``width`` image with overlapping tiles, row by row.

    An image no larger than ``tile`` on both sides is one tile. ``overlap`` must be smaller
    than ``tile``; it is the minimum overlap between neighbours. Along each axis the tiles
    share one size, the smallest that covers the image with that many tiles.
    """
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    return [
        Tile(top, left, bottom, right)
        for top, bottom in _spans(height, tile, overlap, align)
        for left, right in _spans(width, tile, overlap, align)
    ]


def _ramp(length: int, before: int, after: int, device: torch.device) -> Tensor:
    """1-D weights: rising over ``before`` pixels, flat, falling over ``after`` pixels (never 0)."""
    w = torch.ones(length, device=device)
    if before > 0:
        t = (torch.arange(before, device=device) + 0.5) / before
        w[:before] = 0.5 - 0.5 * torch.cos(math.pi * t)
    if after > 0:
        t = (torch.arange(after, device=device) + 0.5) / after
        w[length - after :] = torch.minimum(w[length - after :], 0.5 + 0.5 * torch.cos(math.pi * t))
    return w


def tile_weights(tiles: list[Tile], height: int, width: int, device: torch.device) -> list[Tensor]:
    """One HxW-of-tile weight map per tile; summed over tiles they are 1 at every pixel."""
    raw = []
    for t in tiles:
        # overlap with the nearest neighbour on each side decides the ramp's length
        up = max((o.bottom - t.top for o in tiles if o.top < t.top and o.left < t.right and o.right > t.left),
                 default=0)
        down = max((t.bottom - o.top for o in tiles if o.top > t.top and o.left < t.right and o.right > t.left),
                   default=0)
        left = max((o.right - t.left for o in tiles if o.left < t.left and o.top < t.bottom and o.bottom > t.top),
                   default=0)
        right = max((t.right - o.left for o in tiles if o.left > t.left and o.top < t.bottom and o.bottom > t.top),
                    default=0)
        wy = _ramp(t.height, min(up, t.height), min(down, t.height), device)
        wx = _ramp(t.width, min(left, t.width), min(right, t.width), device)
        raw.append(wy[:, None] * wx[None, :])
    total = torch.zeros(height, width, device=device)
    for t, w in zip(tiles, raw, strict=True):
        total[t.top : t.bottom, t.left : t.right] += w
    return [w / total[t.top : t.bottom, t.left : t.right] for t, w in zip(tiles, raw, strict=True)]


def blend(parts: list[Tensor], tiles: list[Tile], weights: list[Tensor], like: Tensor) -> Tensor:
    """Sum per-tile tensors (N,C,h,w) into one (N,C,H,W) tensor shaped like ``like``."""
    out = torch.zeros_like(like)
    for part, t, w in zip(parts, tiles, weights, strict=True):
        out[..., t.top : t.bottom, t.left : t.right] += part * w
    return out
