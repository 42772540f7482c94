"""The encoder interface of the core: a frozen, differentiable image encoder (an ABC on ``nn.Module``).

The concrete encoders (TAESD files, diffusers VAEs) and their loading live in :mod:`fixative.models.encoders`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fixative.errors import FixativeError


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Pad ``images`` (N,C,H,W) at the bottom and right up to multiples of ``multiple`` pixels.

    Reflection padding (no new edge), repeated when the pad exceeds the image (tiny inputs), and
    replication for 1-pixel-wide inputs. Differentiable; returns the input unchanged when H and W
    already are multiples.
    """
    if multiple <= 1:
        return images
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    x = images
    while pad_h or pad_w:
        cur_h, cur_w = x.shape[-2:]
        step_h, step_w = min(pad_h, cur_h - 1), min(pad_w, cur_w - 1)
        if (pad_h and step_h <= 0) or (pad_w and step_w <= 0):
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


class Encoder(nn.Module):
    """A frozen, differentiable image encoder: [0, 1] images of any size -> float32 latents.

    Attributes:
        name: the spec it was loaded from (``"taef2"``, a path, a hub id).
        source: where the weights came from (absolute path, or ``repo_id[/subfolder]``).
        downsample: spatial factor between image and latent (8, or 32 for taesana).
        latent_channels: channels of the latent.
        can_decode: whether :meth:`decode` works (a decoder was loaded).

    ``forward(images)``: images NCHW, float in [0, 1], any H and W, on any device (moved to the
    encoder's device and dtype). H and W are reflect-padded at the bottom/right up to multiples of
    ``downsample``, so the latent is ``ceil(H / downsample) x ceil(W / downsample)``. Works under
    ``torch.autocast`` and with channels_last inputs; always returns float32.

    The module stays in eval mode: ``train()`` is a no-op, so wrapping modules cannot switch it.
    """

    def __init__(self, name: str, source: str, downsample: int, latent_channels: int) -> None:
        super().__init__()
        self.name = name
        self.source = source
        self.downsample = int(downsample)
        self.latent_channels = int(latent_channels)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Encoder:
        """Kept in eval mode whatever ``mode`` says (frozen encoders have no training behaviour)."""
        return super().train(False)

    def _param(self) -> Tensor | None:
        return next(iter(self.parameters()), None)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        p = self._param()
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        p = self._param()
        return p.dtype if p is not None else torch.float32

    @property
    def can_decode(self) -> bool:
        return False

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = images.to(device=self.device, dtype=self.dtype)
        x = pad_to_multiple(x, self.downsample)
        return self.encode_padded(x).float()

    def encode_padded(self, x: Tensor) -> Tensor:
        """Encode images in [0, 1] whose H and W are multiples of ``downsample`` (adapter-specific)."""
        raise NotImplementedError

    def decode(self, latents: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Decode latents to images in [0, 1] (float32, clamped), for previews.

        ``size`` = (H, W) crops the result to the original image size. Raises
        :class:`FixativeError` when the encoder has no decoder (check :attr:`can_decode`). Runs
        with gradients if they are enabled; wrap in ``torch.no_grad()`` for previews.
        """
        raise FixativeError(f"encoder {self.name!r} has no decoder, so it cannot decode latents")

    @staticmethod
    def _crop(images: Tensor, size: tuple[int, int] | None) -> Tensor:
        return images if size is None else images[..., : size[0], : size[1]]

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, downsample={self.downsample}, latent_channels={self.latent_channels}, "
            f"can_decode={self.can_decode}"
        )
