"""Single weights files: TAESD files, and VAEs whose config is read beside the file or guessed from the weights.

A VAE in one file (diffusers or original LDM keys, or a whole SD checkpoint's ``first_stage_model.*``)
has no config; :func:`load_checkpoint` reads ``NAME.json`` or ``config.json`` beside it when there is
one, else infers an ``AutoencoderKL``(``-Flux2``) or ``AutoencoderTiny`` config from the tensors' shapes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fixative.core.encoder import Encoder
from fixative.errors import FixativeError
from fixative.models.adapters import TAESDFileEncoder, read_config, vae_class, wrap_vae
from fixative.models.taesd import TAESanaEncoder, TAESDDecoder, TAESDEncoder, read_state_dict, taesd_from_state_dict

log = logging.getLogger(__name__)


_LDM_PREFIXES = ("first_stage_model.", "vae.", "")


def _read_weights(path: Path) -> dict[str, Tensor]:
    """State dict of a weights file; for a whole SD checkpoint only the VAE part (prefix stripped)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
                prefix = _vae_prefix(keys)
                return {k[len(prefix) :]: f.get_tensor(k) for k in keys if k.startswith(prefix)}
        except Exception as exc:
            raise FixativeError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    sd = read_state_dict(path)
    prefix = _vae_prefix(list(sd))
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)} if prefix else sd


def _vae_prefix(keys: Sequence[str]) -> str:
    for prefix in _LDM_PREFIXES[:-1]:
        if any(k.startswith(prefix + "encoder.") for k in keys):
            return prefix
    return ""


def _shape(sd: dict[str, Tensor], key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


def _indices(sd: dict[str, Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _guess_groups(channels: Sequence[int]) -> int:
    """GroupNorm groups: 32 in every published VAE; for small test models the largest g <= c/2 dividing all.

    Group counts cannot be read from the weights; put a ``config.json`` beside the file when a
    model uses another value.
    """
    if all(c % 32 == 0 and c >= 64 for c in channels):
        return 32
    g = math.gcd(*channels)
    target = max(1, min(channels) // 2)
    return max(d for d in range(1, g + 1) if g % d == 0 and d <= target)


def _kl_config(sd: dict[str, Tensor], ldm: bool) -> dict[str, Any]:
    """Infer an AutoencoderKL(-Flux2) config from a diffusers- or LDM-format state dict."""
    if ldm:
        down = _indices(sd, r"encoder\.down\.(\d+)\.")
        block_out = [_shape(sd, f"encoder.down.{i}.block.0.conv2.weight")[0] for i in down]
        layers = len(_indices(sd, r"encoder\.down\.0\.block\.(\d+)\."))
        attention = any(k.startswith("encoder.mid.attn_1.") for k in sd)
        dec_up = _indices(sd, r"decoder\.up\.(\d+)\.")
        dec_out = [_shape(sd, f"decoder.up.{i}.block.0.conv2.weight")[0] for i in dec_up] if dec_up else []
    else:
        down = _indices(sd, r"encoder\.down_blocks\.(\d+)\.")
        block_out = [_shape(sd, f"encoder.down_blocks.{i}.resnets.0.conv2.weight")[0] for i in down]
        layers = len(_indices(sd, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
        attention = any(k.startswith("encoder.mid_block.attentions.") for k in sd)
        dec_up = _indices(sd, r"decoder\.up_blocks\.(\d+)\.")
        # diffusers' up_blocks run from the deepest level up; store them shallow-first like block_out
        dec_out = [_shape(sd, f"decoder.up_blocks.{i}.resnets.0.conv2.weight")[0] for i in dec_up][::-1]
    if not block_out:
        raise ValueError("no encoder down blocks")
    latent = _shape(sd, "encoder.conv_out.weight")[0] // 2
    config: dict[str, Any] = {
        "in_channels": _shape(sd, "encoder.conv_in.weight")[1],
        "out_channels": _shape(sd, "decoder.conv_out.weight")[0] if "decoder.conv_out.weight" in sd else 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(block_out),
        "up_block_types": ["UpDecoderBlock2D"] * len(block_out),
        "block_out_channels": block_out,
        "layers_per_block": layers,
        "latent_channels": latent,
        "norm_num_groups": _guess_groups(block_out + dec_out),
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": attention,
    }
    if "bn.running_mean" in sd:
        config["_class_name"] = "AutoencoderKLFlux2"
        patch = int(round(math.sqrt(sd["bn.running_mean"].shape[0] // latent)))
        config["patch_size"] = [patch, patch]
        if dec_out and dec_out != block_out:
            config["decoder_block_out_channels"] = dec_out
    else:
        config["_class_name"] = "AutoencoderKL"
    return config


def _tiny_config(sd: dict[str, Tensor]) -> dict[str, Any]:
    """Infer an AutoencoderTiny config from its diffusers-format state dict."""

    def runs(prefix: str, layers: list[int]) -> tuple[list[int], list[int]]:
        """Lengths and widths of the runs of AutoencoderTinyBlocks between convolutions."""
        counts: list[int] = []
        widths: list[int] = []
        previous_was_block = False
        for i in range(layers[0], layers[-1] + 1):
            key = f"{prefix}.{i}.conv.0.weight"
            if key in sd:  # an AutoencoderTinyBlock
                if not previous_was_block:
                    counts.append(0)
                    widths.append(_shape(sd, key)[0])
                counts[-1] += 1
                previous_was_block = True
            elif f"{prefix}.{i}.weight" in sd:  # a convolution ends a run
                previous_was_block = False
        return counts, widths

    enc_layers = _indices(sd, r"encoder\.layers\.(\d+)\.")
    enc_counts, enc_widths = runs("encoder.layers", enc_layers)
    config: dict[str, Any] = {
        "_class_name": "AutoencoderTiny",
        "latent_channels": _shape(sd, f"encoder.layers.{enc_layers[-1]}.weight")[0],
        "num_encoder_blocks": enc_counts,
        "encoder_block_out_channels": enc_widths,
    }
    dec_layers = _indices(sd, r"decoder\.layers\.(\d+)\.")
    if dec_layers:
        dec_counts, dec_widths = runs("decoder.layers", dec_layers)
        config["num_decoder_blocks"] = dec_counts
        config["decoder_block_out_channels"] = dec_widths
    else:
        config["num_decoder_blocks"] = enc_counts[::-1]
        config["decoder_block_out_channels"] = enc_widths[::-1]
    return config


def _load_state_dict_into(vae: nn.Module, sd: dict[str, Tensor], where: str) -> bool:
    """Load ``sd`` into ``vae``; an encoder-only file is accepted. Returns whether a decoder was loaded."""
    expected = vae.state_dict()
    sd = {k: v.to(expected[k].dtype) if k in expected else v for k, v in sd.items()}
    missing, unexpected = vae.load_state_dict(sd, strict=False)
    decoder_side = ("decoder.", "post_quant_conv.")
    if unexpected or any(not k.startswith(decoder_side) for k in missing):
        raise FixativeError(
            f"{where}: the weights do not match the inferred architecture "
            f"(missing {sorted(missing)[:6]}, unexpected {sorted(unexpected)[:6]}); "
            "put the model's config.json beside the file"
        )
    if missing:  # encoder-only file: drop the random decoder
        vae.decoder = None
        if getattr(vae, "post_quant_conv", None) is not None:
            vae.post_quant_conv = None
        return False
    return True


def load_checkpoint(path: Path, name: str) -> Encoder:
    """The encoder in one weights file: TAESD (with its ``*_decoder`` beside it), or a VAE in diffusers or LDM
    keys (a whole SD checkpoint's ``first_stage_model.*``), its config read beside it or guessed from the shapes."""
    sd = _read_weights(path)
    if sd and all(k.split(".", 1)[0].isdigit() for k in sd):
        encoder = taesd_from_state_dict(sd, str(path), kind="encoder")
        decoder = None
        if "_encoder" in path.name:
            dec_path = path.with_name(path.name.replace("_encoder", "_decoder"))
            if dec_path.is_file():
                decoder = taesd_from_state_dict(read_state_dict(dec_path), str(dec_path), kind="decoder")
                if decoder.latent_channels != encoder.latent_channels:
                    log.warning("%s does not match %s; decoding disabled", dec_path, path)
                    decoder = None
        assert isinstance(encoder, TAESDEncoder | TAESanaEncoder)
        assert decoder is None or isinstance(decoder, TAESDDecoder)
        return TAESDFileEncoder(encoder, name, str(path), decoder)

    beside = path.parent / "config.json"
    own = path.with_suffix(".json")
    cfg_file = own if own.is_file() else beside if beside.is_file() else None
    ldm = "encoder.down.0.block.0.conv1.weight" in sd
    try:
        if cfg_file is not None:
            config = read_config(cfg_file)
        elif "encoder.layers.0.weight" in sd:
            config = _tiny_config(sd)
        elif ldm or "encoder.down_blocks.0.resnets.0.conv1.weight" in sd:
            config = _kl_config(sd, ldm)
        else:
            raise ValueError(f"unrecognised keys (first: {list(sd)[:4]})")
    except (KeyError, ValueError, IndexError) as exc:
        raise FixativeError(f"{path} is not a recognised VAE or TAESD weights file: {exc}") from exc
    cls = vae_class(config, str(path))
    if ldm:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        extra = {k: v for k, v in sd.items() if k.startswith("bn.")}
        conv_cfg = {**config, "down_block_types": ["DownEncoderBlock2D"] * len(config["block_out_channels"])}
        conv_cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(
            config.get("decoder_block_out_channels") or config["block_out_channels"]
        )
        sd = {**convert_ldm_vae_checkpoint(sd, conv_cfg), **extra}
    init = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        vae = cls.from_config(init)
    except (TypeError, ValueError) as exc:
        raise FixativeError(f"{path}: cannot build {cls.__name__} from its config: {exc}") from exc
    _load_state_dict_into(vae, sd, str(path))
    return wrap_vae(vae.eval(), name, str(path))
