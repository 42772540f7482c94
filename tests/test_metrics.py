import math

import pytest
import torch

from fixative.core.metrics import linf, psnr, ssim

from tiny import smooth_image


def test_identical_images():
    x = smooth_image(40, 50)
    assert math.isinf(float(psnr(x, x)))
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(linf(x, x)) == 0.0


def test_metrics_degrade_with_noise():
    x = smooth_image(64, 64)
    g = torch.Generator().manual_seed(1)
    small = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    big = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert float(psnr(small, x)) > float(psnr(big, x)) > 10
    assert 1 > float(ssim(small, x)) > float(ssim(big, x))
    assert float(linf(big, x)) <= 1 and float(linf(big, x)) > float(linf(small, x))


def test_psnr_known_value():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full_like(x, 0.1)  # mse 0.01 -> 20 dB
    assert float(psnr(y, x)) == pytest.approx(20.0, abs=1e-4)


def test_ssim_small_image_shrinks_window():
    x = smooth_image(6, 9)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)


def test_lpips_in_cells_matches_the_whole_image_and_is_whole_when_small():
    from tiny import tiny_perceptual

    perceptual = tiny_perceptual()
    x = smooth_image(300, 420)
    g = torch.Generator().manual_seed(3)
    noise = torch.zeros_like(x)
    noise[..., :, :150] = 0.05 * torch.randn(noise[..., :, :150].shape, generator=g)  # uneven: cells differ
    y = (x + noise).clamp(0, 1)
    with torch.no_grad():
        whole = float(perceptual.distance(y, x)[0])
        cells = float(perceptual.distance_in_cells(y, x, cell=128, margin=32)[0])
        assert float(perceptual.distance_in_cells(y, x, cell=512)[0]) == pytest.approx(whole, rel=1e-6)
    assert whole > 0
    assert cells == pytest.approx(whole, rel=0.02)
