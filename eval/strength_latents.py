"""Latent-side measurements of the strength evaluation: encoding and decoding large images in cells,
the efficacy of a protection in one encoder (distance ratio to a target, or the latent shift), and the
feature vectors the poison detectors read (pooled latents, quadrant crops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.eval.strength_types import EncoderEfficacy
from fixative.models.encoders import Encoder


def norm(t: Tensor) -> float:
    """The L2 norm of a tensor, in float64."""
    return float(t.double().pow(2).sum().sqrt())


def encode_tiled(encoder: Encoder, images: Tensor, tile: int) -> Tensor:
    """``encoder(images)``, in non-overlapping cells of ``tile`` px (a multiple of the encoder's
    downsampling) when the image is larger, the cells' latents laid side by side. Keeps memory
    bounded on large images; the seams are those of a tiled protection's measurement."""
    h, w = images.shape[-2:]
    if max(h, w) <= tile:
        return encoder(images)
    ds = int(getattr(encoder, "downsample", 8))
    tile = max(ds, tile // ds * ds)
    rows = [torch.cat([encoder(images[..., top : top + tile, left : left + tile]) for left in range(0, w, tile)],
                      dim=-1) for top in range(0, h, tile)]
    return torch.cat(rows, dim=-2)


def decode_tiled(encoder: Encoder, latents: Tensor, size: tuple[int, int], tile: int) -> Tensor:
    """``encoder.decode(latents, size)``, in latent cells matching :func:`encode_tiled`'s pixel cells."""
    if max(size) <= tile:
        return encoder.decode(latents, size)
    ds = int(getattr(encoder, "downsample", 8))
    cell = max(1, tile // ds)
    h, w = latents.shape[-2:]
    rows = [torch.cat([encoder.decode(latents[..., top : top + cell, left : left + cell]).float()
                       for left in range(0, w, cell)], dim=-1) for top in range(0, h, cell)]
    return torch.cat(rows, dim=-2)[..., : size[0], : size[1]]


def pooled_views(latent: Tensor, grid: int = 4) -> Tensor:
    """Feature vectors of a latent for the detectors: the whole latent and its four quadrants, each
    average-pooled to ``grid`` x ``grid`` and flattened: (1, C, h, w) -> (5, C * grid * grid)."""
    z = latent.float()
    h, w = z.shape[-2:]
    views = [z]
    if h >= 2 and w >= 2:
        hh, hw = h // 2, w // 2
        views += [z[..., :hh, :hw], z[..., :hh, hw:], z[..., hh:, :hw], z[..., hh:, hw:]]
    return torch.cat([F.adaptive_avg_pool2d(v, grid).flatten(1) for v in views]).cpu()


def quadrant_crops(image: Tensor) -> list[Tensor]:
    """The whole image and its four quadrants (for classifier features)."""
    h, w = image.shape[-2:]
    if h < 2 or w < 2:
        return [image]
    hh, hw = h // 2, w // 2
    return [image, image[..., :hh, :hw], image[..., :hh, hw:], image[..., hh:, :hw], image[..., hh:, hw:]]




def latent_efficacy(enc: Encoder, clean: Tensor, prot: Tensor, target_latent: Tensor | None, tile: int,
                    device: torch.device) -> tuple[EncoderEfficacy, Tensor, Tensor]:
    """Efficacy in one encoder of ``prot`` against ``clean`` (each (1,3,H,W) in [0,1]): with a target
    latent, the distance ratio to it; without, the latent shift relative to the clean latent's norm.
    Returns (efficacy, clean latent, protected latent)."""
    z = encode_tiled(enc, torch.cat([clean, prot]).to(device), tile).float()
    z0, z1 = z[:1], z[1:]
    if target_latent is not None:
        d0, d1 = norm(z0 - target_latent), norm(z1 - target_latent)
        ratio = d1 / d0 if d0 > 0 else 1.0
        return EncoderEfficacy(d0, d1, ratio, 1.0 - ratio), z0, z1
    base, shift = norm(z0), norm(z1 - z0)
    return EncoderEfficacy(base, shift, None, shift / base if base > 0 else 0.0), z0, z1
