"""The :class:`~fixative.core.encoder.Encoder` adapters of loaded networks, and which diffusers class a config names.

* diffusers ``AutoencoderKL`` / ``AutoencoderKLFlux2``: input [0, 1] -> [-1, 1], latent = ``latent_dist.mean``;
* diffusers ``AutoencoderTiny``: input [0, 1] -> [-1, 1], latent = ``latents``;
* TAESD-format networks (:mod:`fixative.models.taesd`): input [0, 1] as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fixative.core.encoder import Encoder
from fixative.errors import FixativeError
from fixative.models.taesd import TAESanaEncoder, TAESDDecoder, TAESDEncoder


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


def _diffusers_classes() -> dict[str, type]:
    """The diffusers autoencoder classes this diffusers has, by class name."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    classes: dict[str, type] = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}
    try:
        from diffusers import AutoencoderKLFlux2
    except ImportError:  # older diffusers
        pass
    else:
        classes["AutoencoderKLFlux2"] = AutoencoderKLFlux2
    return classes


def wrap_vae(vae: nn.Module, name: str, source: str) -> Encoder:
    """The :class:`Encoder` adapter for a loaded diffusers VAE (``AutoencoderTiny`` or a KL autoencoder)."""
    if type(vae).__name__ == "AutoencoderTiny":
        return DiffusersTinyEncoder(vae, name, source)
    return DiffusersKLEncoder(vae, name, source)


def vae_class(config: dict[str, Any], where: str) -> type:
    """The diffusers class a VAE config names (``_class_name``; default ``AutoencoderKL``); ``where``: for errors."""
    classes = _diffusers_classes()
    cls_name = config.get("_class_name", "AutoencoderKL")
    if cls_name not in classes:
        raise FixativeError(f"{where}: unsupported model class {cls_name!r}; supported: {', '.join(sorted(classes))}")
    return classes[cls_name]


def read_config(path: Path) -> dict[str, Any]:
    """A model's ``config.json`` as a dict; :class:`FixativeError` naming the file when it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FixativeError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FixativeError(f"model config {path} is not a JSON object")
    return data
