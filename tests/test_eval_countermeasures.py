"""Countermeasures: shapes, ranges, determinism, paired noise, the SD x4 upscaler path (tiny random
pipeline) and IMPRESS purification (tiny TAESD autoencoder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixative.errors import ConfigError
from fixative.eval.countermeasures import (
    DownUp,
    GaussianBlur,
    GaussianNoise,
    ImpressPurification,
    ImpressSettings,
    Jpeg,
    NoisyUpscale,
    default_countermeasures,
    load_sd_upscaler,
    wrap_sd_upscaler,
)
from fixative.models.encoders import TAESDFileEncoder
from fixative.models.store import ModelStore
from fixative.models.taesd import TAESDDecoder, TAESDEncoder

from tiny import smooth_image, tiny_perceptual


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.cat([smooth_image(40, 56, seed=0), smooth_image(40, 56, seed=1)])


def _on_grid(x: torch.Tensor) -> bool:
    return torch.allclose(x * 255, (x * 255).round(), atol=1e-3)


@pytest.mark.parametrize("cm", [Jpeg(95), Jpeg(50), DownUp(0.5), GaussianNoise(0.03), GaussianBlur(1.0),
                                NoisyUpscale(0.05)], ids=lambda c: c.name)
def test_shape_range_quantised_and_deterministic(cm, images):
    out = cm(images, seed=3)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert _on_grid(out)
    assert torch.equal(out, cm(images, seed=3))
    assert not torch.equal(out, images)
    desc = cm.describe()
    assert desc["name"] == cm.name and desc["label"]


def test_one_draw_applies_to_clean_and_protected_alike(images):
    """The core's contract: the draw (generate_parameters) is apart from its application (apply_transform)."""
    from fixative.core.countermeasures import Countermeasure as CoreCountermeasure

    cm = GaussianNoise(0.05)
    assert isinstance(cm, CoreCountermeasure)
    params = cm.generate_parameters(images.shape, torch.Generator().manual_seed(4))
    assert torch.equal(cm.apply_transform(images, params), cm(images, seed=4))
    moved = (images + 0.01).clamp(0, 1)
    assert torch.equal(cm.apply_transform(moved, params) - cm.apply_transform(images, params),
                       cm(moved, seed=4) - cm(images, seed=4))


def test_random_countermeasures_share_one_draw_across_the_batch(images):
    same = torch.cat([images[:1], images[:1]])
    for cm in (GaussianNoise(0.05), NoisyUpscale(0.05)):
        out = cm(same, seed=1)
        assert torch.equal(out[0], out[1])
        assert not torch.equal(cm(same, seed=1), cm(same, seed=2))


def test_stronger_settings_change_more(images):
    def err(cm):
        return float((cm(images) - images).abs().mean())

    assert err(Jpeg(95)) < err(Jpeg(50))
    assert err(GaussianBlur(0.5)) < err(GaussianBlur(2.0))
    assert err(GaussianNoise(0.01)) < err(GaussianNoise(0.05))


def test_blur_handles_tiny_images():
    x = torch.rand(1, 3, 2, 3)
    assert GaussianBlur(2.0)(x).shape == x.shape


def test_bad_parameters():
    with pytest.raises(ConfigError):
        Jpeg(0)
    with pytest.raises(ConfigError):
        DownUp(1.5)


def test_noisy_upscale_with_a_learned_upscaler(images):
    calls = []

    def upscaler(low, seed):
        calls.append(tuple(low.shape))
        return torch.nn.functional.interpolate(low, scale_factor=4, mode="nearest")

    cm = NoisyUpscale(0.05, upscaler, upscaler_name="fake")
    out = cm(images, seed=0)
    assert out.shape == images.shape
    assert calls == [(1, 3, 10, 14)] * 2  # downscaled by the upscaler's factor 4, one image at a time
    assert "Stable Diffusion x4 upscaler (fake)" in cm.describe()["method"]
    assert NoisyUpscale(0.05).describe()["method"].startswith("classical")


def _tiny_upscale_pipeline(folder: Path) -> Path:
    """A tiny random StableDiffusionUpscalePipeline (x4 VAE, 7-channel UNet) saved to ``folder``."""
    pytest.importorskip("transformers", reason="the eval extra (transformers, for the CLIP text encoder) is missing")
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from tiny import tiny_clip_tokenizer

    torch.manual_seed(0)
    tok = tiny_clip_tokenizer(folder.parent / "upscaler-vocab")
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=7, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2, attention_head_dim=2, num_class_embeds=100,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3, latent_channels=4, norm_num_groups=2, scaling_factor=0.08333,
    )
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8,
                                        intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
                                        vocab_size=len(tok)))
    pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                          low_res_scheduler=DDPMScheduler(),
                                          scheduler=DDIMScheduler(prediction_type="v_prediction"))
    pipe.save_pretrained(folder)
    return folder


def test_sd_x4_upscaler_from_the_model_store(tmp_path, images):
    store = ModelStore(tmp_path)
    assert load_sd_upscaler(None, store) is None  # nothing there: the classical fallback
    _tiny_upscale_pipeline(tmp_path / "sd-x4-upscaler")
    found = load_sd_upscaler(None, store, steps=2)
    assert found is not None
    upscaler, source = found
    assert source.endswith("sd-x4-upscaler")
    cm = NoisyUpscale(0.05, upscaler, upscaler_name=source)
    out = cm(images[:1], seed=0)
    assert out.shape == images[:1].shape and _on_grid(out)
    with pytest.raises(ConfigError):
        load_sd_upscaler(str(tmp_path / "missing"), store)


def test_wrap_sd_upscaler_output_size(tmp_path):
    from diffusers import StableDiffusionUpscalePipeline

    pipe = StableDiffusionUpscalePipeline.from_pretrained(_tiny_upscale_pipeline(tmp_path / "p"))
    pipe.set_progress_bar_config(disable=True)
    out = wrap_sd_upscaler(pipe, steps=1)(torch.rand(1, 3, 8, 12), 0)
    assert out.shape == (1, 3, 32, 48) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.fixture(scope="module")
def autoencoder() -> TAESDFileEncoder:
    torch.manual_seed(0)
    return TAESDFileEncoder(TAESDEncoder(4, width=8), "tiny", "memory", TAESDDecoder(4, width=8))


def test_impress_stays_within_its_lpips_bound_and_improves_consistency(autoencoder, images):
    perceptual = tiny_perceptual()
    settings = ImpressSettings(budget=0.01, steps=4, lr=0.01)
    cm = ImpressPurification(autoencoder, perceptual, settings)
    images = images[..., :32, :32]
    out = cm(images, seed=0)
    assert out.shape == images.shape and _on_grid(out)
    with torch.no_grad():
        lp = perceptual.distance(out, images)
        assert float(lp.max()) <= settings.budget + 1e-5

        def inconsistency(x):
            return float(((x - autoencoder.decode(autoencoder(x), x.shape[-2:])) ** 2).mean())

        assert inconsistency(out) < inconsistency(images)
    assert cm.describe()["purifier"] == "tiny"


def test_impress_needs_a_decoder(images):
    enc = TAESDFileEncoder(TAESDEncoder(4, width=8), "nodec", "memory")
    with pytest.raises(ConfigError, match="decoder"):
        ImpressPurification(enc, tiny_perceptual())


def test_default_set_order(autoencoder):
    cms = default_countermeasures(impress=ImpressPurification(autoencoder, tiny_perceptual()))
    assert [c.name for c in cms] == ["jpeg95", "jpeg85", "jpeg75", "jpeg50", "downup0.5", "noise0.03", "blur1",
                                     "noisy_upscale", "impress"]
