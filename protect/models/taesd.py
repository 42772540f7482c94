"""Tiny AutoEncoder (TAESD-format) networks and a loader for their ``.pth`` state dicts.

TAESD-format files (``taesd_encoder.pth``, ``taef2_decoder.pth``, ``taesana_encoder.pth``, ...) are
plain ``torch.save`` state dicts of a :class:`torch.nn.Sequential`, keyed by position (``0.weight``,
``1.conv.0.weight``, ``11.pool.0.weight``). The classes here rebuild those sequentials exactly, so the
files load with ``strict=True``; :func:`load_taesd_file` works out which network a file holds from its
keys and tensor shapes alone.

Conventions (the same as the original TAESD code):

* images are float tensors in **[0, 1]**, NCHW (not [-1, 1]);
* latents are in the raw latent scale of the big VAE the tiny one was distilled from (no scaling
  factor), NCHW with ``latent_channels`` channels at 1/8 (or 1/32 for taesana) of the image size;
* decoders return images in roughly [0, 1] (not clamped).

Known variants (C = latent channels):

=============  ==  ==========  ===================================================
name           C   downsample  notes
=============  ==  ==========  ===================================================
taesd/taesdxl  4   8           SD 1.x/2.x, SDXL latent space
taesd3/taef1   16  8           SD3, FLUX.1 latent space
taef2          32  8           FLUX.2; mid-block GroupNorm in the last three encoder
                               blocks and the first three decoder blocks
taesana        32  32          Sana DC-AE f32c32 latent space; encoder only
=============  ==  ==========  ===================================================
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from fixative.errors import FixativeError, safe_load_message

TAESDKind = Literal["encoder", "decoder"]

__all__ = [
    "Block",
    "Clamp",
    "TAESDDecoder",
    "TAESDEncoder",
    "TAESDInfo",
    "TAESanaEncoder",
    "build_taesd",
    "inspect_taesd_state_dict",
    "load_taesd_file",
    "read_state_dict",
    "taesd_from_state_dict",
]


def _conv(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution with padding 1 (the only kernel TAESD uses besides 1x1 skips)."""
    return nn.Conv2d(n_in, n_out, kernel_size=3, padding=1, stride=stride, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of latents to about [-3, 3]: ``tanh(x / 3) * 3`` (first layer of every decoder)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """TAESD residual block ``a -> b`` channels; spatial size unchanged.

    ``conv`` = 3x3 conv, ReLU, 3x3 conv, ReLU, 3x3 conv; ``skip`` = 1x1 conv without bias when
    ``a != b``, identity otherwise; output ``ReLU(conv(x) + skip(x))``.

    With ``midblock_gn=True`` (taef2) a ``pool`` branch (1x1 conv a->4a without bias, GroupNorm(4, 4a),
    ReLU, 1x1 conv 4a->a without bias) is first added to ``x``: ``x = x + pool(x)``.
    """

    def __init__(self, n_in: int, n_out: int, *, midblock_gn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip: nn.Module = nn.Conv2d(n_in, n_out, kernel_size=1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool: nn.Module | None = None
        if midblock_gn:
            hidden = 4 * n_in
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, hidden, kernel_size=1, bias=False),
                nn.GroupNorm(4, hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, n_in, kernel_size=1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class TAESDEncoder(nn.Sequential):
    """TAESD 8x encoder: image in [0,1], (N,3,H,W) -> latent (N, latent_channels, H/8, W/8).

    H and W must be multiples of 8 for the latent to line up with the image (other sizes run, with
    the usual stride-2 rounding). ``width`` is the internal channel count (64 in every published
    file; smaller values build tiny test networks). ``midblock_gn`` adds the mid-block GroupNorm
    branch to the last three blocks (taef2).
    """

    downsample: int = 8

    def __init__(self, latent_channels: int = 4, *, width: int = 64, midblock_gn: bool = False) -> None:
        w = width

        def blk(gn: bool = False) -> Block:
            return Block(w, w, midblock_gn=gn)

        super().__init__(
            _conv(3, w), blk(),
            _conv(w, w, stride=2, bias=False), blk(), blk(), blk(),
            _conv(w, w, stride=2, bias=False), blk(), blk(), blk(),
            _conv(w, w, stride=2, bias=False), blk(midblock_gn), blk(midblock_gn), blk(midblock_gn),
            _conv(w, latent_channels),
        )  # fmt: skip
        self.latent_channels = latent_channels
        self.width = width
        self.midblock_gn = midblock_gn


class TAESDDecoder(nn.Sequential):
    """TAESD 8x decoder: latent (N, latent_channels, h, w) -> image (N, 3, 8h, 8w) in about [0, 1].

    ``midblock_gn`` adds the mid-block GroupNorm branch to the first three blocks (taef2).
    """

    downsample: int = 8

    def __init__(self, latent_channels: int = 4, *, width: int = 64, midblock_gn: bool = False) -> None:
        w = width

        def blk(gn: bool = False) -> Block:
            return Block(w, w, midblock_gn=gn)

        super().__init__(
            Clamp(), _conv(latent_channels, w), nn.ReLU(),
            blk(midblock_gn), blk(midblock_gn), blk(midblock_gn),
            nn.Upsample(scale_factor=2), _conv(w, w, bias=False), blk(), blk(), blk(),
            nn.Upsample(scale_factor=2), _conv(w, w, bias=False), blk(), blk(), blk(),
            nn.Upsample(scale_factor=2), _conv(w, w, bias=False), blk(),
            _conv(w, 3),
        )  # fmt: skip
        self.latent_channels = latent_channels
        self.width = width
        self.midblock_gn = midblock_gn


class TAESanaEncoder(nn.Sequential):
    """taesana 32x encoder: image in [0,1], (N,3,H,W) -> latent (N, latent_channels, H/32, W/32).

    Architecture: conv(3, w/2, stride 2), ReLU, conv(w/2, w, stride 2), ReLU, Block(w, w),
    3 x [conv(w, w, stride 2, no bias), Block x3], conv(w, latent_channels). ``width`` = w (64).
    """

    downsample: int = 32

    def __init__(self, latent_channels: int = 32, *, width: int = 64) -> None:
        w = width
        if w % 2:
            raise ValueError(f"taesana width must be even, got {w}")
        layers: list[nn.Module] = [
            _conv(3, w // 2, stride=2), nn.ReLU(), _conv(w // 2, w, stride=2), nn.ReLU(), Block(w, w),
        ]  # fmt: skip
        for _ in range(3):
            layers += [_conv(w, w, stride=2, bias=False), Block(w, w), Block(w, w), Block(w, w)]
        layers.append(_conv(w, latent_channels))
        super().__init__(*layers)
        self.latent_channels = latent_channels
        self.width = width
        self.midblock_gn = False


@dataclass(frozen=True)
class TAESDInfo:
    """What a TAESD-format state dict holds, worked out from its keys and shapes.

    ``kind``: "encoder" or "decoder"; ``downsample``: 8 or 32 (spatial factor between image and
    latent); ``latent_channels``: channels of the latent; ``width``: internal channels (64 in
    published files); ``midblock_gn``: whether the blocks carry the taef2 GroupNorm branch.
    """

    kind: TAESDKind
    downsample: int
    latent_channels: int
    width: int
    midblock_gn: bool


def build_taesd(info: TAESDInfo) -> TAESDEncoder | TAESDDecoder | TAESanaEncoder:
    """Build the (randomly initialised, float32) network described by ``info``."""
    if info.kind == "decoder":
        if info.downsample != 8:
            raise ValueError("only 8x TAESD decoders exist")
        return TAESDDecoder(info.latent_channels, width=info.width, midblock_gn=info.midblock_gn)
    if info.downsample == 32:
        return TAESanaEncoder(info.latent_channels, width=info.width)
    return TAESDEncoder(info.latent_channels, width=info.width, midblock_gn=info.midblock_gn)


def _shape(sd: dict[str, Tensor], key: str) -> tuple[int, ...] | None:
    value = sd.get(key)
    return tuple(value.shape) if isinstance(value, Tensor) else None


def inspect_taesd_state_dict(sd: dict[str, Tensor]) -> TAESDInfo:
    """Work out which TAESD network ``sd`` belongs to, from its keys and tensor shapes.

    Raises ``ValueError`` (with the reason) when the dict is not a TAESD-format state dict.
    Distinguishing features: an 8x encoder starts with a 3-input conv ``0.weight`` followed by a
    block ``1.conv.0.weight``; taesana starts with two strided convs ``0.weight`` (3 -> w/2) and
    ``2.weight`` (w/2 -> w); a decoder starts at ``1.weight`` (C -> w) after the parameter-free clamp.
    """
    if not sd or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
        raise ValueError("not a state dict of tensors")
    midblock_gn = any(".pool." in k for k in sd)
    first = _shape(sd, "0.weight")
    dec_in = _shape(sd, "1.weight")
    if first is not None and len(first) == 4 and first[1] == 3:
        if "1.conv.0.weight" in sd:  # 8x encoder
            last = max(int(k.split(".", 1)[0]) for k in sd)
            out = _shape(sd, f"{last}.weight")
            if out is None or len(out) != 4:
                raise ValueError("the last layer is not a convolution")
            return TAESDInfo("encoder", 8, out[0], first[0], midblock_gn)
        second = _shape(sd, "2.weight")
        if second is not None and len(second) == 4 and second[1] == first[0] and "2.bias" in sd:
            last = max(int(k.split(".", 1)[0]) for k in sd)
            out = _shape(sd, f"{last}.weight")
            if out is None or len(out) != 4:
                raise ValueError("the last layer is not a convolution")
            return TAESDInfo("encoder", 32, out[0], second[0], midblock_gn)
        raise ValueError("starts like an encoder (3-channel conv) but the next layers match no TAESD encoder")
    if first is None and dec_in is not None and len(dec_in) == 4:
        return TAESDInfo("decoder", 8, dec_in[1], dec_in[0], midblock_gn)
    raise ValueError(
        "keys do not look like a TAESD network (expected '0.weight' with 3 input channels for an "
        f"encoder, or '1.weight' for a decoder); first keys: {list(sd)[:5]}"
    )


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.pth`` (``weights_only=True``) or ``.safetensors`` file to the CPU.

    A ``{"state_dict": {...}}`` wrapper is unwrapped. Raises :class:`FixativeError` naming the file
    when it is missing, corrupt, or holds something other than a dict.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError as exc:
        raise FixativeError(f"weights file {path} does not exist") from exc
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise FixativeError(f"cannot read weights file {path}: {safe_load_message(exc)}") from None
        raise FixativeError(
            f"cannot read weights file {path}: it is corrupt, truncated or not a torch state dict ({exc})"
        ) from exc
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as exc:
        raise FixativeError(
            f"cannot read weights file {path}: it is corrupt, truncated or not a torch state dict "
            f"({safe_load_message(exc)})"
        ) from exc
    except Exception as exc:  # safetensors raises its own error types
        raise FixativeError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise FixativeError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def taesd_from_state_dict(
    sd: dict[str, Tensor], source: str = "state dict", kind: TAESDKind | None = None
) -> TAESDEncoder | TAESDDecoder | TAESanaEncoder:
    """Build the TAESD network that ``sd`` belongs to and load it strictly (fp16 -> float32).

    ``source`` names the origin (a file path) in error messages; ``kind``, when given, is checked.
    Returns the module in eval mode. Raises :class:`FixativeError` on any mismatch.
    """
    try:
        info = inspect_taesd_state_dict(sd)
    except ValueError as exc:
        raise FixativeError(f"{source} is not a TAESD-format state dict: {exc}") from exc
    if kind is not None and kind != info.kind:
        raise FixativeError(f"{source} holds a TAESD {info.kind}, but a {kind} was expected")
    module = build_taesd(info)
    sd32 = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        module.load_state_dict(sd32, strict=True)
    except RuntimeError as exc:
        raise FixativeError(
            f"{source} looks like a TAESD {info.kind} ({info.latent_channels} latent channels, "
            f"{info.downsample}x) but its tensors do not match that architecture: {exc}"
        ) from exc
    return module.eval()


def load_taesd_file(path: str | Path, kind: TAESDKind | None = None) -> TAESDEncoder | TAESDDecoder | TAESanaEncoder:
    """Load a TAESD-format ``.pth`` (or ``.safetensors``) file into the matching network.

    The architecture (encoder/decoder, 8x/32x, latent channels, width, mid-block GroupNorm) is
    inferred from the keys and shapes; the file name is not used. ``kind`` ("encoder"/"decoder"),
    when given, is checked against what the file holds. fp16 weights are converted to float32.
    The returned module is in eval mode; its parameters still require grad (freeze as needed).

    Raises :class:`FixativeError` naming the file when it is missing, corrupt, not a TAESD state
    dict, of the wrong kind, or does not load strictly.
    """
    path = Path(path)
    return taesd_from_state_dict(read_state_dict(path), str(path), kind)
