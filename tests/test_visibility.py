"""The visibility budget: the model agrees with NVIDIA's FLIP, the guarantee holds on saved files, flat areas
get less change than textured ones, the presets keep their promise, and bad values get clear errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fixative.cli.main import main
from fixative.core.budgets import DEFAULT_ZOOMS, LpipsLimit, VisibilityLimit, as_limit, budget_plan, jpeg_equivalent
from fixative.core.engine import Protector
from fixative.core.optimizer import OptimizerSettings
from fixative.core.visibility import (
    DEFAULT_PPD,
    ViewingModel,
    VisibilityBudget,
    VisibilityModel,
    flip_of_file,
    jpeg_reference,
)
from fixative.errors import ConfigError
from fixative.files.images import load_image
from fixative.presets import INTENSITIES

from tiny import TinyEncoder, smooth_image, tiny_perceptual, tiny_protect_args

flip_evaluator = pytest.importorskip("flip_evaluator", reason="flip-evaluator (a dev dependency) is not installed")


@pytest.fixture(scope="module")
def protector():
    return Protector([TinyEncoder(0)], tiny_perceptual(), "cpu")


def _fast(**kw):
    kw.setdefault("steps", 10)
    kw.setdefault("precision", "fp32")
    return OptimizerSettings(**kw)


def _half_flat(h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    """Left half a flat grey-blue, right half a smooth random texture around the same colour."""
    g = torch.Generator().manual_seed(seed)
    img = torch.empty(1, 3, h, w)
    img[...] = torch.tensor([0.45, 0.5, 0.6]).view(1, 3, 1, 1)
    texture = F.interpolate(torch.rand(1, 1, h // 3, w // 6, generator=g), size=(h, w // 2), mode="bicubic",
                            align_corners=False)
    img[..., w // 2 :] += (texture - 0.5) * 0.4
    return img.clamp(0, 1)


@pytest.mark.parametrize("ppd", [DEFAULT_PPD, 20.0])
def test_model_agrees_with_flip_evaluator(ppd):
    x = smooth_image(48, 64, 3)
    for other in (jpeg_reference(x, 40), (x + 0.03 * torch.randn_like(x)).clamp(0, 1)):
        ours = float(VisibilityModel(ppd)(other, x))
        theirs = flip_of_file(x, other, ppd=ppd)
        assert ours == pytest.approx(theirs, rel=2e-3, abs=1e-5)


def test_model_is_differentiable_and_zero_for_identical_images():
    x = smooth_image(32, 40, 1)
    model = VisibilityModel()
    assert float(model(x, x)) < 1e-3
    d = (0.02 * torch.randn_like(x)).requires_grad_(True)
    model((x + d).clamp(0, 1), x).sum().backward()
    assert torch.isfinite(d.grad).all() and float(d.grad.abs().sum()) > 0


def test_masking_counts_changes_on_texture_less():
    x = _half_flat()
    change = 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    on_texture, on_flat = x.clone(), x.clone()
    on_texture[..., 48:] += change[..., 48:]
    on_flat[..., :48] += change[..., :48]
    plain, masked = VisibilityModel(), VisibilityModel(masking=0.2)
    assert float(masked(on_texture, x)) < float(plain(on_texture, x))
    assert float(masked(on_texture, x)) / float(masked(on_flat, x)) < float(plain(on_texture, x)) / float(
        plain(on_flat, x))


def _flip_of_saved(path: Path, x: torch.Tensor) -> float:
    return flip_of_file(x, load_image(path).rgb)


def test_visibility_budget_holds_on_the_saved_file(protector, tmp_path):
    from fixative.files.images import save_png

    x, t = smooth_image(48, 64, 0), smooth_image(48, 64, 1)
    x = load_image(save_png(tmp_path / "x.png", x)).rgb  # the original as a file would hold it
    result = protector.protect(x, t, budget=VisibilityLimit(like_jpeg=60), settings=_fast(steps=15))
    saved = load_image(save_png(tmp_path / "p.png", result.image)).rgb
    jpeg = jpeg_reference(x, 60)
    for zoom in DEFAULT_ZOOMS:  # no more visible than the JPEG, at each viewing
        ppd = DEFAULT_PPD / zoom
        assert flip_of_file(x, saved, ppd) <= flip_of_file(x, jpeg, ppd) + 1e-6
    m = result.metrics
    assert m.flip == pytest.approx(flip_of_file(x, saved), abs=1e-4)
    assert m.flip_limit is not None and m.flip <= m.flip_limit
    assert m.mean_ratio < 1.0 and 1 <= m.like_jpeg <= 100
    assert result.record()["settings"]["like_jpeg"] == 60


def test_visibility_budget_holds_when_tiled(protector):
    x, t = smooth_image(96, 176, 6), smooth_image(96, 176, 7)
    result = protector.protect(x, t, budget=VisibilityLimit(like_jpeg=75), settings=_fast(steps=6), tile_size=64,
                               tile_overlap=24)
    assert result.metrics.tiles > 1
    assert flip_of_file(x, result.image) <= flip_of_file(x, jpeg_reference(x, 75)) + 1e-6


def test_flat_regions_receive_less_change_than_textured_ones(protector):
    x = _half_flat()
    t = smooth_image(64, 96, 9)
    result = protector.protect(x, t, budget=VisibilityLimit(like_jpeg=95), settings=_fast(steps=25, patience=0))
    delta = (result.image - x).abs()
    flat, textured = float(delta[..., 4:44].mean()), float(delta[..., 52:92].mean())
    assert result.metrics.mean_ratio < 1.0 and result.metrics.scale != 1.0  # the budget is what limits it
    assert flat < 0.85 * textured, (flat, textured)
    # FLIP alone (no masking) spreads it evenly: masking is what moves the change off the flat half
    plain = protector.protect(x, t, budget=VisibilityLimit(like_jpeg=95, masking=0.0),
                              settings=_fast(steps=25, patience=0))
    d0 = (plain.image - x).abs()
    assert flat / textured < float(d0[..., 4:44].mean()) / float(d0[..., 52:92].mean())


def test_lpips_budget_is_kept_where_asked(protector):
    x, t = smooth_image(40, 48, 2), smooth_image(40, 48, 3)
    result = protector.protect(x, t, budget=LpipsLimit(0.02), settings=_fast())
    assert result.metrics.lpips <= 0.02
    assert result.record()["settings"]["budget"] == 0.02
    assert result.metrics.flip_limit is None and result.metrics.flip is not None


def test_reduced_resolution_proxy_scales_ppd():
    x = smooth_image(64, 96, 4)
    plan = budget_plan(VisibilityLimit(like_jpeg=75), tiny_perceptual(), x)
    small = F.interpolate(x, size=(32, 48), mode="bilinear", antialias=True, align_corners=False)
    proxy = plan.constraint(small)
    assert proxy.model.models[0].ppd == pytest.approx(DEFAULT_PPD / 2)
    assert proxy.model.models[1].ppd == pytest.approx(DEFAULT_PPD / 4)
    assert 0 < proxy.budget < 1
    final = plan.final()
    assert final.measure(jpeg_reference(x, 75)) == pytest.approx(plan.final_value / 0.998, rel=1e-4)


def test_scale_back_shared_by_both_budgets():
    x = smooth_image(32, 32, 5)
    noise = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    budget = VisibilityBudget(VisibilityModel(), x, 0.05)
    delta, value, scale = budget.scale_back(noise, levels=255)
    assert 0 < scale < 1 and value <= 0.05
    assert budget.measure(x + delta) == pytest.approx(value, abs=1e-6)


def test_jpeg_equivalent_orders_qualities():
    x = smooth_image(48, 48, 8)
    f50 = flip_of_file(x, jpeg_reference(x, 50))
    q = jpeg_equivalent(x, f50)
    assert abs(q - 50) <= 3
    assert jpeg_equivalent(x, 0.0) == 100
    assert jpeg_equivalent(x, f50, measure=flip_of_file) == q


def test_presets_keep_their_promise(tiny_models, tmp_path):
    art = tmp_path / "art.png"
    arr = (smooth_image(40, 56, 0)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(art)
    x = load_image(art).rgb
    for intensity, quality in INTENSITIES.items():
        out = tmp_path / intensity
        assert main(["protect", str(art), "--out", str(out), "--mode", "immunize", "--robust", "off",
                     "--intensity", intensity, *tiny_protect_args(tiny_models, steps=4)]) == 0
        record = json.loads((out / "art.json").read_text())
        assert record["settings"]["like_jpeg"] == quality and record["settings"]["budget_kind"] == "visibility"
        assert _flip_of_saved(out / "art.png", x) <= flip_of_file(x, jpeg_reference(x, quality)) + 1e-6
    # the default is the q75 level
    out = tmp_path / "default"
    assert main(["protect", str(art), "--out", str(out), "--mode", "immunize", "--robust", "off",
                 *tiny_protect_args(tiny_models, steps=3)]) == 0
    assert json.loads((out / "art.json").read_text())["settings"]["like_jpeg"] == 75


@pytest.mark.parametrize("kwargs, words", [
    ({"like_jpeg": 0}, "1 to 99"), ({"like_jpeg": 100}, "1 to 99"), ({"like_jpeg": 7.5}, "whole number"),
    ({"ppd": -1.0}, "pixels per degree"), ({"masking": -0.1}, "masking"), ({"zooms": (2.0,)}, "zooms"),
    ({"ppd": math.nan}, "pixels per degree"),
])
def test_bad_visibility_values_are_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        VisibilityLimit(**kwargs)


def test_bad_budget_values_are_refused():
    with pytest.raises(ConfigError, match="LPIPS budget"):
        as_limit(1.5)
    with pytest.raises(ConfigError, match="a budget is"):
        as_limit("0.07")
    with pytest.raises(ValueError, match="visibility budget"):
        VisibilityBudget(VisibilityModel(), smooth_image(8, 8), 0.0)
    with pytest.raises(ValueError, match="pixels per degree"):
        VisibilityModel(ppd=0)
    with pytest.raises(ValueError, match="zooms"):
        ViewingModel.zoomed(zooms=(0.0,))
    with pytest.raises(ValueError, match="JPEG quality"):
        jpeg_reference(smooth_image(8, 8), 0)


def test_cli_refuses_a_bad_jpeg_quality_in_one_line(tiny_models, tmp_path, caplog):
    art = tmp_path / "art.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(art)
    code = main(["protect", str(art), "--out", str(tmp_path / "o"), "--like-jpeg", "150",
                 *tiny_protect_args(tiny_models, steps=2)])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and "1 to 99" in errors[0] and "Traceback" not in caplog.text
    assert not (tmp_path / "o" / "art.png").exists()


def test_visibility_budget_holds_with_training_views(protector):
    """The search runs at the work resolution (the model at the matching pixels per degree); the saved file at
    full size still passes FLIP against its own JPEG."""
    from fixative.core.views import TrainingViews

    x, t = smooth_image(192, 256, 0), smooth_image(192, 256, 1)
    views = TrainingViews(shorter_sides=(64, 96), bucket_areas=(0.01,), patch=64)
    result = protector.protect(x, t, budget=VisibilityLimit(like_jpeg=75),
                               settings=_fast(steps=8, views=views))
    assert result.settings["work_size"] == [96, 128]
    assert flip_of_file(x, result.image) <= flip_of_file(x, jpeg_reference(x, 75)) + 1e-6
    assert result.metrics.flip <= result.metrics.flip_limit and result.metrics.view_ratio
