"""TAESD-format networks and the key-inferring loader: tiny random networks, then the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fixative.errors import FixativeError
from fixative.models.taesd import (
    Block,
    TAESanaEncoder,
    TAESDDecoder,
    TAESDEncoder,
    TAESDInfo,
    inspect_taesd_state_dict,
    load_taesd_file,
)

from tiny import require_shared


def _save_fp16(module: torch.nn.Module, path: Path) -> Path:
    torch.save({k: v.half() for k, v in module.state_dict().items()}, path)
    return path


def test_block_pool_branch_keys_and_shape() -> None:
    block = Block(8, 8, midblock_gn=True)
    keys = set(block.state_dict())
    assert {"pool.0.weight", "pool.1.weight", "pool.1.bias", "pool.3.weight"} <= keys
    assert block.pool[0].weight.shape == (32, 8, 1, 1) and block.pool[1].num_groups == 4
    assert block(torch.rand(1, 8, 5, 7)).shape == (1, 8, 5, 7)
    skip = Block(4, 8)
    assert "skip.weight" in skip.state_dict() and skip(torch.rand(1, 4, 3, 3)).shape == (1, 8, 3, 3)


def test_published_key_layout() -> None:
    enc = TAESDEncoder(32, midblock_gn=True)
    keys = set(enc.state_dict())
    assert {"0.weight", "1.conv.0.weight", "2.weight", "11.pool.0.weight", "13.pool.3.weight", "14.bias"} <= keys
    assert not any(k.startswith(("10.pool", "2.bias")) for k in keys)
    dec = TAESDDecoder(32, midblock_gn=True)
    dkeys = set(dec.state_dict())
    assert {"1.weight", "3.pool.0.weight", "5.pool.3.weight", "19.weight", "19.bias"} <= dkeys
    assert not any(k.startswith("8.pool") for k in dkeys)
    sana = TAESanaEncoder()
    assert {"0.bias", "2.bias", "4.conv.0.weight", "17.weight"} <= set(sana.state_dict())


@pytest.mark.parametrize(
    ("module", "info"),
    [
        (TAESDEncoder(4, width=8), TAESDInfo("encoder", 8, 4, 8, False)),
        (TAESDEncoder(16, width=8), TAESDInfo("encoder", 8, 16, 8, False)),
        (TAESDEncoder(32, width=8, midblock_gn=True), TAESDInfo("encoder", 8, 32, 8, True)),
        (TAESDDecoder(32, width=8, midblock_gn=True), TAESDInfo("decoder", 8, 32, 8, True)),
        (TAESDDecoder(4, width=8), TAESDInfo("decoder", 8, 4, 8, False)),
        (TAESanaEncoder(32, width=8), TAESDInfo("encoder", 32, 32, 8, False)),
    ],
)
def test_inspect_and_strict_load_roundtrip(module: torch.nn.Module, info: TAESDInfo, tmp_path: Path) -> None:
    assert inspect_taesd_state_dict(module.state_dict()) == info
    # the file name says nothing: inference works from keys and shapes alone
    path = _save_fp16(module, tmp_path / "weights.bin")
    loaded = load_taesd_file(path)
    assert type(loaded) is type(module)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert not loaded.training
    x = torch.rand(1, module.latent_channels if info.kind == "decoder" else 3, 8, 8)
    if info.kind == "encoder":
        x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = module.half().float()(x)
        out = loaded(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_shapes() -> None:
    x = torch.rand(2, 3, 64, 96)
    assert TAESDEncoder(16, width=8)(x).shape == (2, 16, 8, 12)
    assert TAESanaEncoder(32, width=8)(x).shape == (2, 32, 2, 3)
    assert TAESDDecoder(16, width=8)(torch.rand(2, 16, 8, 12)).shape == (2, 3, 64, 96)


def test_kind_mismatch_names_file(tmp_path: Path) -> None:
    path = _save_fp16(TAESDDecoder(4, width=8), tmp_path / "x_decoder.pth")
    with pytest.raises(FixativeError, match="x_decoder.pth.*decoder.*encoder was expected"):
        load_taesd_file(path, kind="encoder")


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk_encoder.pth"
    junk.write_bytes(b"\x00not a torch file at all" * 10)
    with pytest.raises(FixativeError, match="junk_encoder.pth"):
        load_taesd_file(junk)
    truncated = tmp_path / "trunc_encoder.pth"
    _save_fp16(TAESDEncoder(4, width=8), truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(FixativeError, match="trunc_encoder.pth"):
        load_taesd_file(truncated)
    foreign = tmp_path / "foreign.pth"
    torch.save({"linear.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(FixativeError, match="foreign.pth is not a TAESD"):
        load_taesd_file(foreign)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(FixativeError, match="list.pth holds a list"):
        load_taesd_file(listed)
    with pytest.raises(FixativeError, match="does not exist"):
        load_taesd_file(tmp_path / "nope.pth")
    # right keys, wrong shapes: reported, not a raw torch traceback
    sd = TAESDEncoder(4, width=8).state_dict()
    sd["3.conv.2.weight"] = torch.zeros(8, 8, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(FixativeError, match="bad.pth looks like a TAESD encoder"):
        load_taesd_file(bad)


def test_safetensors_taesd_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    enc = TAESDEncoder(4, width=8)
    save_file({k: v.half().contiguous() for k, v in enc.state_dict().items()}, str(tmp_path / "e.safetensors"))
    assert isinstance(load_taesd_file(tmp_path / "e.safetensors"), TAESDEncoder)


# --- real weights ------------------------------------------------------------------------------


def _photo(shared: Path, size: int = 512) -> torch.Tensor:
    from PIL import Image

    img = Image.open(shared / "images" / "LadyBird.jpg").convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.slow
def test_real_taef2_roundtrip_psnr() -> None:
    shared = require_shared("models/taesd/taef2_encoder.pth", "images/LadyBird.jpg")
    enc = load_taesd_file(shared / "models/taesd/taef2_encoder.pth")
    dec = load_taesd_file(shared / "models/taesd/taef2_decoder.pth")
    assert isinstance(enc, TAESDEncoder) and isinstance(dec, TAESDDecoder)
    assert enc.latent_channels == dec.latent_channels == 32 and enc.midblock_gn and dec.midblock_gn
    x = _photo(shared)
    with torch.no_grad():
        z = enc(x)
        y = dec(z).clamp(0, 1)
    assert z.shape == (1, 32, 64, 64)
    psnr = 10 * torch.log10(1 / ((x - y) ** 2).mean()).item()
    assert psnr >= 34.0, psnr  # 34.85 dB measured here


@pytest.mark.slow
def test_real_taesana_shape() -> None:
    shared = require_shared("models/taesd/taesana_encoder.pth")
    enc = load_taesd_file(shared / "models/taesd/taesana_encoder.pth", kind="encoder")
    assert isinstance(enc, TAESanaEncoder) and enc.downsample == 32
    with torch.no_grad():
        z = enc(torch.rand(1, 3, 128, 192))
    assert z.shape == (1, 32, 4, 6)
    assert torch.isfinite(z).all()
