"""Training views: sizes a trainer makes, drawn views, the target viewed alike, and the engine protecting
through them (budget and cap on the full-size saved file, determinism, size kept, time limit)."""

import time

import pytest
import torch

from fixative.core.constraints import quantize
from fixative.core.engine import Protector, view_ratio
from fixative.core.optimizer import OptimizerSettings, ViewedImages
from fixative.core.robust import Draw, resize
from fixative.core.views import TrainingViews, View, ViewSampler, evaluation_views, view_sizes, views_for, work_size
from fixative.errors import ConfigError

from tiny import TinyEncoder, smooth_image, tiny_perceptual


@pytest.fixture(scope="module")
def perceptual():
    return tiny_perceptual()


@pytest.fixture(scope="module")
def protector(perceptual):
    return Protector([TinyEncoder(0)], perceptual, "cpu")


def test_view_sizes_of_a_large_artwork():
    sizes = view_sizes(3172, 5640, TrainingViews())
    # shorter side 512, 768, 1024 (aspect kept), and 64-px buckets of 0.25, 0.5 and 1 MP
    assert (512, 910) in sizes and (768, 1366) in sizes and (1024, 1821) in sizes
    buckets = [s for s in sizes if s[0] % 64 == 0 and s[1] % 64 == 0]
    assert {round(h * w / 1e6, 1) for h, w in buckets} >= {0.2, 0.5, 1.0}
    assert sizes == sorted(sizes, key=lambda s: s[0] * s[1])
    assert work_size(3172, 5640, TrainingViews()) == (1024, 1821)


def test_views_never_upscale():
    for h, w in [(300, 400), (640, 480), (1000, 1000), (64, 3000)]:
        sizes = view_sizes(h, w, TrainingViews())
        assert all(a <= h and b <= w for a, b in sizes)
        assert (h, w) in sizes  # the image's own size stands in for the sizes above it
    # a 512 x 512 image: its own size, and the 0.25 MP bucket (a slight downscale)
    assert view_sizes(512, 512, TrainingViews()) == [(512, 512)]


def test_sampler_draws_documented_views():
    views = TrainingViews(patch=256, flip_prob=0.5)
    sampler = ViewSampler(views, 1200, 1600, seed=3)
    drawn = [sampler.draw() for _ in range(300)]
    sizes = set(view_sizes(1200, 1600, views))
    assert {v.size for v in drawn} == sizes
    for v in drawn:
        assert v.top >= 0 and v.top + v.height <= v.size[0] and v.left >= 0 and v.left + v.width <= v.size[1]
        assert v.height == min(256, v.size[0]) and v.width == min(256, v.size[1])
    flips = sum(v.flip for v in drawn) / len(drawn)
    assert 0.35 < flips < 0.65
    assert len({(v.top % 8, v.left % 8) for v in drawn}) > 8  # crops fall anywhere, not on the 8-px grid
    again = ViewSampler(views, 1200, 1600, seed=3)
    assert [again.draw() for _ in range(300)] == drawn
    assert [ViewSampler(views, 1200, 1600, seed=4).draw() for _ in range(20)] != drawn[:20]
    assert all(not v.flip for v in (ViewSampler(TrainingViews(flip_prob=0), 600, 800).draw() for _ in range(50)))


def test_view_applies_resize_crop_flip():
    x = smooth_image(96, 128, 0)
    view = View((48, 64), 8, 16, 32, 40, flip=True)
    expected = resize(x, (48, 64))[..., 8:40, 16:56].flip(-1)
    assert torch.allclose(view(x), expected)
    assert torch.allclose(view.crop(resize(x, (48, 64))), expected)
    with pytest.raises(ValueError):
        view.crop(x)


def test_evaluation_views():
    views = evaluation_views(3172, 5640)
    crop, big = views["512 crop"], views["1024 px"]
    assert crop.size == (512, 910) and (crop.height, crop.width) == (512, 512) and crop.left == (910 - 512) // 2
    assert big.size == (576, 1024) and (big.height, big.width) == (576, 1024)
    small = evaluation_views(300, 400)  # never upscaled
    assert small["1024 px"].size == (300, 400) and small["512 crop"].size == (300, 400)


def test_target_is_viewed_like_the_image():
    x, t = smooth_image(200, 300, 0), smooth_image(200, 300, 1)
    enc = TinyEncoder(0)
    viewed = ViewedImages(x, t, TrainingViews(patch=64), seed=0, towards=True)
    view = View((100, 150), 10, 20, 64, 64, flip=True)
    refs, starts = viewed.references(view, Draw(shift=(2, -3)), [enc], None, torch.device("cpu"))
    expected = enc(torch.roll(view(t), (2, -3), dims=(-2, -1)))
    assert torch.allclose(refs[0], expected, atol=1e-5)
    seen = enc(torch.roll(view(x), (2, -3), dims=(-2, -1)))
    assert starts[0].item() == pytest.approx(float(((seen - expected) ** 2).sum()), rel=1e-3)


def test_views_settings_and_errors():
    assert views_for("off") is None and views_for(None) is None
    assert views_for("train") == TrainingViews()
    with pytest.raises(ConfigError, match="unknown training views"):
        views_for("sideways")
    with pytest.raises(ConfigError, match="flip"):
        TrainingViews(flip_prob=1.5)
    with pytest.raises(ConfigError, match="patch"):
        TrainingViews(patch=10)
    assert OptimizerSettings(views="train").views == TrainingViews()


def _views(**kw):
    # small sizes so that a tiny test image has several views below its own size
    kw.setdefault("shorter_sides", (64, 96))
    kw.setdefault("bucket_areas", (0.01,))
    kw.setdefault("patch", 64)
    return TrainingViews(**kw)


def test_budget_and_cap_held_on_the_full_size_file(protector, perceptual):
    x, t = smooth_image(192, 256, 0), smooth_image(192, 256, 1)
    cap = 8 / 255
    result = protector.protect(x, t, budget=0.03, settings=OptimizerSettings(
        steps=15, precision="fp32", linf=cap, views=_views()))
    out = result.image
    assert out.shape == x.shape  # the saved file is full size, the search ran at 96 px
    assert result.settings["work_size"] == [96, 128]
    assert torch.equal(out, quantize(out))
    assert float(perceptual.distance(out, x)) <= 0.03 + 1e-6
    assert float((out - x).abs().max()) <= cap + 0.5 / 255 + 1e-6
    m = result.metrics
    assert set(m.views) == {"512 crop", "1024 px"} and set(m.view_ratio) == {"512 crop", "1024 px"}
    # what a trainer's view of the file shows moved towards the target
    small = View((96, 128), 0, 0, 96, 128)
    assert view_ratio(protector.encoders[0], small, x, out, t) < 0.99


def test_views_beat_full_size_search_at_a_downscaled_view(protector):
    x, t = smooth_image(256, 256, 4), smooth_image(256, 256, 5)
    small = View((64, 64), 0, 0, 64, 64)
    common = dict(steps=25, precision="fp32", linf=8 / 255)
    viewed = protector.protect(x, t, budget=0.05, settings=OptimizerSettings(
        views=_views(shorter_sides=(64,), bucket_areas=(), flip_prob=0), **common))
    full = protector.protect(x, t, budget=0.05, settings=OptimizerSettings(**common))
    enc = protector.encoders[0]
    assert view_ratio(enc, small, x, viewed.image, t) < view_ratio(enc, small, x, full.image, t)


def test_same_seed_same_output_with_views(protector):
    x, t = smooth_image(160, 200, 2), smooth_image(160, 200, 3)
    settings = OptimizerSettings(steps=6, precision="fp32", seed=5, linf=8 / 255, robust="web", views=_views())
    a = protector.protect(x, t, budget=0.03, settings=settings)
    b = protector.protect(x, t, budget=0.03, settings=settings)
    assert torch.equal(a.image, b.image)
    c = protector.protect(x, t, budget=0.03, settings=OptimizerSettings(
        steps=6, precision="fp32", seed=6, linf=8 / 255, robust="web", views=_views()))
    assert not torch.equal(a.image, c.image)


def test_away_objective_with_views(protector):
    x = smooth_image(128, 160, 6)
    result = protector.protect(x, None, objective="away", budget=0.03, settings=OptimizerSettings(
        steps=8, precision="fp32", views=_views()))
    assert result.image.shape == x.shape
    assert all(shift > 0 for figures in result.metrics.views.values() for shift in figures.values())
    assert result.metrics.view_ratio is None


def test_time_limit_honoured_on_a_large_image(perceptual):
    # 6 MP: without views this would be 48 tiles; with them the search runs at 1024 px and stops in time
    protector = Protector([TinyEncoder(0)], perceptual, "cpu")
    x, t = smooth_image(2000, 3000, 0), smooth_image(2000, 3000, 1)
    started = time.perf_counter()
    result = protector.protect(x, t, budget=0.05, settings=OptimizerSettings(
        steps=10_000, seconds=4.0, precision="fp32", linf=8 / 255, views="train"))
    search = result.metrics.search_seconds
    # a step may not start past the limit: the search ends within one step of it (a step at 1024 px is about
    # a second on a quiet machine, several under load)
    assert result.metrics.stopped == "seconds" and search <= 4.0 + max(2.0, 1.5 * search / result.metrics.steps)
    assert result.metrics.tiles == 1 and result.settings["work_size"] == [1024, 1536]
    assert result.image.shape == x.shape
    # what follows the search (upsampling, the full-size check, measuring) is bounded too
    assert time.perf_counter() - started < 4.0 + 60
