"""Robust protection: differentiable countermeasures for expectation over transformation (EOT).

A protection that dies at the first re-encode protects nobody. With robust protection on, the
optimizer passes the protected image through a randomly drawn chain of countermeasures before
the encoders at every step, and averages the objective over ``samples`` such draws, so the
perturbation it finds moves the encoders' view *after* what platforms and mimics do to images.
LPIPS (the budget) is always measured on the untransformed image.

The countermeasures, applied in this order, each with its own probability and range:

- ``shift``: a circular shift by up to ``shift_max`` px (crops move the encoders' 8-px grid);
  geometric, so the reference (target or original) is shifted the same way (see :class:`Draw`);
- ``blur``: Gaussian blur, sigma in px;
- ``noise``: additive Gaussian noise, sigma in [0,1] pixel units;
- ``resize``: downscale by a factor and upscale back (bicubic, antialiased downscale);
- ``jpeg``: differentiable JPEG (:func:`jpeg`): YCbCr, 4:2:0 chroma subsampling, 8x8 DCT and the
  IJG quantisation tables at a quality, exact rounding in the forward pass with a straight-through
  gradient; the result is rounded to 8 bits like a decoded file;
- ``vae``: an encode-decode pass through an autoencoder (the first encoder that can decode).

Presets (``--robust``): ``off`` (no EOT), ``web`` (what platforms do: JPEG 50-95, resizing,
light noise and blur, small shifts) and ``strong`` (more samples per step and stronger noise,
blur and resizing, plus the encode-decode pass). :func:`settings_for` turns a name into
:class:`RobustSettings`; :mod:`fixative.batch.platforms` tunes the JPEG and resize parts to a platform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from fixative.core.jpeg import jpeg, quant_table, quantize_ste, round_ste  # noqa: F401 (re-exported)
from fixative.core.transforms import down_up, gaussian_blur, resize  # noqa: F401 (re-exported)
from fixative.defaults import DEFAULT_ROBUST, ROBUST_LEVELS  # noqa: F401 (re-exported)
from fixative.errors import ConfigError


@dataclass(frozen=True)
class RobustSettings:
    """Which countermeasures the optimizer averages over, how likely each is, and their ranges.

    Probabilities are in [0, 1] and drawn independently per sample; ranges are (low, high),
    drawn uniformly. ``samples``: draws per optimisation step (each costs one encoder forward
    and backward). ``name`` labels the mix in records.

    - ``jpeg_prob``, ``jpeg_quality`` (1-100), ``jpeg_subsampling`` (True = 4:2:0, False = 4:4:4);
    - ``resize_prob``, ``resize_factor``: downscale factor in (0, 1], upscale back;
    - ``noise_prob``, ``noise_sigma``: Gaussian noise in [0,1] pixel units (0.05 = 13/255);
    - ``blur_prob``, ``blur_sigma``: Gaussian blur sigma in px;
    - ``shift_prob``, ``shift_max``: circular shift of up to this many px in each direction;
    - ``vae_prob``: encode-decode through the first encoder with a decoder (skipped without one).
    """

    name: str = "custom"
    samples: int = 1
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (50, 95)
    jpeg_subsampling: bool = True
    resize_prob: float = 0.0
    resize_factor: tuple[float, float] = (0.5, 0.9)
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (0.0, 0.05)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    shift_prob: float = 0.0
    shift_max: int = 4
    vae_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"robust samples per step must be at least 1, got {self.samples}")
        for key in ("jpeg_prob", "resize_prob", "noise_prob", "blur_prob", "shift_prob", "vae_prob"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ConfigError(f"robust {key} must be in [0, 1], got {value}")
        ranges = {"jpeg_quality": (1, 100), "resize_factor": (0.05, 1.0), "noise_sigma": (0.0, 1.0),
                  "blur_sigma": (0.0, 20.0)}
        for key, (lo, hi) in ranges.items():
            a, b = getattr(self, key)
            if not lo <= a <= b <= hi:
                raise ConfigError(f"robust {key} must be a range (low, high) within [{lo}, {hi}], got {(a, b)}")
        if self.shift_max < 0:
            raise ConfigError(f"robust shift_max must be >= 0 px, got {self.shift_max}")

    @property
    def active(self) -> bool:
        """True when at least one countermeasure can be drawn."""
        return any(getattr(self, k) > 0 for k in
                   ("jpeg_prob", "resize_prob", "noise_prob", "blur_prob", "shift_prob", "vae_prob"))

    def describe(self) -> dict:
        """JSON-ready fields (for records and the settings hash)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: the presets, as data
PRESETS: dict[str, RobustSettings] = {
    "web": RobustSettings(
        name="web", samples=1,
        jpeg_prob=0.8, jpeg_quality=(50, 95),
        resize_prob=0.4, resize_factor=(0.45, 0.9),
        noise_prob=0.3, noise_sigma=(0.0, 0.05),
        blur_prob=0.15, blur_sigma=(0.3, 1.2),
        shift_prob=0.25, shift_max=4,
    ),
    "strong": RobustSettings(
        name="strong", samples=2,
        jpeg_prob=0.8, jpeg_quality=(40, 95),
        resize_prob=0.6, resize_factor=(0.35, 0.9),
        noise_prob=0.5, noise_sigma=(0.0, 0.08),
        blur_prob=0.3, blur_sigma=(0.3, 2.0),
        shift_prob=0.4, shift_max=8,
        vae_prob=0.15,
    ),
}


def settings_for(level: str | RobustSettings | None) -> RobustSettings | None:
    """``"off"``/None -> None; ``"web"``/``"strong"`` -> the preset; a :class:`RobustSettings` as is."""
    if level is None or isinstance(level, RobustSettings):
        return level if level is None or level.active else None
    if level == "off":
        return None
    if level not in PRESETS:
        raise ConfigError(f"unknown robust level {level!r}; choose one of {', '.join(ROBUST_LEVELS)}")
    return PRESETS[level]


# --- drawing a chain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draw:
    """One drawn chain of countermeasures with its parameters (None = that step is skipped).

    ``shift`` is geometric: the reference image the objective compares with (the target, or the
    original for "away") must be shifted the same way, see :meth:`geometry`.
    """

    shift: tuple[int, int] | None = None
    blur: float | None = None
    noise: float | None = None
    noise_seed: int = 0
    resize: float | None = None
    jpeg: int | None = None
    subsampling: bool = True
    vae: bool = False

    @property
    def identity(self) -> bool:
        return all(v is None for v in (self.shift, self.blur, self.noise, self.resize, self.jpeg)) and not self.vae

    def geometry(self, images: Tensor) -> Tensor:
        """Only the geometric part (the shift): what the reference goes through."""
        if self.shift is None:
            return images
        return torch.roll(images, shifts=self.shift, dims=(-2, -1))

    def apply(self, images: Tensor, autoencoder: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """The whole chain on [0,1] images; differentiable. ``autoencoder``: x -> D(E(x)) for ``vae``."""
        x = self.geometry(images)
        if self.blur is not None:
            x = gaussian_blur(x, self.blur)
        if self.noise is not None:
            g = torch.Generator().manual_seed(self.noise_seed)
            x = x + (torch.randn(x.shape, generator=g) * self.noise).to(x.device, x.dtype)
        if self.resize is not None:
            x = down_up(x.clamp(0, 1), self.resize)
        if self.jpeg is not None:
            x = jpeg(x, self.jpeg, self.subsampling)
        if self.vae and autoencoder is not None:
            x = autoencoder(x.clamp(0, 1))
        return x.clamp(0, 1)

    def describe(self) -> str:
        parts = []
        if self.shift is not None:
            parts.append(f"shift {self.shift}")
        if self.blur is not None:
            parts.append(f"blur {self.blur:.2f}")
        if self.noise is not None:
            parts.append(f"noise {self.noise:.3f}")
        if self.resize is not None:
            parts.append(f"resize x{self.resize:.2f}")
        if self.jpeg is not None:
            parts.append(f"jpeg q{self.jpeg}" + ("" if self.subsampling else " 4:4:4"))
        if self.vae:
            parts.append("encode-decode")
        return " -> ".join(parts) or "identity"


class Sampler:
    """Draws :class:`Draw` chains from :class:`RobustSettings` with its own seeded generator.

    The same settings and seed give the same sequence of draws (reproducible searches).
    ``can_decode``: whether an autoencoder is available for the ``vae`` step.
    """

    def __init__(self, settings: RobustSettings, seed: int = 0, can_decode: bool = False):
        self.settings = settings
        self.generator = torch.Generator().manual_seed(int(seed) * 7919 + 17)
        self.can_decode = can_decode

    def _u(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _range(self, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo + (hi - lo) * self._u()

    def draw(self) -> Draw:
        s = self.settings
        # every random number is drawn whether or not it is used, so one change of a probability does
        # not shift the rest of the sequence
        shift_on, sy, sx = self._u() < s.shift_prob, self._u(), self._u()
        blur_on, blur = self._u() < s.blur_prob, self._range(s.blur_sigma)
        noise_on, noise = self._u() < s.noise_prob, self._range(s.noise_sigma)
        noise_seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        resize_on, factor = self._u() < s.resize_prob, self._range(s.resize_factor)
        jpeg_on, quality = self._u() < s.jpeg_prob, self._range((s.jpeg_quality[0], s.jpeg_quality[1] + 0.999))
        vae_on = self._u() < s.vae_prob
        m = s.shift_max
        shift = (int(sy * (2 * m + 1)) - m, int(sx * (2 * m + 1)) - m) if shift_on and m > 0 else None
        if shift == (0, 0):
            shift = None
        return Draw(
            shift=shift,
            blur=blur if blur_on and blur > 0 else None,
            noise=noise if noise_on and noise > 0 else None,
            noise_seed=noise_seed,
            resize=factor if resize_on and factor < 1 else None,
            jpeg=int(quality) if jpeg_on else None,
            subsampling=s.jpeg_subsampling,
            vae=vae_on and self.can_decode,
        )

    def draws(self) -> list[Draw]:
        """One step's draws (``settings.samples`` of them)."""
        return [self.draw() for _ in range(self.settings.samples)]


def decode_pass(encoders: Sequence) -> Callable[[Tensor], Tensor] | None:
    """x -> D(E(x)) through the first encoder that can decode, or None when none can."""
    for enc in encoders:
        if getattr(enc, "can_decode", False):
            size_of = enc

            def roundtrip(x: Tensor, enc=size_of) -> Tensor:
                return enc.decode(enc(x), tuple(x.shape[-2:])).float()

            return roundtrip
    return None
