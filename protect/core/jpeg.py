"""Differentiable JPEG: what a re-encode to a file does to pixels, with straight-through rounding."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.errors import ConfigError


def round_ste(x: Tensor) -> Tensor:
    """Exact rounding forward, identity gradient backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def quantize_ste(image: Tensor, levels: int = 255) -> Tensor:
    """Round [0,1] pixels to ``levels`` steps, straight-through (what saving to a file does)."""
    return round_ste(image.clamp(0, 1) * levels) / levels


# the IJG (libjpeg) example tables, Annex K of ITU-T T.81
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def quant_table(quality: int, chroma: bool = False) -> Tensor:
    """The 8x8 quantisation table libjpeg uses at ``quality`` (1-100), as float32."""
    quality = int(min(100, max(1, quality)))
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float64).view(8, 8)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255).float()


@lru_cache(maxsize=1)
def _dct_matrix() -> Tensor:
    """Orthonormal 8-point DCT-II matrix D (coefficients = D @ block @ D.T)."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float()


def _blocks_quantize(plane: Tensor, table: Tensor) -> Tensor:
    """DCT, quantise (straight-through rounding), dequantise and inverse DCT of 8x8 blocks.

    ``plane``: N x H x W, level-shifted (-128), H and W multiples of 8."""
    n, h, w = plane.shape
    d = _dct_matrix().to(plane.device, plane.dtype)
    q = table.to(plane.device, plane.dtype)
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coef = d @ blocks @ d.T
    coef = round_ste(coef / q) * q
    back = d.T @ coef @ d
    return back.permute(0, 1, 3, 2, 4).reshape(n, h, w)


def jpeg(images: Tensor, quality: int, subsampling: bool = True) -> Tensor:
    """Differentiable JPEG compress-decompress of [0,1] images (N x 3 x H x W) at ``quality`` (1-100).

    Baseline JPEG as libjpeg (and so PIL) does it: JFIF YCbCr, 4:2:0 chroma subsampling when
    ``subsampling`` (2x2 averaging; decoded with libjpeg's "fancy" triangular upsampling, i.e.
    bilinear), 8x8 DCT, the IJG tables scaled to ``quality``, rounding; the decoded pixels are
    rounded to 8 bits. Rounding is exact in the forward pass and straight-through backwards, so
    the forward result is within about one level of PIL's decoder (which uses integer DCTs).
    """
    if images.shape[1] != 3:
        raise ConfigError(f"JPEG needs RGB images (N x 3 x H x W), got {tuple(images.shape)}")
    x = images.float().clamp(0, 1) * 255
    h, w = x.shape[-2:]
    mult = 16 if subsampling else 8
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    chroma = torch.stack([cb, cr], dim=1)
    if subsampling:
        chroma = F.avg_pool2d(chroma, 2)
    n = x.shape[0]
    y = _blocks_quantize(y - 128, quant_table(quality)) + 128
    ch, cw = chroma.shape[-2:]
    c = _blocks_quantize(chroma.reshape(n * 2, ch, cw) - 128, quant_table(quality, chroma=True)).reshape(
        n, 2, ch, cw) + 128
    if subsampling:
        c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = c[:, 0] - 128, c[:, 1] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    rgb = rgb[..., :h, :w] / 255
    return quantize_ste(rgb).to(images.dtype)
