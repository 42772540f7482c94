"""Image encoders of diffusion models behind one interface, :class:`Encoder`.

An :class:`Encoder` maps images (NCHW float in [0, 1], any height and width) to the latent a
diffusion model would train on (NCHW float32). It is frozen (eval mode, no parameter gradients)
but differentiable with respect to its input, which is all the protection needs.

Supported models, and what ``forward`` returns:

* diffusers ``AutoencoderKL`` (SD 1.x/2.x, SDXL, SD3, FLUX.1 VAEs) and ``AutoencoderKLFlux2``
  (FLUX.2): input mapped to [-1, 1], latent = ``encode(x).latent_dist.mean`` (the mean, not a
  sample), raw (no ``scaling_factor`` / ``shift_factor``; for FLUX.2 before the 2x2 patchify and
  BatchNorm normalisation the pipeline applies). The decoder never runs during protection.
* diffusers ``AutoencoderTiny`` (``madebyollin/taesd`` ...): its ``encode`` expects [-1, 1] (it maps
  back to [0, 1] internally); latent = ``encode(x).latents``, raw.
* TAESD-format ``.pth`` files (taesd, taesdxl, taesd3, taef1, taef2, taesana), see
  :mod:`fixative.models.taesd`: input [0, 1] as is.

Specs accepted by :func:`load_encoder`, tried in this order:

1. an existing path: a ``.pth``/``.pt``/``.ckpt``/``.bin``/``.safetensors`` file (TAESD, diffusers
   or original LDM keys, a whole SD checkpoint's ``first_stage_model.*``), a diffusers VAE folder
   (``config.json``) or a pipeline folder (``vae/config.json``). Short names are reserved words:
   write ``./taesd`` for a folder of that name in the working directory;
2. a short name from :data:`SHORT_NAMES` (``taef2``, ``sdxl``, ...): looked up in the model store's
   directories, then on the Hugging Face hub (cache only when offline);
3. a path relative to a model-store directory (``my-vae``, ``taesd/taef2_encoder.pth``);
4. a hub repo id (``org/name``): a VAE repo, or a pipeline repo whose ``vae/`` is used.

Anything else raises one :class:`ModelNotFoundError` that lists every place searched.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fixative.core.devices import resolve_device
from fixative.core.encoder import Encoder, pad_to_multiple
from fixative.errors import FixativeError, ModelNotFoundError
from fixative.models.store import ModelStore
from fixative.models.taesd import TAESanaEncoder, TAESDDecoder, TAESDEncoder, read_state_dict, taesd_from_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "SHORT_NAMES",
    "DiffusersKLEncoder",
    "DiffusersTinyEncoder",
    "Encoder",
    "ResolvedSpec",
    "ShortName",
    "TAESDFileEncoder",
    "encoder_from_path",
    "load_encoder",
    "load_encoders",
    "pad_to_multiple",
    "resolve_spec",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TAESD_GITHUB = "https://github.com/madebyollin/taesd"


class _DiffusersVAE(Encoder):
    """Shared part of the diffusers adapters: the wrapped ``vae``, input [0, 1] -> [-1, 1], decoding."""

    def __init__(self, vae: nn.Module, name: str, source: str, downsample: int) -> None:
        super().__init__(name, source, downsample, vae.config.latent_channels)
        self.vae = vae
        self._freeze()

    @property
    def can_decode(self) -> bool:
        return getattr(self.vae, "decoder", None) is not None

    def decode(self, latents: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if not self.can_decode:
            return super().decode(latents, size)
        out = self.vae.decode(latents.to(device=self.device, dtype=self.dtype)).sample
        return self._crop(((out.float() + 1) / 2).clamp(0, 1), size)


class DiffusersKLEncoder(_DiffusersVAE):
    """Adapter for diffusers ``AutoencoderKL`` and ``AutoencoderKLFlux2``.

    Input [0, 1] -> [-1, 1]; latent = ``latent_dist.mean`` (raw, no scaling). ``decode`` works when
    the decoder weights were loaded (``vae.decoder`` is not None).
    """

    def __init__(self, vae: nn.Module, name: str, source: str) -> None:
        super().__init__(vae, name, source, 2 ** (len(vae.config.block_out_channels) - 1))

    def encode_padded(self, x: Tensor) -> Tensor:
        return self.vae.encode(x * 2 - 1).latent_dist.mean


class DiffusersTinyEncoder(_DiffusersVAE):
    """Adapter for diffusers ``AutoencoderTiny``: input [0, 1] -> [-1, 1] (what its ``encode`` expects)."""

    def __init__(self, vae: nn.Module, name: str, source: str) -> None:
        super().__init__(vae, name, source, 2 ** (len(vae.config.num_encoder_blocks) - 1))

    def encode_padded(self, x: Tensor) -> Tensor:
        return self.vae.encode(x * 2 - 1).latents


class TAESDFileEncoder(Encoder):
    """Adapter for TAESD-format networks (:mod:`fixative.models.taesd`): input [0, 1] as is.

    ``decoder`` (optional) is the matching ``*_decoder.pth``; without one ``decode`` raises.
    """

    def __init__(
        self,
        encoder: TAESDEncoder | TAESanaEncoder,
        name: str,
        source: str,
        decoder: TAESDDecoder | None = None,
    ) -> None:
        super().__init__(name, source, encoder.downsample, encoder.latent_channels)
        self.encoder = encoder
        self.decoder = decoder
        self._freeze()

    @property
    def can_decode(self) -> bool:
        return self.decoder is not None

    def encode_padded(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, latents: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if self.decoder is None:
            return super().decode(latents, size)
        out = self.decoder(latents.to(device=self.device, dtype=self.dtype))
        return self._crop(out.float().clamp(0, 1), size)


# ---------------------------------------------------------------------------------------------
# short names


@dataclass(frozen=True)
class ShortName:
    """A short encoder name and where its weights are found.

    ``local``: file/folder names tried in each model-store directory (and its ``taesd/``,
    ``vae/`` ... subfolders); ``hub_repo``/``hub_subfolder``: the Hugging Face fallback (None when
    the hub has no loadable copy); ``latent_channels``/``downsample``: what the latent looks like;
    ``get``: how a user obtains the weights (for error messages).
    """

    name: str
    description: str
    local: tuple[str, ...]
    hub_repo: str | None
    hub_subfolder: str
    latent_channels: int
    downsample: int
    get: str


def _vae(name: str, description: str, repo: str, channels: int, note: str = "") -> ShortName:
    local = (name, f"{name}_vae", f"{name}_vae.safetensors", f"{name}.safetensors")
    get = (
        f"`fixative models fetch {name}`{note}; or `hf download {repo} --include 'vae/*'` (fills the Hugging Face "
        "cache, used automatically); "
        f"or copy its diffusers 'vae' folder (config.json + diffusion_pytorch_model.safetensors) to "
        f"<models dir>/{name}/, or a single-file VAE to <models dir>/{name}_vae.safetensors"
    )
    return ShortName(name, description, local, repo, "vae", channels, 8, get)


def _taesd(name: str, description: str, channels: int, repo: str | None, downsample: int = 8) -> ShortName:
    local = (f"{name}_encoder.pth", f"{name}_encoder.safetensors")
    get = f"`fixative models fetch {name}`; or download {name}_encoder.pth (and {name}_decoder.pth, for previews) "
    get += f"from {_TAESD_GITHUB} into "
    get += "<models dir>/taesd/"
    if repo:
        get += f"; or `hf download {repo}` (diffusers AutoencoderTiny; fills the Hugging Face cache)"
    return ShortName(name, description, local, repo, "", channels, downsample, get)


_GATED = " (gated: accept the licence on huggingface.co and `hf auth login` first)"

SHORT_NAMES: dict[str, ShortName] = {
    s.name: s
    for s in (
        _vae("sd15", "Stable Diffusion 1.x VAE (kl-f8)", "stable-diffusion-v1-5/stable-diffusion-v1-5", 4),
        _vae("sd21", "Stable Diffusion 2.x VAE (kl-f8)", "stabilityai/stable-diffusion-2-1", 4),
        _vae("sdxl", "SDXL VAE", "stabilityai/stable-diffusion-xl-base-1.0", 4),
        _vae(
            "sd3",
            "Stable Diffusion 3 / 3.5 VAE",
            "stabilityai/stable-diffusion-3-medium-diffusers",
            16,
            _GATED,
        ),
        _vae("flux1", "FLUX.1 VAE", "black-forest-labs/FLUX.1-schnell", 16),
        _vae("flux2", "FLUX.2 VAE (AutoencoderKLFlux2)", "black-forest-labs/FLUX.2-dev", 32, _GATED),
        _taesd("taesd", "Tiny AutoEncoder for SD 1.x/2.x", 4, "madebyollin/taesd"),
        _taesd("taesdxl", "Tiny AutoEncoder for SDXL", 4, "madebyollin/taesdxl"),
        _taesd("taesd3", "Tiny AutoEncoder for SD3", 16, "madebyollin/taesd3"),
        _taesd("taef1", "Tiny AutoEncoder for FLUX.1", 16, "madebyollin/taef1"),
        _taesd("taef2", "Tiny AutoEncoder for FLUX.2 (mid-block GroupNorm; .pth only)", 32, None),
        _taesd("taesana", "Tiny encoder for Sana's DC-AE f32c32 (32x; no decoder)", 32, None, 32),
    )
}
"""Short encoder names. Big VAEs come from pipeline repos' ``vae/`` subfolder; the taesd family
from ``<name>_encoder.pth`` files in the model store first, then (where one exists) the hub's
diffusers ``AutoencoderTiny`` repo. taef2 and taesana have no hub fallback (diffusers'
AutoencoderTiny lacks taef2's mid-block GroupNorm; taesana exists only as a .pth)."""


# ---------------------------------------------------------------------------------------------
# resolving a spec to a place


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec's weights are: a local path, or a hub repo (and subfolder)."""

    spec: str
    kind: Literal["path", "hub"]
    location: str  # absolute path, or hub repo id
    subfolder: str = ""  # hub only: "vae" for pipeline repos, "" for VAE repos

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the weights (two specs with the same key load the same model)."""
        return (self.kind, self.location, self.subfolder)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", "\\")) or spec.lower().endswith(WEIGHT_SUFFIXES)


def resolve_spec(spec: str, store: ModelStore | None = None) -> ResolvedSpec:
    """Find where ``spec``'s weights are, without loading them (see the module docs for the order).

    Raises :class:`ModelNotFoundError` naming what is missing, every place searched and how to
    get it.
    """
    store = store or ModelStore()
    spec = spec.strip()
    if not spec:
        raise ModelNotFoundError("an empty encoder name was given")
    short = SHORT_NAMES.get(spec.lower())
    path = Path(spec).expanduser()
    # short names are reserved words: a folder called "taesd" in the working directory is "./taesd"
    if path.exists() and short is None:
        return ResolvedSpec(spec, "path", str(path.resolve()))

    if short is not None:
        local = store.find_any(short.local)
        if local is not None:
            return ResolvedSpec(spec, "path", str(local.resolve()))
        detail = None
        if short.hub_repo is not None:
            cfg = store.hub_file(short.hub_repo, "config.json", subfolder=short.hub_subfolder or None)
            if cfg is not None:
                return ResolvedSpec(spec, "hub", short.hub_repo, short.hub_subfolder)
            detail = store.last_hub_error
        how = short.get.replace("<models dir>", str(store.suggested_dir()))
        raise store.not_found(
            f"{spec} ({short.description})",
            looked_for=short.local,
            hub_repo=short.hub_repo,
            how=how,
            detail=detail,
        )

    found = store.find(spec)
    if found is not None:
        return ResolvedSpec(spec, "path", str(found.resolve()))

    if _HUB_ID.match(spec) and not _looks_like_path(spec):
        hit = store.hub_model_folder(spec, ("vae", ""))
        if hit is not None:
            return ResolvedSpec(spec, "hub", spec, hit[0])
        raise store.not_found(
            spec,
            looked_for=(spec,),
            hub_repo=spec,
            how=(
                f"`hf download {spec}` (a diffusers VAE repo, or a pipeline repo with a vae/ folder), or "
                f"put the VAE folder/file in {store.suggested_dir()} and pass its path"
            ),
            detail=store.last_hub_error,
        )

    names = ", ".join(SHORT_NAMES)
    raise store.not_found(
        spec,
        looked_for=(spec,),
        how=(f"pass an existing file or folder, a Hugging Face repo id (org/name), or a short name: {names}"),
    )


# ---------------------------------------------------------------------------------------------
# building models from files and folders


def _diffusers_classes() -> dict[str, type]:
    from diffusers import AutoencoderKL, AutoencoderTiny

    classes: dict[str, type] = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}
    try:
        from diffusers import AutoencoderKLFlux2
    except ImportError:  # older diffusers
        pass
    else:
        classes["AutoencoderKLFlux2"] = AutoencoderKLFlux2
    return classes


def _wrap(vae: nn.Module, name: str, source: str) -> Encoder:
    if type(vae).__name__ == "AutoencoderTiny":
        return DiffusersTinyEncoder(vae, name, source)
    return DiffusersKLEncoder(vae, name, source)


def _class_for(config: dict[str, Any], where: str) -> type:
    classes = _diffusers_classes()
    cls_name = config.get("_class_name", "AutoencoderKL")
    if cls_name not in classes:
        raise FixativeError(f"{where}: unsupported model class {cls_name!r}; supported: {', '.join(sorted(classes))}")
    return classes[cls_name]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FixativeError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FixativeError(f"model config {path} is not a JSON object")
    return data


def _from_pretrained(
    where: str, subfolder: str, config: dict[str, Any], *, local_only: bool, cache_dir: Path | None
) -> nn.Module:
    cls = _class_for(config, where + (f"/{subfolder}" if subfolder else ""))
    try:
        return cls.from_pretrained(
            where,
            subfolder=subfolder or None,
            local_files_only=local_only,
            cache_dir=cache_dir,
            # without accelerate diffusers falls back anyway, with a long warning
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise FixativeError(
            f"cannot load {cls.__name__} from {where}{'/' + subfolder if subfolder else ''}: {exc}"
        ) from exc


def _load_folder(path: Path, name: str) -> Encoder:
    if (path / "config.json").is_file():
        sub = ""
    elif (path / "vae" / "config.json").is_file():
        sub = "vae"
    else:
        taesd = sorted(path.glob("*_encoder.pth"))
        if len(taesd) == 1:
            return _load_file(taesd[0], name)
        raise FixativeError(
            f"{path} is a folder without config.json or vae/config.json: not a diffusers VAE or pipeline folder"
        )
    config = _read_json(path / sub / "config.json")
    vae = _from_pretrained(str(path), sub, config, local_only=True, cache_dir=None)
    return _wrap(vae, name, str(path / sub) if sub else str(path))


# --- single files ----------------------------------------------------------------------------

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


def _load_file(path: Path, name: str) -> Encoder:
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
            config = _read_json(cfg_file)
        elif "encoder.layers.0.weight" in sd:
            config = _tiny_config(sd)
        elif ldm or "encoder.down_blocks.0.resnets.0.conv1.weight" in sd:
            config = _kl_config(sd, ldm)
        else:
            raise ValueError(f"unrecognised keys (first: {list(sd)[:4]})")
    except (KeyError, ValueError, IndexError) as exc:
        raise FixativeError(f"{path} is not a recognised VAE or TAESD weights file: {exc}") from exc
    cls = _class_for(config, str(path))
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
    return _wrap(vae.eval(), name, str(path))


def encoder_from_path(path: str | Path, name: str | None = None) -> Encoder:
    """Load an encoder from a local file or folder (see the module docs for the formats).

    ``name`` defaults to the path. Raises :class:`FixativeError` naming the path when it cannot be
    read or is not a supported model.
    """
    path = Path(path).expanduser()
    name = name or str(path)
    if path.is_dir():
        return _load_folder(path, name)
    if not path.is_file():
        raise ModelNotFoundError(f"encoder file {path} does not exist")
    return _load_file(path, name)


def _load_hub(resolved: ResolvedSpec, store: ModelStore) -> Encoder:
    cfg = store.hub_file(resolved.location, "config.json", subfolder=resolved.subfolder or None)
    if cfg is None:
        raise store.not_found(resolved.spec, hub_repo=resolved.location, detail=store.last_hub_error)
    vae = _from_pretrained(
        resolved.location,
        resolved.subfolder,
        _read_json(cfg),
        local_only=store.offline,
        cache_dir=store.hub_cache,
    )
    source = resolved.location + (f"/{resolved.subfolder}" if resolved.subfolder else "")
    return _wrap(vae, resolved.spec, source)


def _load_resolved(resolved: ResolvedSpec, store: ModelStore) -> Encoder:
    if resolved.kind == "path":
        return encoder_from_path(resolved.location, resolved.spec)
    return _load_hub(resolved, store)


def load_encoder(
    spec: str,
    *,
    store: ModelStore | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_decoder: bool = True,
) -> Encoder:
    """Load one encoder from ``spec`` (path, short name, store-relative path or hub id).

    ``device`` ("cpu", "cuda", "auto", ...; see :func:`fixative.core.devices.resolve_device`) and
    ``dtype``: where and in what precision the weights live (outputs are float32 anyway).
    ``keep_decoder=False`` frees the decoder's memory (then ``decode`` raises).
    Raises :class:`ModelNotFoundError` (listing every place searched) or :class:`FixativeError`.
    """
    store = store or ModelStore()
    resolved = resolve_spec(spec, store)
    log.info("encoder %r -> %s %s%s", spec, resolved.kind, resolved.location,
             f"/{resolved.subfolder}" if resolved.subfolder else "")  # fmt: skip
    return _finish(_load_resolved(resolved, store), device, dtype, keep_decoder)


def _finish(encoder: Encoder, device: str | torch.device, dtype: torch.dtype, keep_decoder: bool) -> Encoder:
    """Move to device/dtype, optionally drop the decoder, freeze."""
    if not keep_decoder:
        _drop_decoder(encoder)
    vae = getattr(encoder, "vae", None)
    if dtype == torch.float16 and getattr(getattr(vae, "config", None), "force_upcast", False):
        log.warning("%s: this VAE is known to overflow in float16; prefer float32 or bfloat16", encoder.name)
    encoder = encoder.to(device=resolve_device(device), dtype=dtype)
    encoder._freeze()
    return encoder


def _drop_decoder(encoder: Encoder) -> None:
    if isinstance(encoder, TAESDFileEncoder):
        encoder.decoder = None
    elif isinstance(encoder, DiffusersKLEncoder | DiffusersTinyEncoder):
        encoder.vae.decoder = None
        if getattr(encoder.vae, "post_quant_conv", None) is not None:
            encoder.vae.post_quant_conv = None


def load_encoders(
    specs: Sequence[str],
    *,
    store: ModelStore | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_decoder: bool = True,
) -> list[Encoder]:
    """Load several encoders, in order; specs naming the same weights are loaded once.

    All specs are resolved before any model loads, so a missing model fails fast.
    """
    store = store or ModelStore()
    resolved: list[ResolvedSpec] = []
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        r = resolve_spec(spec, store)
        if r.key not in seen:
            seen.add(r.key)
            resolved.append(r)
    return [_finish(_load_resolved(r, store), device, dtype, keep_decoder) for r in resolved]
