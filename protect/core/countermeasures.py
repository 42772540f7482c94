"""Countermeasures: what platforms and mimics do to an image, as modules whose random parameters are drawn
apart from their application (kornia's augmentation shape: ``generate_parameters`` / ``apply_transform``).

:class:`Countermeasure` is the contract that robust protection (:mod:`fixative.core.robust`) and the
evaluation (:mod:`fixative.eval.countermeasures`) share: a draw from a seeded generator, then a transform of
NCHW images in [0,1] with those parameters, so the same draw can be applied to several images (the clean and
the protected picture of a paired measurement, or the views of one step).

The robust chain (:data:`CHAIN`), in the order its links are drawn and applied, each from its probability
and range in :class:`fixative.core.robust.RobustSettings`; all differentiable:

- :class:`RandomShift`: a circular shift by up to ``shift_max`` px (geometric: the reference moves too);
- :class:`RandomBlur`: Gaussian blur, sigma in px;
- :class:`RandomNoise`: additive Gaussian noise, sigma in [0,1] pixel units;
- :class:`RandomResize`: downscale by a factor and upscale back (bicubic);
- :class:`RandomJpeg`: differentiable JPEG (:func:`fixative.core.jpeg.jpeg`) at a quality;
- :class:`RandomDecode`: an encode-decode pass through an autoencoder.

Adding a link: one class here (its ``fields``, ``probability``, ``ranges``, draw, application and label),
one entry in :data:`CHAIN`, and its probability and range in ``RobustSettings``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from fixative.core.jpeg import jpeg
from fixative.core.transforms import down_up, gaussian_blur
from fixative.errors import ConfigError

if TYPE_CHECKING:
    from fixative.core.robust import RobustSettings

Params = Mapping[str, Any]
"""A countermeasure's drawn parameters, by name."""


class Countermeasure(ABC):
    """A countermeasure: ``generate_parameters`` draws one application's parameters, ``apply_transform``
    applies them (the draw is separate, so one draw can be applied to several images alike)."""

    name: str = "countermeasure"

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        """This application's parameters for images of ``shape`` (NCHW), drawn from ``generator``; a
        countermeasure without randomness returns ``{}``."""
        return {}

    @abstractmethod
    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        """``images`` (NCHW in [0,1]) under the drawn ``params``; same shape."""

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw (from ``generator``, or a fresh default-seeded one) and apply."""
        params = self.generate_parameters(images.shape, generator or torch.Generator())
        return self.apply_transform(images, params)


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _between(generator: torch.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * _uniform(generator)


class ChainLink(Countermeasure):
    """One link of the robust chain, drawn from :class:`~fixative.core.robust.RobustSettings`.

    ``fields``: its parameters in a :class:`~fixative.core.robust.Draw`, with the values that mean "not
    applied" (the first field says whether it applies); ``probability``: the settings field of its
    probability; ``ranges``: the settings fields of its (low, high) ranges, with the bounds they must lie in.
    ``geometric`` links move the objective's reference image the same way. Every link draws all of its random
    numbers whether or not it applies, so a change of one probability does not shift the others' draws.
    """

    fields: ClassVar[dict[str, Any]] = {}
    probability: ClassVar[str] = ""
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    geometric: ClassVar[bool] = False

    def __init__(self, settings: RobustSettings | None = None, autoencoder: Callable[[Tensor], Tensor] | None = None,
                 can_decode: bool = False):
        """``settings``: what to draw from (only needed to draw); ``autoencoder``: x -> D(E(x)) (to apply the
        encode-decode link); ``can_decode``: whether the encode-decode link may be drawn."""
        self.settings, self.autoencoder = settings, autoencoder
        self.can_decode = can_decode or autoencoder is not None

    @classmethod
    def check(cls, settings: RobustSettings) -> None:
        """Raise :class:`~fixative.errors.ConfigError` for a probability or a range of ``settings`` out of bounds."""
        value = getattr(settings, cls.probability)
        if not 0 <= value <= 1:
            raise ConfigError(f"robust {cls.probability} must be in [0, 1], got {value}")
        for key, (lo, hi) in cls.ranges.items():
            a, b = getattr(settings, key)
            if not lo <= a <= b <= hi:
                raise ConfigError(f"robust {key} must be a range (low, high) within [{lo}, {hi}], got {(a, b)}")

    def applies(self, params: Params) -> bool:
        """Whether the drawn ``params`` apply this link."""
        first = params[next(iter(self.fields))]
        return first is not None and first is not False

    @abstractmethod
    def label(self, params: Params) -> str:
        """A short description of the applied link ("jpeg q80")."""


class RandomShift(ChainLink):
    fields: ClassVar[dict[str, Any]] = {"shift": None}
    probability = "shift_prob"
    geometric = True

    @classmethod
    def check(cls, settings: RobustSettings) -> None:
        super().check(settings)
        if settings.shift_max < 0:
            raise ConfigError(f"robust shift_max must be >= 0 px, got {settings.shift_max}")

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        on, sy, sx = _uniform(generator) < self.settings.shift_prob, _uniform(generator), _uniform(generator)
        m = self.settings.shift_max
        shift = (int(sy * (2 * m + 1)) - m, int(sx * (2 * m + 1)) - m) if on and m > 0 else None
        return {"shift": None if shift == (0, 0) else shift}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return torch.roll(images, shifts=params["shift"], dims=(-2, -1))

    def label(self, params: Params) -> str:
        return f"shift {params['shift']}"


class RandomBlur(ChainLink):
    fields: ClassVar[dict[str, Any]] = {"blur": None}
    probability = "blur_prob"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"blur_sigma": (0.0, 20.0)}

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        on, sigma = _uniform(generator) < self.settings.blur_prob, _between(generator, self.settings.blur_sigma)
        return {"blur": sigma if on and sigma > 0 else None}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return gaussian_blur(images, params["blur"])

    def label(self, params: Params) -> str:
        return f"blur {params['blur']:.2f}"


class RandomNoise(ChainLink):
    fields: ClassVar[dict[str, Any]] = {"noise": None, "noise_seed": 0}
    probability = "noise_prob"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"noise_sigma": (0.0, 1.0)}

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        on, sigma = _uniform(generator) < self.settings.noise_prob, _between(generator, self.settings.noise_sigma)
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        return {"noise": sigma if on and sigma > 0 else None, "noise_seed": seed}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        g = torch.Generator().manual_seed(params["noise_seed"])
        return images + (torch.randn(images.shape, generator=g) * params["noise"]).to(images.device, images.dtype)

    def label(self, params: Params) -> str:
        return f"noise {params['noise']:.3f}"


class RandomResize(ChainLink):
    fields: ClassVar[dict[str, Any]] = {"resize": None}
    probability = "resize_prob"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"resize_factor": (0.05, 1.0)}

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        on, factor = _uniform(generator) < self.settings.resize_prob, _between(generator, self.settings.resize_factor)
        return {"resize": factor if on and factor < 1 else None}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return down_up(images.clamp(0, 1), params["resize"])

    def label(self, params: Params) -> str:
        return f"resize x{params['resize']:.2f}"


class RandomJpeg(ChainLink):
    fields: ClassVar[dict[str, Any]] = {"jpeg": None, "subsampling": True}
    probability = "jpeg_prob"
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"jpeg_quality": (1, 100)}

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        s = self.settings
        on, quality = _uniform(generator) < s.jpeg_prob, _between(generator, (s.jpeg_quality[0],
                                                                              s.jpeg_quality[1] + 0.999))
        return {"jpeg": int(quality) if on else None, "subsampling": s.jpeg_subsampling}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return jpeg(images, params["jpeg"], params["subsampling"])

    def label(self, params: Params) -> str:
        return f"jpeg q{params['jpeg']}" + ("" if params["subsampling"] else " 4:4:4")


class RandomDecode(ChainLink):
    """Encode-decode through the autoencoder (skipped where there is none)."""

    fields: ClassVar[dict[str, Any]] = {"vae": False}
    probability = "vae_prob"

    def generate_parameters(self, shape: torch.Size, generator: torch.Generator) -> Params:
        return {"vae": _uniform(generator) < self.settings.vae_prob and self.can_decode}

    def apply_transform(self, images: Tensor, params: Params) -> Tensor:
        return images if self.autoencoder is None else self.autoencoder(images.clamp(0, 1))

    def label(self, params: Params) -> str:
        return "encode-decode"


#: the robust chain's links, in the order they are drawn and applied
CHAIN: tuple[type[ChainLink], ...] = (RandomShift, RandomBlur, RandomNoise, RandomResize, RandomJpeg, RandomDecode)
