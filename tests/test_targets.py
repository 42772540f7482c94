"""Made targets (fixative.targets.made, patterns, target_cache) on tiny offline pipelines built in conftest."""

import json
import logging
import os

import pytest
import torch

import fixative.targets.anchors as anchors
import fixative.targets.made as targets
from fixative.errors import ConfigError, ModelNotFoundError
from fixative.models.store import ModelStore
from fixative.targets.cache import TargetCache, cache_key, default_cache_dir, image_digest, quantize8
from fixative.targets.made import (
    STYLES,
    GenerationSettings,
    TargetMaker,
    choose_style,
    generation_size,
    image_profile,
    make_target,
    pipeline_dtype,
    resolve_pipeline,
    style_prompt,
)
from fixative.targets.patterns import PATTERNS, immunize_pattern

from tiny import smooth_image

FAST = GenerationSettings(steps=2, strength=0.5, candidates=2)


def _no_loading(monkeypatch):
    """Make any attempt to load a generator fail: proves a target came from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("a generator was loaded")

    monkeypatch.setattr(targets, "load_pipeline", refuse)


# --- patterns --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PATTERNS)
def test_patterns_are_fixed_images_in_range(name):
    a = immunize_pattern(40, 70, name)
    assert a.shape == (1, 3, 40, 70) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, immunize_pattern(40, 70, name))  # made by code: always the same


def test_texture_is_tiled_high_contrast_and_size_independent():
    a = immunize_pattern(96, 64, period=32)
    assert a.std() > 0.3  # strongly textured
    assert torch.allclose(a[..., :32, :32], immunize_pattern(32, 32, period=32), atol=1e-6)  # top-left tile = small one
    assert (a[:, 0] - a[:, 1]).abs().mean() > 0.1  # coloured, not grey
    with pytest.raises(ConfigError, match="unknown immunize pattern"):
        immunize_pattern(8, 8, "stripes")


# --- cache -----------------------------------------------------------------------------------------


def test_cache_roundtrip_is_bit_exact_and_damage_is_a_miss(tmp_path, caplog):
    img = smooth_image(20, 30, 1)
    q = quantize8(img)
    assert image_digest(img) == image_digest(q)  # the digest is of 8-bit pixels
    assert image_digest(img) != image_digest(smooth_image(20, 30, 2))
    cache = TargetCache(tmp_path)
    key = cache_key({"b": 1, "a": [1, 2]})
    assert key == cache_key({"a": [1, 2], "b": 1})  # canonical JSON
    assert cache.get(key) is None
    path = cache.put(key, img, {"prompt": "x"})
    image, recipe = cache.get(key)
    assert torch.equal(image, q) and recipe == {"prompt": "x"}
    path.write_bytes(b"not a png")
    assert cache.get(key) is None
    assert "damaged" in caplog.text


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FIXATIVE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FIXATIVE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "fixative" / "targets"


# --- styles ----------------------------------------------------------------------------------------


def test_style_prompts_and_profiles():
    assert style_prompt("Ukiyo-E") == ("ukiyo-e", next(s.prompt for s in STYLES if s.name == "ukiyo-e"))
    assert style_prompt("  a stained glass window ") == (None, "a stained glass window")
    with pytest.raises(ConfigError):
        style_prompt("  ")
    assert len({s.name for s in STYLES}) == len(STYLES) >= 8
    sat, bright, contrast, detail = image_profile(torch.full((1, 3, 300, 500), 0.5))
    assert sat == 0 and bright == pytest.approx(0.5, abs=1e-3) and contrast == 0 and detail == 0
    assert all(0 <= v <= 1 for v in image_profile(smooth_image(64, 64, 0)))


def test_auto_style_takes_the_75th_percentile_and_avoids_near_styles():
    gray_sketch = smooth_image(64, 64, 0).mean(1, keepdim=True).expand(1, 3, 64, 64)
    choice = choose_style([gray_sketch])
    ranked = sorted(choice.distances, key=choice.distances.get)
    assert choice.name == ranked[6]  # 10 styles: floor(0.75 * 9)
    assert choice.name not in ranked[:5] and choice.name != ranked[-1]  # distant, not the most distant
    assert choice.by == "image statistics" and choice.name in choice.describe()
    # a portfolio: one choice for all images, deterministic
    portfolio = [smooth_image(32, 48, i) for i in range(3)]
    assert choose_style(portfolio).name == choose_style(list(reversed(portfolio))).name


def test_settings_are_checked():
    for bad in ({"strength": 0}, {"strength": 1.5}, {"steps": 0}, {"candidates": 0},
                {"anchor_prompt": "a cat"}, {"steps": 1, "strength": 0.4}):
        with pytest.raises(ConfigError):
            GenerationSettings(**bad)


def test_dtype_choice():
    assert pipeline_dtype(torch.device("cpu")) == torch.float32
    assert pipeline_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        pipeline_dtype(torch.device("cpu"), "fp16")


# --- finding and sizing generators -------------------------------------------------------------------


def test_resolve_pipeline_folder_short_name_hub_and_missing(tiny_sd_dir, tmp_path):
    src = resolve_pipeline(str(tiny_sd_dir))
    assert src.kind == "folder" and src.location == str(tiny_sd_dir.resolve())
    ident = src.identity()
    assert ident == resolve_pipeline(str(tiny_sd_dir)).identity()
    assert resolve_pipeline("sd15", ModelStore(tmp_path)).kind == "hub"
    assert resolve_pipeline("org/some-model").location == "org/some-model"
    (tmp_path / "sd15").symlink_to(tiny_sd_dir)  # a pipeline folder named like a short name in the store
    assert resolve_pipeline("sd15", ModelStore(tmp_path)).kind == "folder"
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(ConfigError, match="model_index.json") as err:
        resolve_pipeline(str(tmp_path / "not-a-pipeline"))
    assert "not-a-pipeline" in str(err.value) and err.value.field == "target.model"
    with pytest.raises(ModelNotFoundError):
        resolve_pipeline("./nowhere/at-all")


def test_identity_changes_when_weights_change(tmp_path, tiny_sd_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd_dir, copy)
    before = resolve_pipeline(str(copy)).identity()
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    assert resolve_pipeline(str(copy)).identity() != before


def test_offline_hub_model_gives_one_clear_error(tmp_path):
    maker = TargetMaker("nobody/no-such-pipeline", cache_dir=tmp_path, clip_model="none", settings=FAST)
    with pytest.raises(ModelNotFoundError) as err:
        maker.make("cloak", smooth_image(16, 16, 0), style="cubism")
    assert "nobody/no-such-pipeline" in str(err.value) and "hf download" in str(err.value)


class _FakePipe:
    vae_scale_factor = 8
    default_sample_size = 64

    class unet:  # noqa: N801
        class config:  # noqa: N801
            block_out_channels = (320, 640, 1280, 1280)


@pytest.mark.parametrize(("h", "w"), [(512, 512), (1000, 1500), (3000, 800), (64, 64)])
def test_generation_size_keeps_aspect_at_native_area(h, w):
    gh, gw = generation_size(_FakePipe(), h, w)
    assert gh % 64 == 0 and gw % 64 == 0
    assert abs(gh * gw / 512**2 - 1) < 0.3
    assert abs((gw / gh) / (w / h) - 1) < 0.2
    assert generation_size(_FakePipe(), h, w, resolution=256)[0] <= gh


# --- end to end on the tiny pipeline ---------------------------------------------------------------


def test_style_target_end_to_end_cached_and_reproducible(tiny_sd_dir, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    art = smooth_image(40, 56, 0)
    first = make_target("cloak", art, style="ukiyo-e", target_model=str(tiny_sd_dir), cache_dir=tmp_path,
                        clip_model="none", settings=FAST, device="cpu")
    t, recipe = first
    assert t.shape == art.shape and t.min() >= 0 and t.max() <= 1
    assert torch.equal(t, quantize8(t))
    assert not torch.equal(t, quantize8(art))
    assert recipe["kind"] == "style" and recipe["style"] == "ukiyo-e" and recipe["prompt"].startswith("a ukiyo-e")
    assert recipe["model"] == str(tiny_sd_dir) and recipe["seed"] == 0 and recipe["strength"] == 0.5
    assert recipe["pipeline"] == "StableDiffusionImg2ImgPipeline" and recipe["cache"]["hit"] is False
    assert recipe["generation_size"][0] % 8 == 0
    json.dumps(recipe)  # JSON-ready
    assert "on the CPU" in caplog.text  # the cost note

    # same seed, no cache -> the same target; another seed -> another
    again = make_target("cloak", art, style="ukiyo-e", target_model=str(tiny_sd_dir), cache=False,
                        clip_model="none", settings=FAST, device="cpu")
    assert torch.equal(again.image, t)
    other = make_target("cloak", art, style="ukiyo-e", target_model=str(tiny_sd_dir), cache=False,
                        clip_model="none", settings=FAST, seed=7, device="cpu")
    assert not torch.equal(other.image, t) and other.recipe["seed"] == 7

    # the cache answers without loading anything
    _no_loading(monkeypatch)
    hit = make_target("cloak", art, style="ukiyo-e", target_model=str(tiny_sd_dir), cache_dir=tmp_path,
                      clip_model="none", settings=FAST, device="cpu")
    assert torch.equal(hit.image, t) and hit.recipe["cache"]["hit"] is True
    assert hit.recipe["prompt"] == recipe["prompt"]
    with pytest.raises(AssertionError, match="loaded"):  # other settings: a new target
        make_target("cloak", art, style="ukiyo-e", target_model=str(tiny_sd_dir), cache_dir=tmp_path,
                    clip_model="none", settings=GenerationSettings(steps=2, strength=0.6), device="cpu")


def test_auto_style_says_which_and_is_recorded(tiny_sd_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    art = smooth_image(32, 32, 3)
    _, recipe = make_target("cloak", art, target_model=str(tiny_sd_dir), cache_dir=tmp_path, clip_model="none",
                            settings=FAST, device="cpu")
    assert recipe["style"] == choose_style([art]).name
    assert recipe["style_choice"]["auto"] is True and recipe["style_choice"]["by"] == "image statistics"
    assert f"chose '{recipe['style']}'" in caplog.text


def test_anchor_target_latent_selection_and_candidate_cache(tiny_sd_dir, tmp_path, monkeypatch):
    art = smooth_image(36, 60, 0)
    maker = TargetMaker(str(tiny_sd_dir), cache_dir=tmp_path, clip_model="none", settings=FAST, device="cpu",
                        progress=False)
    t, recipe = maker.make("poison", art, concept="dog", anchor="cat")
    assert t.shape == art.shape
    assert recipe["prompt"] == "a photo of a cat" and recipe["concept"] == "dog" and recipe["anchor"] == "cat"
    scores = {c["seed"]: c["score"] for c in recipe["candidates"]}
    assert list(scores) == [0, 1]
    assert recipe["seed"] == min(scores, key=scores.get) == recipe["selection"]["chosen_seed"]
    assert recipe["selection"]["by"].startswith("latent:")
    gh, gw = recipe["generation_size"]
    assert gw > gh  # the artwork's aspect ratio (landscape)
    # each candidate is cached apart, keyed without the artwork: a same-shaped image reuses them
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) == 3  # two candidates and the chosen target
    maker2 = TargetMaker(str(tiny_sd_dir), cache_dir=tmp_path, clip_model="none", settings=FAST, device="cpu")
    calls = []
    real = anchors.call_pipeline
    monkeypatch.setattr(anchors, "call_pipeline", lambda *a, **k: calls.append(1) or real(*a, **k))
    maker2.make("poison", smooth_image(36, 60, 5), concept="dog", anchor="cat")
    assert calls == []  # nothing generated, only ranked
    with pytest.raises(ConfigError, match="anchor concept") as err:
        maker2.make("poison", art, concept="dog")
    assert err.value.field == "target.anchor"


def test_anchor_target_clip_selection(tiny_sd_dir, tiny_clip_dir, tmp_path, monkeypatch):
    art = smooth_image(32, 32, 1)
    made = make_target("poison", art, anchor="cat", target_model=str(tiny_sd_dir), cache_dir=tmp_path,
                       clip_model=str(tiny_clip_dir), settings=FAST, device="cpu")
    scores = {c["seed"]: c["score"] for c in made.recipe["candidates"]}
    assert made.recipe["selection"]["by"] == f"clip:{tiny_clip_dir}"
    assert made.recipe["seed"] == max(scores, key=scores.get)
    assert all(-1 <= s <= 1 for s in scores.values())
    # with CLIP, a new same-shaped artwork needs neither generation nor the generator
    _no_loading(monkeypatch)
    other = make_target("poison", smooth_image(32, 32, 9), anchor="cat", target_model=str(tiny_sd_dir),
                        cache_dir=tmp_path, clip_model=str(tiny_clip_dir), settings=FAST, device="cpu")
    assert other.recipe["cache"]["hit"] is False and other.recipe["pipeline"] == "StableDiffusionPipeline"


def test_auto_style_with_clip(tiny_clip_dir):
    maker = TargetMaker(clip_model=str(tiny_clip_dir), cache=False)
    choice = maker.choose_style([smooth_image(40, 40, 0)])
    assert choice.by == f"clip:{tiny_clip_dir}" and set(choice.distances) == {s.name for s in STYLES}


def test_default_clip_is_only_used_when_already_here(tmp_path, tiny_clip_dir, monkeypatch):
    monkeypatch.delenv("FIXATIVE_MODELS_DIR", raising=False)
    store_dir = tmp_path / "models"
    store_dir.mkdir()
    maker = TargetMaker(models_dir=store_dir, cache=False)
    monkeypatch.setattr(maker.store, "_hub_cache", tmp_path / "empty-hf-cache")
    assert maker._clip_id() is None
    (store_dir / "clip").symlink_to(tiny_clip_dir)
    maker = TargetMaker(models_dir=store_dir, cache=False)
    assert maker._clip_id() == "clip"
    assert TargetMaker(models_dir=store_dir, clip_model="none", cache=False)._clip_id() is None


def test_immunize_and_bad_mode():
    art = smooth_image(20, 24, 0)
    t, recipe = make_target("immunize", art)
    assert t.shape == art.shape and recipe == {"kind": "pattern", "mode": "immunize", "pattern": "texture",
                                               "size": [20, 24],
                                               "made_by": "fixative.targets.patterns.immunize_pattern",
                                               "period": 32}
    assert make_target("immunize", art, pattern="gray").image.unique().numel() == 1
    with pytest.raises(ConfigError, match="unknown mode"):
        make_target("glaze", art)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_gpu_precision_and_attention_slicing_logic(monkeypatch):
    """The GPU choices without a GPU: bf16 where native else fp16; slicing when free memory is short."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pipeline_dtype(cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pipeline_dtype(cuda) == torch.float16
    assert pipeline_dtype(torch.device("mps")) == torch.float16

    class Pipe:
        sliced = False

        def enable_attention_slicing(self):
            self.sliced = True

    maker = TargetMaker(cache=False)
    maker.device = cuda
    for free, sliced in ((1 << 30, True), (40 << 30, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, free=free: (free, 80 << 30))
        pipe = Pipe()
        maker._fit_memory(pipe)
        assert pipe.sliced is sliced
