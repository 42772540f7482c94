"""Robust protection (EOT): the differentiable countermeasures, presets, platforms, the optimizer hook,
the command line and the side-by-side strength evaluation, on tiny offline models."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fixative.batch.platforms import get_platform, parse_platforms, platforms, robust_for
from fixative.cli.main import main
from fixative.core.constraints import LpipsBudget
from fixative.core.engine import Protector
from fixative.core.objectives import TowardsTarget
from fixative.core.optimizer import OptimizerSettings, search
from fixative.core.robust import (
    PRESETS,
    Draw,
    RobustSettings,
    Sampler,
    down_up,
    gaussian_blur,
    jpeg,
    quant_table,
    settings_for,
)
from fixative.errors import ConfigError
from fixative.files.images import save_png

from tiny import TinyEncoder, smooth_image, tiny_perceptual, tiny_protect_args


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / max(float(((a - b) ** 2).mean()), 1e-12))


def _realish(h: int = 96, w: int = 120) -> torch.Tensor:
    """A photo-like test image: smooth shading, sharp edges and fine texture, on the 8-bit grid."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    g = torch.Generator().manual_seed(3)
    texture = F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 3, 1, 1)
    img = torch.stack([0.6 * x + 0.2, 0.5 * y + 0.3 * torch.sin(8 * x), 0.4 + 0.3 * torch.cos(5 * (x + y))])[None]
    img = img + 0.15 * (((x * 6).floor() + (y * 4).floor()) % 2)[None, None] + 0.2 * (texture - 0.5)
    return torch.round(img.clamp(0, 1) * 255) / 255


def _pil_jpeg(img: torch.Tensor, quality: int, subsampling: int = 2) -> torch.Tensor:
    arr = (img[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).astype(np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_matches_pil(quality):
    img = _realish()
    pil, ours = _pil_jpeg(img, quality), jpeg(img, quality)
    loss = _psnr(pil, img)  # what JPEG itself changes
    agree = _psnr(ours, pil)
    assert agree > 40 and agree > loss + 6, (quality, agree, loss)
    # 4:4:4 as well
    assert _psnr(jpeg(img, quality, subsampling=False), _pil_jpeg(img, quality, subsampling=0)) > 40


def test_quant_tables_follow_libjpeg_scaling():
    assert quant_table(50)[0, 0] == 16 and quant_table(50, chroma=True)[0, 0] == 17
    assert quant_table(100).max() == 1
    assert bool((quant_table(25) >= quant_table(75)).all())


@pytest.mark.parametrize("draw", [
    Draw(jpeg=60), Draw(resize=0.5), Draw(blur=1.0), Draw(noise=0.05, noise_seed=1), Draw(shift=(3, -2)),
    Draw(shift=(1, 1), blur=0.7, noise=0.02, resize=0.6, jpeg=80),
], ids=lambda d: d.describe())
def test_transforms_are_differentiable(draw):
    x = _realish(64, 64).requires_grad_(True)
    out = draw.apply(x)
    assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    (out * torch.linspace(-1, 1, 64)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_encode_decode_pass_is_differentiable():
    from fixative.core.robust import decode_pass
    from fixative.models.encoders import TAESDFileEncoder
    from fixative.models.taesd import TAESDDecoder, TAESDEncoder

    torch.manual_seed(0)
    enc = TAESDFileEncoder(TAESDEncoder(4, width=8), "tiny", "memory", decoder=TAESDDecoder(4, width=8))
    roundtrip = decode_pass([TinyEncoder(), enc])
    assert roundtrip is not None and decode_pass([TinyEncoder()]) is None
    x = _realish(32, 40).requires_grad_(True)
    out = Draw(vae=True).apply(x, roundtrip)
    assert out.shape == x.shape
    out.sum().backward()
    assert float(x.grad.abs().sum()) > 0


def test_helpers_keep_size():
    x = _realish(30, 46)
    assert down_up(x, 0.5).shape == x.shape and gaussian_blur(x, 2.0).shape == x.shape


def test_presets_parse_and_validate():
    assert settings_for("off") is None and settings_for(None) is None
    web, strong = settings_for("web"), settings_for("strong")
    assert web is PRESETS["web"] and strong.samples > web.samples and strong.vae_prob > 0
    assert settings_for(RobustSettings()) is None  # nothing drawn = off
    assert OptimizerSettings(robust="web").robust is web
    with pytest.raises(ConfigError, match="unknown robust"):
        settings_for("extreme")
    with pytest.raises(ConfigError, match="jpeg_prob"):
        RobustSettings(jpeg_prob=1.5)
    with pytest.raises(ConfigError, match="resize_factor"):
        RobustSettings(resize_factor=(0.9, 0.5))
    assert json.loads(json.dumps(web.describe()))["jpeg_quality"] == [50, 95]


def test_sampler_is_seeded():
    a = [Sampler(PRESETS["strong"], seed=5, can_decode=True).draw() for _ in range(1)]
    s1, s2, s3 = (Sampler(PRESETS["strong"], seed=s, can_decode=True) for s in (5, 5, 6))
    one = [s1.draw() for _ in range(30)]
    assert one == [s2.draw() for _ in range(30)] and one != [s3.draw() for _ in range(30)]
    assert one[0] == a[0]
    kinds = {k for d in one for k in ("shift", "blur", "noise", "resize", "jpeg") if getattr(d, k) is not None}
    assert kinds == {"shift", "blur", "noise", "resize", "jpeg"} and any(d.vae for d in one)
    assert not any(d.vae for d in (Sampler(PRESETS["strong"], 5, can_decode=False).draw() for _ in range(30)))


def test_the_chain_covers_every_countermeasure_of_the_settings():
    """One link per probability of RobustSettings; a Draw knows only the links' parameters and pickles."""
    import pickle
    from dataclasses import fields

    from fixative.core.countermeasures import CHAIN

    probabilities = {f.name for f in fields(RobustSettings) if f.name.endswith("_prob")}
    assert {link.probability for link in CHAIN} == probabilities
    with pytest.raises(TypeError, match="unknown countermeasure"):
        Draw(sharpen=1.0)
    draw = Draw(jpeg=60, shift=(1, 2))
    assert pickle.loads(pickle.dumps(draw)) == draw and draw != Draw(jpeg=60)
    assert draw.describe() == "shift (1, 2) -> jpeg q60" and Draw().identity and not draw.identity


def test_shifted_reference_matches_a_shifted_image():
    """A shift moves the reference too: an image equal to the target scores 0 under any shift."""
    enc, t = TinyEncoder(), smooth_image(32, 32, seed=1)
    obj = TowardsTarget()
    obj.prepare([enc], smooth_image(32, 32, seed=0), t)
    draw = Draw(shift=(3, -5))
    moved = [enc(draw.geometry(obj.reference_image))]
    assert float(obj.loss([enc(draw.apply(t))], moved)) < 1e-9
    assert float(obj.loss([enc(draw.apply(t))])) > 1e-3  # without moving the reference it would not be 0


@pytest.fixture(scope="module")
def tiny():
    return [TinyEncoder(seed=0)], tiny_perceptual()


def test_search_with_robust_is_reproducible_and_in_budget(tiny):
    encoders, perceptual = tiny
    x, t = smooth_image(48, 48, seed=0), smooth_image(48, 48, seed=7)
    results = []
    for seed in (0, 0, 1):
        obj = TowardsTarget()
        obj.prepare(encoders, x, t)
        budget = LpipsBudget(perceptual, x, 0.05)
        out = search(x, encoders, obj, budget, OptimizerSettings(steps=6, seed=seed, precision="fp32",
                                                                 robust="strong"))
        assert out.steps == 6 and budget.measure(x + out.delta) <= 0.05 + 1e-4
        results.append(out.delta)
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


@pytest.mark.parametrize("level", ["web", "strong"])
def test_budget_holds_with_robust_on(tiny, level):
    encoders, perceptual = tiny
    protector = Protector(encoders, perceptual, "cpu")
    x, t = smooth_image(40, 56, seed=2), smooth_image(40, 56, seed=9)
    result = protector.protect(x, t, budget=0.04, settings=OptimizerSettings(steps=8, precision="fp32", robust=level))
    assert result.metrics.lpips <= 0.04 and result.image.shape == x.shape
    assert result.settings["robust"]["name"] == level  # recorded with the search settings
    assert result.metrics.mean_ratio < 1.0


# --- platforms ------------------------------------------------------------------------------------


def test_platform_data_is_valid_and_sourced():
    known = platforms()
    assert {"instagram", "x", "facebook", "artstation", "deviantart", "tumblr", "bluesky", "generic"} <= set(known)
    for p in known.values():
        assert p.sources and 64 <= p.long_side <= 16384 and 1 <= p.jpeg_quality <= 100
    assert known["generic"].long_side == 2048 and known["generic"].jpeg_quality == 85
    assert get_platform("Twitter") is known["x"]
    with pytest.raises(ConfigError, match="unknown platform"):
        get_platform("myspace")


@pytest.mark.parametrize("text,problem", [
    ('[a]\nname="A"\nlong_side=10\njpeg_quality=80\nsubsampling="4:2:0"\nsources=["s"]\napproximate=[]', "long_side"),
    ('[a]\nname="A"\nlong_side=1000\njpeg_quality=0\nsubsampling="4:2:0"\nsources=["s"]\napproximate=[]',
     "jpeg_quality"),
    ('[a]\nname="A"\nlong_side=1000\njpeg_quality=80\nsubsampling="4:1:1"\nsources=["s"]\napproximate=[]',
     "subsampling"),
    ('[a]\nname="A"\nlong_side=1000\njpeg_quality=80\nsubsampling="4:2:0"\nsources=[]\napproximate=[]', "source"),
    ('[a]\nname="A"\nlong_side=1000\njpeg_quality=80\nsubsampling="4:2:0"\nsources=["s"]', "missing approximate"),
    ("[a\n", "not valid TOML"),
])
def test_platform_data_problems_are_named(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_platforms(text, "mine.toml")


def test_robust_mix_for_a_platform():
    insta = get_platform("instagram")
    big = robust_for(insta, (3000, 4000), "web")
    lo, hi = big.resize_factor
    assert big.resize_prob >= 0.8 and lo < 1080 / 4000 < hi and big.jpeg_quality == (70, 85)
    small = robust_for(insta, (500, 600), "web")
    assert small.resize_factor == PRESETS["web"].resize_factor and small.name == "web+instagram"
    assert robust_for(insta, None, "strong").samples == PRESETS["strong"].samples
    with pytest.raises(ConfigError, match="search.robust web or strong"):
        robust_for(insta, None, "off")


# --- the command line -----------------------------------------------------------------------------


def test_cli_flags_reach_the_record(tiny_models, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    save_png(src / "a.png", smooth_image(40, 48, seed=0))
    target = save_png(tmp_path / "t.png", smooth_image(40, 48, seed=5))
    base = ["protect", str(src), "--target", str(target), *tiny_protect_args(tiny_models, steps=2)]
    assert main([*base, "--out", str(tmp_path / "web")]) == 0
    rec = json.loads((tmp_path / "web" / "a.json").read_text())
    # the CLI's default: web, for the generic platform pipeline (2048 px, JPEG 85)
    assert rec["run_settings"]["robust"]["level"] == "web"
    assert rec["run_settings"]["robust"]["platform"]["key"] == "generic"
    assert rec["settings"]["robust"]["name"] == "web+generic" and rec["settings"]["robust"]["jpeg_quality"] == [75, 90]
    assert main([*base, "--out", str(tmp_path / "ig"), "--for", "instagram", "--robust", "strong"]) == 0
    rec_ig = json.loads((tmp_path / "ig" / "a.json").read_text())
    assert rec_ig["run_settings"]["robust"]["platform"]["key"] == "instagram"
    assert rec_ig["settings"]["robust"]["name"] == "strong+instagram"
    assert rec_ig["settings"]["robust"]["jpeg_quality"] == [70, 85]
    assert main([*base, "--out", str(tmp_path / "off"), "--robust", "off"]) == 0
    rec_off = json.loads((tmp_path / "off" / "a.json").read_text())
    assert rec_off["run_settings"]["robust"] == "off" and rec_off["settings"]["robust"] is None
    assert main([*base, "--out", str(tmp_path / "strong"), "--robust", "strong"]) == 0
    rec_strong = json.loads((tmp_path / "strong" / "a.json").read_text())
    assert rec_strong["settings"]["robust"]["name"] == "strong"  # no platform unless --for names one
    hashes = {r["settings_hash"] for r in (rec, rec_ig, rec_off, rec_strong)}
    assert len(hashes) == 4


def test_cli_refuses_bad_robust_choices(tiny_models, tmp_path, caplog):
    save_png(tmp_path / "a.png", smooth_image(16, 16, seed=0))
    base = ["protect", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), *tiny_protect_args(tiny_models)]
    assert main([*base, "--for", "myspace"]) == 2
    assert "unknown platform 'myspace'" in caplog.text
    assert main([*base, "--for", "x", "--robust", "off"]) == 2
    assert "--for needs robust protection" in caplog.text
    assert not (tmp_path / "o" / "a.png").exists()


# --- the evaluation's new countermeasures -----------------------------------------------------------


def test_platform_and_noise_downup_countermeasures():
    pytest.importorskip("matplotlib", reason="the eval extra is not installed")
    from fixative.eval.countermeasures import Jpeg, NoiseDownUp, Platform

    imgs = torch.cat([_realish(64, 96), smooth_image(64, 96, seed=1)])
    for cm in (Platform(48, 85), Platform(2048, 85), NoiseDownUp(0.05, 0.5)):
        out = cm(imgs, seed=3)
        assert out.shape == imgs.shape and torch.equal(out, torch.round(out * 255) / 255)
        assert torch.equal(out, cm(imgs, seed=3))
    # within the limit the platform only re-encodes; above it, it also loses resolution
    assert torch.equal(Platform(2048, 85)(imgs), Jpeg(85)(imgs))
    assert _psnr(Platform(48, 85)(imgs), imgs) < _psnr(Jpeg(85)(imgs), imgs) - 1
    with pytest.raises(ConfigError):
        NoiseDownUp(0.05, 1.5)
