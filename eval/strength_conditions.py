"""The countermeasure conditions of a strength evaluation, built from :class:`StrengthSettings`:
the simple ones (JPEG, down-up, noise, blur, a platform's pipeline), noisy upscaling (with the SD x4
upscaler where one is found) and IMPRESS purification (with an autoencoder that has a decoder)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from fixative import defaults
from fixative.core.perceptual import Perceptual
from fixative.errors import ConfigError, FixativeError
from fixative.eval.countermeasures import (
    Countermeasure,
    ImpressPurification,
    NoisyUpscale,
    default_countermeasures,
    load_sd_upscaler,
)
from fixative.eval.strength_types import StrengthSettings
from fixative.models.encoders import Encoder, load_encoders
from fixative.models.store import ModelStore

#: the autoencoder IMPRESS falls back to when no measured encoder decodes
FALLBACK_PURIFIER = defaults.DEFAULT_ENCODER


def build_countermeasures(settings: StrengthSettings, encoders: Sequence[Encoder], alex: Perceptual,
                          store: ModelStore, device: torch.device, notes: list[str]) -> list[Countermeasure]:
    """Every countermeasure ``settings`` asks for, in report order; what had to be skipped is
    appended to ``notes``."""
    upscaler = None
    if settings.upscaler != "classical":
        upscaler = load_sd_upscaler(None if settings.upscaler == "auto" else settings.upscaler, store, device)
    if upscaler is not None:
        noisy = NoisyUpscale(settings.noisy_upscale_sigma, upscaler[0], upscaler_name=upscaler[1])
    else:
        noisy = NoisyUpscale(settings.noisy_upscale_sigma)
    impress = None
    if settings.impress:
        purifier = pick_purifier(settings, encoders, store, device)
        if purifier is None:
            notes.append(f"IMPRESS skipped: no autoencoder with a decoder (give --purifier or add "
                         f"{FALLBACK_PURIFIER} with its {FALLBACK_PURIFIER}_decoder.pth)")
        else:
            impress = ImpressPurification(purifier, alex, replace(settings.impress_settings,
                                                                  tile=settings.tile_size))
    return default_countermeasures(
        jpeg_qualities=tuple(settings.jpeg_qualities), downup_factor=settings.downup_factor,
        noise_sigma=settings.noise_sigma, blur_sigma=settings.blur_sigma, noisy_upscale=noisy, impress=impress,
        platform=tuple(settings.platform) if settings.platform else None,
        noise_downup=tuple(settings.noise_downup) if settings.noise_downup else None,
    )


def pick_purifier(settings: StrengthSettings, encoders: Sequence[Encoder], store: ModelStore,
                  device: torch.device) -> Encoder | None:
    """IMPRESS's autoencoder: ``settings.purifier`` (it must decode), else the first measured encoder
    that decodes, else :data:`FALLBACK_PURIFIER` when it is in the store with a decoder, else None."""
    if settings.purifier:
        (enc,) = load_encoders([settings.purifier], store=store, device=device)
        if not enc.can_decode:
            raise ConfigError(f"--purifier {settings.purifier}: this autoencoder has no decoder")
        return enc
    for enc in encoders:
        if enc.can_decode:
            return enc
    try:
        (enc,) = load_encoders([FALLBACK_PURIFIER], store=store, device=device)
    except FixativeError:
        return None
    return enc if enc.can_decode else None
