"""Differentiable image resampling and filtering, on NCHW tensors in [0,1].

:func:`resize` is the one bicubic resize of the library's tensors (antialiased when it shrinks): the
training views, the upsampling of a perturbation searched at work resolution, the robust and evaluation
countermeasures all use it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize (antialiased when shrinking), differentiable."""
    down = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bicubic", antialias=down, align_corners=False)


def down_up(images: Tensor, factor: float) -> Tensor:
    """Downscale by ``factor`` (0-1) and upscale back to the input size (bicubic)."""
    h, w = images.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    if small == (h, w):
        return images
    return resize(resize(images, small), (h, w))


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (reflect padding), kernel radius ceil(3 sigma), sigma in px; differentiable."""
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-(coords**2) / (2 * max(sigma, 1e-6) ** 2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    pad_h, pad_w = min(radius, images.shape[-2] - 1), min(radius, images.shape[-1] - 1)
    x = F.pad(images, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w > 0 else "replicate")
    x = F.conv2d(x, k[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect" if pad_h > 0 else "replicate")
    return F.conv2d(x, k[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
