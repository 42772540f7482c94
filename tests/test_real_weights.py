"""Behaviour on real weights from ../shared/models: LPIPS reference values, taef2 protection."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fixative.core.optimizer import OptimizerSettings
from fixative.files.images import load_image
from fixative.models.loading import load_protector
from fixative.models.perceptual import load_perceptual
from fixative.models.store import ModelStore


@pytest.fixture(scope="module")
def store(shared_models_dir):
    return ModelStore(shared_models_dir)


@pytest.mark.parametrize("net,expected", [("alex", (0.7219, 0.1376)), ("vgg", (0.5686, 0.4217))])
def test_lpips_reference_distances(store, shared_models_dir, net, expected):
    ref_dir = shared_models_dir / "lpips" / "reference"
    ref, p0, p1 = (load_image(ref_dir / f"{n}.png").rgb for n in ("ex_ref", "ex_p0", "ex_p1"))
    lp = load_perceptual(net, store=store)
    with torch.no_grad():
        assert float(lp.distance(ref, p0)) == pytest.approx(expected[0], abs=1e-3)
        assert float(lp.distance(ref, p1)) == pytest.approx(expected[1], abs=1e-3)


def _photo(shared: Path, name: str, size: int) -> torch.Tensor:
    rgb = load_image(shared / "images" / name).rgb
    return F.interpolate(rgb, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)


def test_taef2_distance_to_target_falls(shared_dir, shared_models_dir):
    protector = load_protector(["taef2"], models_dir=str(shared_models_dir), device="cpu")
    x, t = _photo(shared_dir, "LadyBird.jpg", 128), _photo(shared_dir, "YellowFlower.jpg", 128)
    result = protector.protect(x, t, budget=0.07, settings=OptimizerSettings(steps=25, seed=0))
    assert result.metrics.lpips <= 0.07
    assert float(protector.perceptual.distance(result.image, x)) <= 0.07
    assert result.metrics.ratio["taef2"] < 0.8
    assert result.metrics.psnr > 20  # LPIPS 0.07 is typically 23-30 dB
