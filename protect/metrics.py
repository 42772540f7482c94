"""Pixel-space image quality metrics on float images in [0,1], NCHW.

Each returns one float per image (a tensor of shape [N]). LPIPS lives in
:mod:`protect.perceptual` because it needs a network.
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


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004), Gaussian window 11, sigma 1.5; 1.0 = identical.

    Computed per channel on the valid region and averaged; images smaller than the window
    use a window shrunk to fit.
    """
    a, b = a.float(), b.float()
    c = a.shape[1]
    size = min(window, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # odd
    w = _gaussian_window(size, sigma, c, a.device)
    c1, c2 = 0.01**2, 0.03**2
    mu_a = F.conv2d(a, w, groups=c)
    mu_b = F.conv2d(b, w, groups=c)
    var_a = F.conv2d(a * a, w, groups=c) - mu_a**2
    var_b = F.conv2d(b * b, w, groups=c) - mu_b**2
    cov = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(dim=1)
