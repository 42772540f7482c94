"""Countermeasures a mimic might apply to scraped images before training, to test robustness.

Each countermeasure maps a batch of images (NCHW float in [0, 1]) to a batch of the same size,
and returns 8-bit-quantised pixels (what would be saved and trained on). Random ones take a
``seed`` and draw *one* noise field that every image of the batch receives, so the clean and
protected versions of a picture are compared under identical noise (a paired measurement).
They follow the core's contract (:class:`fixative.core.countermeasures.Countermeasure`): the seeded draw
(``generate_parameters``) is apart from the application (``apply_transform``), on the core's resize, blur
and down-up transforms (:mod:`fixative.core.transforms`).

- :class:`Jpeg`: re-encode with PIL at a quality (4:2:0 chroma subsampling, PIL's default).
- :class:`DownUp`: downscale (antialiased bicubic) and upscale back (bicubic).
- :class:`GaussianNoise`: add N(0, sigma^2) per pixel and channel.
- :class:`GaussianBlur`: Gaussian blur of a given sigma (pixels).
- :class:`NoiseDownUp`: Gaussian noise, then downscale and upscale back (a mimic's cheap cleaning).
- :class:`Platform`: what a platform does to an upload: downscale so the longer side is at most
  ``long_side`` (never upscale), JPEG at ``quality`` (4:2:0), then scaled back up to the original
  size so it can be compared with the clean image's latent (default 2048 px, quality 85).
- :class:`NoisyUpscale`: Hoenig et al. (2024)'s "noisy upscaling": downscale by the upscaler's
  factor, add Gaussian noise, upscale back. With the Stable Diffusion x4 upscaler when one is
  given (:func:`load_sd_upscaler`), else a classical bicubic upscale; :attr:`NoisyUpscale.method`
  says which ran.
- :class:`ImpressPurification`: IMPRESS (Cao et al. 2023): optimise the image so that it is
  consistent under an autoencoder's encode-decode, ``||x - D(E(x))||^2``, while staying within an
  LPIPS bound of the input (penalty during the search, then scaled back until the bound holds).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fixative.core.constraints import LpipsBudget, quantize
from fixative.core.countermeasures import Countermeasure as CoreCountermeasure
from fixative.core.countermeasures import Params
from fixative.core.encoder import Encoder
from fixative.core.perceptual import Perceptual
from fixative.core.transforms import down_up, gaussian_blur, resize
from fixative.errors import ConfigError
from fixative.eval.names import short_name
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

SD_UPSCALER_REPO = "stabilityai/stable-diffusion-x4-upscaler"
SD_UPSCALER_LOCAL = ("sd-x4-upscaler", "stable-diffusion-x4-upscaler", "sd_x4_upscaler")


class Countermeasure(CoreCountermeasure):
    """An evaluation countermeasure, on the core's contract (:class:`fixative.core.countermeasures.Countermeasure`):
    ``name`` (a short key), ``label`` (for people); ``apply(images, seed)`` draws its parameters from a
    generator seeded with ``seed`` (one draw for the whole batch: a paired measurement) and applies them."""

    name: str = "countermeasure"
    label: str = "countermeasure"

    def apply(self, images: Tensor, seed: int = 0) -> Tensor:
        """``images`` (NCHW in [0,1]) after the countermeasure, 8-bit quantised; ``seed`` fixes its randomness."""
        params = self.generate_parameters(images.shape, torch.Generator().manual_seed(int(seed)))
        return self.apply_transform(images, params)

    def __call__(self, images: Tensor, seed: int = 0) -> Tensor:
        return self.apply(images, seed)

    def describe(self) -> dict:
        """JSON-ready name, label and parameters."""
        params = {k: v for k, v in vars(self).items() if isinstance(v, int | float | str | bool) and k != "label"}
        return {"name": self.name, "label": self.label, **params}


def _noise_field(shape: Sequence[int], sigma: float, generator: torch.Generator) -> Tensor:
    """One N(0, sigma^2) field of shape 1xCxHxW for images of ``shape`` (shared by the batch), on the CPU."""
    return torch.randn((1, *shape[1:]), generator=generator) * sigma


def _add(images: Tensor, noise: Tensor) -> Tensor:
    return images + noise.to(images.device, images.dtype)


def _smaller(shape: Sequence[int], factor: float) -> tuple[int, int]:
    """The size of images of ``shape`` scaled by ``factor``, at least 1 px a side."""
    h, w = shape[-2:]
    return max(1, round(h * factor)), max(1, round(w * factor))


class Jpeg(Countermeasure):
    def __init__(self, quality: int):
        if not 1 <= quality <= 100:
            raise ConfigError(f"JPEG quality must be 1-100, got {quality}")
        self.quality = int(quality)
        self.name = f"jpeg{self.quality}"
        self.label = f"JPEG quality {self.quality}"

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        out = []
        for img in images:
            arr = (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=self.quality)
            buf.seek(0)
            back = np.asarray(Image.open(buf).convert("RGB")).astype(np.float32) / 255.0
            out.append(torch.from_numpy(back).permute(2, 0, 1))
        return torch.stack(out).to(images.device, images.dtype)


class DownUp(Countermeasure):
    def __init__(self, factor: float = 0.5):
        if not 0 < factor < 1:
            raise ConfigError(f"the downscale factor must be in (0, 1), got {factor}")
        self.factor = float(factor)
        self.name = f"downup{self.factor:g}"
        self.label = f"downscale x{self.factor:g}, upscale back (bicubic)"

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return quantize(down_up(images, self.factor))


class GaussianNoise(Countermeasure):
    def __init__(self, sigma: float = 0.03):
        self.sigma = float(sigma)
        self.name = f"noise{self.sigma:g}"
        self.label = f"Gaussian noise, sigma {self.sigma:g} ({self.sigma * 255:.0f}/255)"

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        return {"noise": _noise_field(shape, self.sigma, generator)}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return quantize(_add(images, params["noise"]))


class GaussianBlur(Countermeasure):
    def __init__(self, sigma: float = 1.0):
        self.sigma = float(sigma)
        self.name = f"blur{self.sigma:g}"
        self.label = f"Gaussian blur, sigma {self.sigma:g} px"

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return quantize(gaussian_blur(images, self.sigma))


class NoiseDownUp(Countermeasure):
    """Gaussian noise of ``sigma`` (0-1 units), then downscale by ``factor`` and upscale back (bicubic)."""

    def __init__(self, sigma: float = 0.05, factor: float = 0.5):
        if not 0 < factor < 1:
            raise ConfigError(f"the downscale factor must be in (0, 1), got {factor}")
        self.sigma = float(sigma)
        self.factor = float(factor)
        self.name = f"noise{self.sigma:g}_downup{self.factor:g}"
        self.label = f"Gaussian noise sigma {self.sigma:g}, then downscale x{self.factor:g} and back"

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        return {"noise": _noise_field(shape, self.sigma, generator)}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return quantize(down_up(_add(images, params["noise"]).clamp(0, 1), self.factor))


class Platform(Countermeasure):
    """A platform's upload pipeline: downscale to ``long_side`` px (if larger), JPEG at ``quality``.

    The result is scaled back to the input size (bicubic) so that its latent can be compared with
    the clean image's; images already within ``long_side`` are only re-encoded.
    """

    def __init__(self, long_side: int = 2048, quality: int = 85, name: str | None = None):
        if long_side < 16:
            raise ConfigError(f"the platform's long side must be at least 16 px, got {long_side}")
        self.long_side = int(long_side)
        self.jpeg = Jpeg(quality)
        self.quality = self.jpeg.quality
        self.name = name or f"platform{self.long_side}q{self.quality}"
        self.label = f"platform: longer side to {self.long_side} px, JPEG quality {self.quality} (4:2:0)"

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        h, w = images.shape[-2:]
        scale = self.long_side / max(h, w)
        if scale >= 1:
            return self.jpeg.apply_transform(images, params)
        posted = self.jpeg.apply_transform(quantize(resize(images, _smaller(images.shape, scale))), params)
        return quantize(resize(posted, (h, w)))


Upscaler = Callable[[Tensor, int], Tensor]
"""``upscaler(low_res_images, seed) -> images at 4x the size``, both NCHW in [0, 1]."""


class NoisyUpscale(Countermeasure):
    """Downscale by ``factor``, add Gaussian noise, upscale back to the input size.

    ``upscaler``: a learned x4 upscaler (see :func:`load_sd_upscaler`), or None for the classical
    fallback (bicubic, ``factor`` 2). :attr:`method` names what ran.
    """

    def __init__(self, sigma: float = 0.05, upscaler: Upscaler | None = None, factor: int | None = None,
                 upscaler_name: str = ""):
        self.sigma = float(sigma)
        self.upscaler = upscaler
        self.factor = int(factor or (4 if upscaler is not None else 2))
        self.method = (f"Stable Diffusion x4 upscaler ({upscaler_name})" if upscaler is not None
                       else "classical: bicubic upscale (no SD x4 upscaler available)")
        self.name = "noisy_upscale"
        self.label = f"noisy upscaling: down x{self.factor}, noise sigma {self.sigma:g}, " + (
            "SD x4 upscaler" if upscaler is not None else "bicubic upscale")

    def _low(self, shape: Sequence[int]) -> tuple[int, int]:
        h, w = shape[-2:]
        return max(1, round(h / self.factor)), max(1, round(w / self.factor))

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        """The noise field at the low resolution, and the upscaler's seed (that of ``generator``)."""
        small = self._low(shape)
        return {"noise": _noise_field((1, shape[1], *small), self.sigma, generator), "seed": generator.initial_seed()}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        h, w = images.shape[-2:]
        low = _add(resize(images, self._low(images.shape)), params["noise"]).clamp(0, 1)
        if self.upscaler is None:
            up = resize(low, (h, w))
        else:
            up = torch.cat([self.upscaler(img[None], params["seed"]) for img in low]).to(images.device, images.dtype)
            if tuple(up.shape[-2:]) != (h, w):
                up = resize(up, (h, w))
        return quantize(up)

    def describe(self) -> dict:
        return {**super().describe(), "method": self.method}


def load_sd_upscaler(
    spec: str | None, store: ModelStore, device: torch.device | str = "cpu", steps: int = 20, noise_level: int = 20
) -> tuple[Upscaler, str] | None:
    """The Stable Diffusion x4 upscaler as an :data:`Upscaler`, or None when it cannot be had.

    ``spec``: a pipeline folder or hub id; None looks for a folder named ``sd-x4-upscaler`` (or
    ``stable-diffusion-x4-upscaler``) in the model store, then the Hugging Face cache (never the
    network). Returns (upscaler, where it came from).
    """
    try:
        from diffusers import StableDiffusionUpscalePipeline
    except ImportError:  # pragma: no cover - diffusers is a core dependency
        return None
    source: str | None = None
    local_only = True
    if spec:
        given = Path(spec).expanduser()
        found = given if given.exists() else store.find(spec)
        source = str(found) if found is not None else spec
        local_only = found is not None or store.offline
    else:
        found = store.find_any(SD_UPSCALER_LOCAL)
        if found is not None:
            source = str(found)
        else:
            try:
                from huggingface_hub import try_to_load_from_cache

                hit = try_to_load_from_cache(SD_UPSCALER_REPO, "model_index.json", cache_dir=store.hub_cache)
            except Exception:  # pragma: no cover - no usable cache
                hit = None
            if not isinstance(hit, str):
                return None
            cfg = Path(hit)
            source = str(cfg.parent)
    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:
        if spec:
            raise ConfigError(f"could not load the SD x4 upscaler from {spec!r}: {exc}") from exc
        log.info("SD x4 upscaler at %s could not be loaded (%s); using the classical fallback", source, exc)
        return None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return wrap_sd_upscaler(pipe, steps=steps, noise_level=noise_level), source


def wrap_sd_upscaler(pipe, steps: int = 20, noise_level: int = 20, prompt: str = "") -> Upscaler:
    """Turn a diffusers ``StableDiffusionUpscalePipeline`` into an :data:`Upscaler`."""

    def upscale(low: Tensor, seed: int) -> Tensor:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.no_grad():
            out = pipe(prompt=[prompt] * low.shape[0], image=low, num_inference_steps=steps,
                       noise_level=noise_level, generator=g, output_type="pt", guidance_scale=0.0).images
        out = out if isinstance(out, Tensor) else torch.as_tensor(np.asarray(out))
        return out.float().clamp(0, 1)

    return upscale


@dataclass
class ImpressSettings:
    """IMPRESS purification: ``budget`` (LPIPS alex of the result against the input), ``steps``
    of Adam at ``lr`` (pixel units), penalty weight ``alpha`` on LPIPS above the budget; images
    larger than ``tile`` px are purified in independent cells of that size."""

    budget: float = 0.05
    steps: int = 30
    lr: float = 0.005
    alpha: float = 50.0
    tile: int = 1024


class ImpressPurification(Countermeasure):
    """Make an image consistent under encode-decode of ``autoencoder``, within an LPIPS bound."""

    def __init__(self, autoencoder: Encoder, perceptual: Perceptual, settings: ImpressSettings | None = None):
        if not autoencoder.can_decode:
            raise ConfigError(f"IMPRESS needs an autoencoder with a decoder; {autoencoder.name!r} has none")
        self.autoencoder = autoencoder
        self.perceptual = perceptual
        self.settings = settings or ImpressSettings()
        self.budget = self.settings.budget
        self.steps = self.settings.steps
        self.lr = self.settings.lr
        self.alpha = self.settings.alpha
        self.purifier = autoencoder.name
        self.name = "impress"
        self.label = (f"IMPRESS purification ({short_name(autoencoder.name)}, LPIPS <= {self.budget:g}, "
                      f"{self.steps} steps)")

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        h, w = images.shape[-2:]
        tile = max(32, self.settings.tile)  # LPIPS needs cells of some size
        if max(h, w) <= tile:
            return self._purify(images)

        def starts(length: int) -> list[int]:  # full-size cells; the last one ends at the border
            return sorted({*range(0, max(1, length - tile + 1), tile), max(0, length - tile)})

        out = images.clone()
        for top in starts(h):
            for left in starts(w):
                out[..., top : top + tile, left : left + tile] = self._purify(
                    images[..., top : top + tile, left : left + tile])
        return out

    def _purify(self, images: Tensor) -> Tensor:
        s = self.settings
        device = self.autoencoder.device
        source = images.detach().to(device, torch.float32)
        budget = LpipsBudget(self.perceptual, source, s.budget)
        x = source.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=s.lr)
        size = tuple(source.shape[-2:])
        for _ in range(s.steps):
            opt.zero_grad(set_to_none=True)
            recon = self.autoencoder.decode(self.autoencoder(x), size)
            consistency = ((x - recon) ** 2).flatten(1).mean(dim=1)
            over = (budget.value(x) - s.budget).clamp_min(0)
            (consistency + s.alpha * over).sum().backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        out = []
        with torch.no_grad():
            for i in range(source.shape[0]):
                one = LpipsBudget(self.perceptual, source[i : i + 1], s.budget)
                delta, _, _ = one.scale_back(x[i : i + 1].detach() - source[i : i + 1], levels=255, iters=8)
                out.append(quantize(source[i : i + 1] + delta))
        return torch.cat(out).to(images.device, images.dtype)


def default_countermeasures(
    *,
    jpeg_qualities: tuple[int, ...] = (95, 85, 75, 50),
    downup_factor: float = 0.5,
    noise_sigma: float = 0.03,
    blur_sigma: float = 1.0,
    noisy_upscale: NoisyUpscale | None = None,
    impress: ImpressPurification | None = None,
    platform: tuple[int, int] | None = None,
    noise_downup: tuple[float, float] | None = None,
) -> list[Countermeasure]:
    """The standard set, in the report's order (IMPRESS only when a purifier is given).

    ``platform``: (long side px, JPEG quality) of a platform pipeline to add (:class:`Platform`);
    ``noise_downup``: (sigma, factor) of a noise-then-down-up to add (:class:`NoiseDownUp`)."""
    cms: list[Countermeasure] = [Jpeg(q) for q in jpeg_qualities]
    cms += [DownUp(downup_factor), GaussianNoise(noise_sigma), GaussianBlur(blur_sigma)]
    if noise_downup is not None:
        cms.append(NoiseDownUp(*noise_downup))
    if platform is not None:
        cms.append(Platform(*platform))
    cms.append(noisy_upscale or NoisyUpscale())
    if impress is not None:
        cms.append(impress)
    return cms

