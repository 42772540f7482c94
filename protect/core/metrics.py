"""Pixel-space image quality metrics on float images in [0,1], NCHW.

Each returns one float per image (a tensor of shape [N]). LPIPS lives in
:mod:`fixative.models.perceptual` because it needs a network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for peak 1.0; ``inf`` for identical images."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse)


def linf(a: Tensor, b: Tensor) -> Tensor:
    """Largest absolute pixel difference, in [0,1] units (multiply by 255 for 8-bit levels)."""
    return (a.float() - b.float()).abs().flatten(1).amax(dim=1)


def _gaussian_blur(image: Tensor, size: int, sigma: float) -> Tensor:
    """Separable Gaussian filter of a 1-channel batch, 'valid' region only (two 1-D passes)."""
    coords = torch.arange(size, dtype=torch.float32, device=image.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return F.conv2d(F.conv2d(image, g.view(1, 1, size, 1)), g.view(1, 1, 1, size))


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004), Gaussian window 11, sigma 1.5; 1.0 = identical.

    Computed per channel on the valid region and averaged (one channel at a time, so that large
    images need little memory); images smaller than the window use a window shrunk to fit.
    """
    size = min(window, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # odd
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for ch in range(a.shape[1]):
        x, y = a[:, ch : ch + 1].float(), b[:, ch : ch + 1].float()
        def blur(v: Tensor) -> Tensor:
            return _gaussian_blur(v, size, sigma)

        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        per_channel.append((num / den).flatten(1).mean(dim=1))
    return torch.stack(per_channel, dim=1).mean(dim=1)
