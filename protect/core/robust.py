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

Each is a link of :data:`fixative.core.countermeasures.CHAIN` (a module whose parameter draw is apart from
its application); a :class:`Draw` holds one draw of every link, and :class:`Sampler` makes them.

Presets (``--robust``): ``off`` (no EOT), ``web`` (what platforms do: JPEG 50-95, resizing,
light noise and blur, small shifts) and ``strong`` (more samples per step and stronger noise,
blur and resizing, plus the encode-decode pass). :func:`settings_for` turns a name into
:class:`RobustSettings`; :mod:`fixative.batch.platforms` tunes the JPEG and resize parts to a platform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from fixative.core.countermeasures import CHAIN, ChainLink
from fixative.core.jpeg import jpeg, quant_table, quantize_ste, round_ste  # noqa: F401 (re-exported)
from fixative.core.transforms import down_up, gaussian_blur, resize  # noqa: F401 (re-exported)
from fixative.defaults import DEFAULT_ROBUST  # noqa: F401 (re-exported)
from fixative.errors import ConfigError
from fixative.vocabulary import RobustLevel

#: the robust levels by name (the vocabulary :class:`~fixative.vocabulary.RobustLevel`)
ROBUST_LEVELS = tuple(r.value for r in RobustLevel)


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
        for link in CHAIN:
            link.check(self)

    @property
    def active(self) -> bool:
        """True when at least one countermeasure can be drawn."""
        return any(getattr(self, link.probability) > 0 for link in CHAIN)

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

_FIELDS: dict[str, Any] = {name: value for link in CHAIN for name, value in link.fields.items()}


class Draw:
    """One drawn chain of countermeasures: the parameters of every link of :data:`CHAIN`, by the links'
    field names (``Draw(jpeg=60, shift=(1, 2))``; an omitted link is skipped). Compares by value.

    ``shift`` is geometric: the reference image the objective compares with (the target, or the
    original for "away") must be shifted the same way, see :meth:`geometry`.
    """

    __slots__ = ("params",)

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(_FIELDS))
        if unknown:
            raise TypeError(f"unknown countermeasure parameters {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        object.__setattr__(self, "params", {**_FIELDS, **params})

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "params")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Draw is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Draw) and self.params == other.params

    def __hash__(self) -> int:
        return hash(tuple(self.params.items()))

    def __repr__(self) -> str:
        return f"Draw({self.describe()})"

    def __reduce__(self):
        return (_draw, (dict(self.params),))

    def _applied(self, autoencoder: Callable[[Tensor], Tensor] | None = None) -> list[ChainLink]:
        return [link for link in (cls(autoencoder=autoencoder) for cls in CHAIN) if link.applies(self.params)]

    @property
    def identity(self) -> bool:
        return not self._applied()

    def geometry(self, images: Tensor) -> Tensor:
        """Only the geometric part (the shift): what the reference goes through."""
        for link in self._applied():
            if link.geometric:
                images = link.apply_transform(images, self.params)
        return images

    def apply(self, images: Tensor, autoencoder: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """The whole chain on [0,1] images; differentiable. ``autoencoder``: x -> D(E(x)) for ``vae``."""
        x = images
        for link in self._applied(autoencoder):
            x = link.apply_transform(x, self.params)
        return x.clamp(0, 1)

    def describe(self) -> str:
        return " -> ".join(link.label(self.params) for link in self._applied()) or "identity"


def _draw(params: dict[str, Any]) -> Draw:
    return Draw(**params)


class Sampler:
    """Draws :class:`Draw` chains from :class:`RobustSettings` with its own seeded generator.

    The same settings and seed give the same sequence of draws (reproducible searches).
    ``can_decode``: whether an autoencoder is available for the ``vae`` step.
    """

    def __init__(self, settings: RobustSettings, seed: int = 0, can_decode: bool = False):
        self.settings = settings
        self.generator = torch.Generator().manual_seed(int(seed) * 7919 + 17)
        self.can_decode = can_decode
        self.links = [cls(settings, can_decode=can_decode) for cls in CHAIN]

    def draw(self) -> Draw:
        params: dict[str, Any] = {}
        for link in self.links:
            params.update(link.generate_parameters(torch.Size(), self.generator))
        return Draw(**params)

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
