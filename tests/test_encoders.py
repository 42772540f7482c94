"""Encoders behind one interface: every adapter and source format, with tiny offline models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import fixative.models.store as store_mod
from fixative.errors import FixativeError, ModelNotFoundError
from fixative.models.encoders import (
    SHORT_NAMES,
    DiffusersKLEncoder,
    DiffusersTinyEncoder,
    Encoder,
    TAESDFileEncoder,
    encoder_from_path,
    load_encoder,
    load_encoders,
    pad_to_multiple,
    resolve_spec,
)
from fixative.models.store import ENV_MODELS_DIR, ModelStore
from fixative.models.taesd import TAESanaEncoder, TAESDDecoder, TAESDEncoder

from tiny import fake_hub_snapshot, require_shared

H, W = 37, 53  # odd sizes: every encoder must pad internally

KL_KW = dict(
    block_out_channels=(4, 8),
    norm_num_groups=2,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
)


def diffusers_vae_to_ldm(sd: dict[str, torch.Tensor], n_up: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to the original LDM (CompVis/BFL) key format."""
    out = {}
    for key, value in sd.items():
        k = key
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.", k)
        k = re.sub(r"(decoder\.up\.\d+)\.resnets\.", r"\1.block.", k)
        k = re.sub(r"(decoder\.up\.\d+)\.upsamplers\.0\.", r"\1.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if ".attn_1." in k:
            k = k.replace("group_norm.", "norm.").replace("to_out.0.", "proj_out.")
            k = re.sub(r"to_([qkv])\.", r"\1.", k)
            if k.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]
        out[k] = value
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Tiny diffusers models saved in every supported format (built once per module)."""
    from diffusers import AutoencoderKL, AutoencoderKLFlux2, AutoencoderTiny

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    kl = AutoencoderKL(**KL_KW).eval()
    kl.save_pretrained(root / "kl")
    kl.save_pretrained(root / "pipe" / "vae")
    (root / "pipe" / "model_index.json").write_text("{}")
    sd = kl.state_dict()
    save_file(sd, str(root / "kl_diffusers.safetensors"))
    ldm = diffusers_vae_to_ldm(sd, n_up=2)
    full = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2, 2)  # a whole-checkpoint neighbour
    save_file(full, str(root / "sd_checkpoint.safetensors"))
    save_file({k: v for k, v in ldm.items() if not k.startswith(("decoder.", "post_quant"))},
              str(root / "kl_encoder_only.safetensors"))  # fmt: skip
    (root / "withcfg").mkdir()
    save_file(ldm, str(root / "withcfg" / "vae.safetensors"))
    (root / "withcfg" / "config.json").write_text((root / "kl" / "config.json").read_text())

    torch.manual_seed(1)
    tiny_ae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8),
        num_encoder_blocks=(1, 2, 1),
        num_decoder_blocks=(1, 2, 1),
        latent_channels=4,
    ).eval()
    tiny_ae.save_pretrained(root / "tiny")
    save_file(tiny_ae.state_dict(), str(root / "tiny.safetensors"))

    torch.manual_seed(2)
    flux2 = AutoencoderKLFlux2(**KL_KW).eval()
    flux2.save_pretrained(root / "flux2")
    save_file(flux2.state_dict(), str(root / "flux2.safetensors"))
    save_file(diffusers_vae_to_ldm(flux2.state_dict(), n_up=2), str(root / "flux2_ldm.safetensors"))

    torch.manual_seed(4)  # SD3 / FLUX.1 layout: 16 channels, no quant convs
    flux1 = AutoencoderKL(**{**KL_KW, "latent_channels": 16}, use_quant_conv=False, use_post_quant_conv=False)
    save_file(diffusers_vae_to_ldm(flux1.eval().state_dict(), n_up=2), str(root / "flux1_ae.safetensors"))

    torch.manual_seed(3)
    taesd_dir = root / "taesd_models" / "taesd"
    taesd_dir.mkdir(parents=True)
    enc, dec = TAESDEncoder(32, width=8, midblock_gn=True), TAESDDecoder(32, width=8, midblock_gn=True)
    torch.save({k: v.half() for k, v in enc.state_dict().items()}, taesd_dir / "taef2_encoder.pth")
    torch.save({k: v.half() for k, v in dec.state_dict().items()}, taesd_dir / "taef2_decoder.pth")
    sana = TAESanaEncoder(32, width=8)
    torch.save({k: v.half() for k, v in sana.state_dict().items()}, taesd_dir / "taesana_encoder.pth")
    return {"root": root, "kl": kl, "tiny": tiny_ae, "flux2": flux2, "taesd_dir": taesd_dir}


VARIANTS = {
    # name: (relative path, adapter, downsample, latent channels, can decode)
    "kl_folder": ("kl", DiffusersKLEncoder, 2, 4, True),
    "kl_pipeline_folder": ("pipe", DiffusersKLEncoder, 2, 4, True),
    "kl_diffusers_file": ("kl_diffusers.safetensors", DiffusersKLEncoder, 2, 4, True),
    "kl_ldm_checkpoint": ("sd_checkpoint.safetensors", DiffusersKLEncoder, 2, 4, True),
    "kl_ldm_encoder_only": ("kl_encoder_only.safetensors", DiffusersKLEncoder, 2, 4, False),
    "kl_ldm_with_config": ("withcfg/vae.safetensors", DiffusersKLEncoder, 2, 4, True),
    "tiny_folder": ("tiny", DiffusersTinyEncoder, 4, 4, True),
    "tiny_file": ("tiny.safetensors", DiffusersTinyEncoder, 4, 4, True),
    "flux2_folder": ("flux2", DiffusersKLEncoder, 2, 4, True),
    "flux2_file": ("flux2.safetensors", DiffusersKLEncoder, 2, 4, True),
    "flux2_ldm_file": ("flux2_ldm.safetensors", DiffusersKLEncoder, 2, 4, True),
    "flux1_like_ldm_file": ("flux1_ae.safetensors", DiffusersKLEncoder, 2, 16, True),
    "taef2_pth": ("taesd_models/taesd/taef2_encoder.pth", TAESDFileEncoder, 8, 32, True),
    "taesana_pth": ("taesd_models/taesd/taesana_encoder.pth", TAESDFileEncoder, 32, 32, False),
}


@pytest.fixture(scope="module")
def loaded(tiny: dict[str, object]) -> dict[str, Encoder]:
    root = tiny["root"]
    assert isinstance(root, Path)
    return {name: encoder_from_path(root / rel) for name, (rel, *_rest) in VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_interface(variant: str, loaded: dict[str, Encoder]) -> None:
    _, adapter, down, channels, can_decode = VARIANTS[variant]
    enc = loaded[variant]
    assert isinstance(enc, adapter)
    assert (enc.downsample, enc.latent_channels, enc.can_decode) == (down, channels, can_decode)
    # frozen, and stays in eval mode
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    # any size in, padded internally; differentiable w.r.t. the input
    x = torch.rand(2, 3, H, W, requires_grad=True)
    z = enc(x)
    assert z.shape == (2, channels, -(-H // down), -(-W // down)) and z.dtype == torch.float32
    z.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    # channels_last inputs give the same latent
    with torch.no_grad():
        ref = enc(x.detach())
        cl = enc(x.detach().contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)
        # autocast (CPU bf16) runs and still returns float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            zb = enc(x.detach())
    assert zb.dtype == torch.float32 and zb.shape == ref.shape and torch.isfinite(zb).all()
    assert (zb - ref).abs().max() <= 0.1 * ref.abs().max() + 1e-3


@pytest.mark.parametrize("variant", ["kl_folder", "kl_diffusers_file", "kl_ldm_checkpoint", "kl_ldm_with_config"])
def test_kl_matches_diffusers_encode_mean(variant: str, tiny: dict[str, object], loaded: dict[str, Encoder]) -> None:
    kl = tiny["kl"]
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref = kl.encode(x * 2 - 1).latent_dist.mean  # type: ignore[attr-defined]
        torch.testing.assert_close(loaded[variant](x), ref, rtol=1e-5, atol=1e-5)


def test_tiny_and_flux2_match_diffusers(tiny: dict[str, object], loaded: dict[str, Encoder]) -> None:
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref_tiny = tiny["tiny"].encode(x * 2 - 1).latents  # type: ignore[attr-defined]
        torch.testing.assert_close(loaded["tiny_file"](x), ref_tiny, rtol=1e-5, atol=1e-5)
        ref_f2 = tiny["flux2"].encode(x * 2 - 1).latent_dist.mean  # type: ignore[attr-defined]
        torch.testing.assert_close(loaded["flux2_file"](x), ref_f2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded["flux2_ldm_file"](x), ref_f2, rtol=1e-5, atol=1e-5)
    for variant in ("flux2_file", "flux2_ldm_file"):
        vae = loaded[variant].vae  # type: ignore[union-attr]
        assert type(vae).__name__ == "AutoencoderKLFlux2"
        torch.testing.assert_close(vae.bn.running_var, tiny["flux2"].bn.running_var)  # type: ignore[attr-defined]
    assert loaded["flux1_like_ldm_file"].vae.quant_conv is None  # type: ignore[union-attr]


@pytest.mark.parametrize("variant", [v for v, spec in VARIANTS.items() if spec[4]])
def test_decode(variant: str, loaded: dict[str, Encoder]) -> None:
    enc = loaded[variant]
    with torch.no_grad():
        z = enc(torch.rand(1, 3, H, W))
        img = enc.decode(z, size=(H, W))
    assert img.shape == (1, 3, H, W) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1


def test_decode_unavailable_raises(loaded: dict[str, Encoder]) -> None:
    for variant in ("taesana_pth", "kl_ldm_encoder_only"):
        with pytest.raises(FixativeError, match="no decoder"):
            loaded[variant].decode(torch.zeros(1, loaded[variant].latent_channels, 2, 2))


def test_pad_to_multiple() -> None:
    x = torch.rand(1, 3, 3, 5)
    y = pad_to_multiple(x, 32)
    assert y.shape == (1, 3, 32, 32)
    torch.testing.assert_close(y[..., :3, :5], x)
    assert pad_to_multiple(torch.rand(1, 3, 1, 1), 8).shape == (1, 3, 8, 8)
    assert pad_to_multiple(x, 1) is x and pad_to_multiple(torch.rand(1, 3, 8, 16), 8).shape == (1, 3, 8, 16)
    # reflection: the first padded row mirrors the row above the last
    z = pad_to_multiple(torch.rand(1, 3, 6, 8), 8)
    torch.testing.assert_close(z[..., 6, :], z[..., 4, :])


def test_rejects_wrong_input_shape(loaded: dict[str, Encoder]) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        loaded["taef2_pth"](torch.rand(3, 16, 16))


# --- resolving specs ---------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty --models-dir, env and checkout dirs, plus an empty offline hub cache."""
    out = {name: tmp_path / name for name in ("explicit", "flag", "env", "checkout", "hub")}
    for path in out.values():
        path.mkdir()
    monkeypatch.setenv(ENV_MODELS_DIR, str(out["env"]))
    monkeypatch.setattr(store_mod, "checkout_models_dir", lambda: out["checkout"])
    return out


def _copy_taef2(tiny: dict[str, object], dest: Path) -> Path:
    src = tiny["taesd_dir"]
    assert isinstance(src, Path)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        (dest / name).write_bytes((src / name).read_bytes())
    return dest / "taef2_encoder.pth"


def _hub_taesd(tiny: dict[str, object], cache: Path) -> None:
    snap = fake_hub_snapshot(cache, "madebyollin/taesd")
    tiny_dir = tiny["root"] / "tiny"  # type: ignore[operator]
    for f in tiny_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())


def test_resolution_order(tiny: dict[str, object], places: dict[str, Path]) -> None:
    store = ModelStore(places["flag"], hub_cache=places["hub"])
    explicit = _copy_taef2(tiny, places["explicit"])
    found = {key: _copy_taef2(tiny, places[key] / "taesd") for key in ("flag", "env", "checkout")}
    assert resolve_spec(str(explicit), store).location == str(explicit.resolve())
    for key in ("flag", "env", "checkout"):
        r = resolve_spec("taef2", store)
        assert (r.kind, r.location) == ("path", str(found[key].resolve()))
        found[key].unlink()
    # then the copy built into the package (checked against its pinned SHA-256)
    from fixative.models.builtin import BUILTIN_DIR

    assert resolve_spec("taef2", store).location == str(BUILTIN_DIR / "taesd" / "taef2_encoder.pth")
    with pytest.raises(ModelNotFoundError):
        resolve_spec("taef2", ModelStore(places["flag"], hub_cache=places["hub"], builtin=False))  # no hub fallback

    # taesd: local files first, then the (offline) hub cache's AutoencoderTiny repo
    _hub_taesd(tiny, places["hub"])
    r = resolve_spec("taesd", store)
    assert (r.kind, r.location, r.subfolder) == ("hub", "madebyollin/taesd", "")
    local = places["checkout"] / "taesd_encoder.pth"
    local.write_bytes((tiny["taesd_dir"] / "taesana_encoder.pth").read_bytes())  # type: ignore[operator]
    assert resolve_spec("TAESD", store).location == str(local.resolve())


def test_short_names_are_reserved_words(
    tiny: dict[str, object], places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(places["flag"], hub_cache=places["hub"])
    in_store = _copy_taef2(tiny, places["flag"] / "taesd")
    monkeypatch.chdir(places["explicit"])
    local = _copy_taef2(tiny, places["explicit"] / "taef2")  # a folder called taef2 in the cwd
    assert resolve_spec("taef2", store).location == str(in_store.resolve())
    assert resolve_spec("./taef2", store).location == str(local.parent.resolve())
    enc = load_encoder("./taef2", store=store)  # a folder holding one *_encoder.pth
    assert isinstance(enc, TAESDFileEncoder) and enc.can_decode


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # inside diffusers
def test_load_from_hub_cache(tiny: dict[str, object], places: dict[str, Path]) -> None:
    store = ModelStore(places["flag"], hub_cache=places["hub"])
    _hub_taesd(tiny, places["hub"])
    enc = load_encoder("taesd", store=store)
    assert isinstance(enc, DiffusersTinyEncoder) and enc.source == "madebyollin/taesd" and enc.name == "taesd"
    # a pipeline repo given by id: its vae/ subfolder is found
    snap = fake_hub_snapshot(places["hub"], "someone/tiny-pipeline")
    for f in (tiny["root"] / "pipe").rglob("*"):  # type: ignore[operator]
        if f.is_file():
            dest = snap / f.relative_to(tiny["root"] / "pipe")  # type: ignore[operator]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.read_bytes())
    enc = load_encoder("someone/tiny-pipeline", store=store)
    assert isinstance(enc, DiffusersKLEncoder) and enc.source == "someone/tiny-pipeline/vae"
    assert enc(torch.rand(1, 3, H, W)).shape == (1, 4, 19, 27)


def test_store_relative_path(tiny: dict[str, object], places: dict[str, Path]) -> None:
    enc_file = _copy_taef2(tiny, places["flag"] / "mine")
    store = ModelStore(places["flag"], hub_cache=places["hub"])
    assert resolve_spec("mine/taef2_encoder.pth", store).location == str(enc_file.resolve())


def test_missing_model_message_offline(places: dict[str, Path]) -> None:
    store = ModelStore(places["flag"], hub_cache=places["hub"], builtin=False)
    with pytest.raises(ModelNotFoundError) as info:
        load_encoder("taef2", store=store)
    msg = str(info.value)
    for key in ("flag", "env", "checkout"):
        assert str(places[key]) in msg
    assert "taef2_encoder.pth" in msg and "github.com/madebyollin/taesd" in msg
    assert f"{places['flag']}/taesd/" in msg  # where to put it

    with pytest.raises(ModelNotFoundError) as info:
        load_encoder("sdxl", store=store)
    msg = str(info.value)
    assert "stabilityai/stable-diffusion-xl-base-1.0" in msg and "offline" in msg and str(places["hub"]) in msg
    assert "hf download stabilityai/stable-diffusion-xl-base-1.0" in msg and str(places["flag"]) in msg

    with pytest.raises(ModelNotFoundError, match="someone/not-cached"):
        load_encoder("someone/not-cached", store=store)
    with pytest.raises(ModelNotFoundError) as info:
        load_encoder("no-such-encoder", store=store)
    assert "taef2" in str(info.value) and str(places["env"]) in str(info.value)
    with pytest.raises(ModelNotFoundError, match="absent.safetensors"):
        load_encoder(str(places["explicit"] / "absent.safetensors"), store=store)


def test_load_encoders_dedupes_and_options(tiny: dict[str, object], places: dict[str, Path]) -> None:
    enc_file = _copy_taef2(tiny, places["flag"] / "taesd")
    store = ModelStore(places["flag"], hub_cache=places["hub"])
    encs = load_encoders(["taef2", "taef2", str(enc_file), "taef2_encoder.pth"], store=store)
    assert len(encs) == 1 and encs[0].name == "taef2" and encs[0].can_decode
    (lean,) = load_encoders(["taef2"], store=store, keep_decoder=False, dtype=torch.bfloat16)
    assert not lean.can_decode and lean.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in lean.parameters())
    assert lean(torch.rand(1, 3, H, W)).dtype == torch.float32


def test_bad_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"garbage" * 20)
    with pytest.raises(FixativeError, match="junk.safetensors"):
        encoder_from_path(junk)
    save_file({"unet.weight": torch.zeros(2)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(FixativeError, match="not a recognised VAE"):
        encoder_from_path(tmp_path / "unet.safetensors")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(FixativeError, match="config.json"):
        encoder_from_path(tmp_path / "empty_folder")
    (tmp_path / "unet_folder").mkdir()
    (tmp_path / "unet_folder" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(FixativeError, match="unsupported model class 'UNet2DModel'"):
        encoder_from_path(tmp_path / "unet_folder")


def test_short_name_table() -> None:
    assert set(SHORT_NAMES) >= {
        "sd15", "sd21", "sdxl", "sd3", "flux1", "flux2",
        "taesd", "taesdxl", "taesd3", "taef1", "taef2", "taesana",
    }  # fmt: skip
    assert SHORT_NAMES["taef2"].hub_repo is None and SHORT_NAMES["taesana"].downsample == 32
    assert SHORT_NAMES["flux2"].latent_channels == 32 and SHORT_NAMES["sd3"].latent_channels == 16
    assert all(s.hub_subfolder == "vae" for n, s in SHORT_NAMES.items() if not n.startswith("tae"))


# --- real weights ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_short_names_from_shared_store() -> None:
    shared = require_shared("models/taesd/taef2_encoder.pth", "models/taesd/taesana_encoder.pth")
    store = ModelStore(shared / "models")
    taef2, taesana = load_encoders(["taef2", "taesana"], store=store)
    assert isinstance(taef2, TAESDFileEncoder) and taef2.can_decode and taef2.latent_channels == 32
    assert isinstance(taesana, TAESDFileEncoder) and not taesana.can_decode and taesana.downsample == 32
    x = torch.rand(1, 3, 70, 100, requires_grad=True)
    z = taef2(x)
    assert z.shape == (1, 32, 9, 13)
    assert taesana(x).shape == (1, 32, 3, 4)
    z.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        y = taef2.decode(taef2(x.detach()), size=(70, 100))
    assert y.shape == (1, 3, 70, 100)
