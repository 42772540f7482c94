"""What the strength evaluation takes and gives: :class:`StrengthSettings`, the per-image
:class:`ImageResult` (one :class:`EncoderEfficacy` per condition and encoder) and the whole
:class:`StrengthReport`; the condition names every part shares.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from fixative import defaults
from fixative.eval.countermeasures import ImpressSettings

NONE = "none"
#: conditions that measure a training view (the target viewed alike) are named with this prefix
VIEW_PREFIX = "training view "
IMPERCEPTIBILITY_KEYS = ("flip", "like_jpeg", "lpips_alex", "lpips_vgg", "psnr", "ssim", "linf")
MIN_GAIN = 0.01
"""Below this mean gain without countermeasure there is no protection to retain (retention = None)."""


@dataclass
class StrengthSettings:
    """What to measure and how. Every field has a default that suits a laptop CPU.

    - ``encoders``: encoder specs to measure in (include ones not used to protect: transfer).
    - ``classifier``: "auto" (CLIP if available, else EfficientNet-Lite0), "efficientnet_lite0",
      "none", or a CLIP folder; ``labels``: zero-shot labels for CLIP (default ImageNet's).
    - ``style``: compute Gram-matrix style distances (needs VGG16 weights in the store).
    - ``jpeg_qualities``, ``downup_factor``, ``noise_sigma``, ``blur_sigma``: the simple countermeasures.
    - ``noise_downup``: (sigma, factor) of Gaussian noise then a down-up (None = skip);
      ``platform``: (long side px, JPEG quality) of a platform's upload pipeline (None = skip).
    - ``noisy_upscale_sigma``; ``upscaler``: "auto" (SD x4 upscaler if found locally, else
      classical), "classical", or a pipeline folder / hub id.
    - ``impress``: run IMPRESS purification; ``purifier``: the autoencoder spec it uses (None =
      the first measured encoder with a decoder, else the default encoder, taef2); ``impress_settings``.
    - ``noise_control``: also measure LPIPS-matched Gaussian noise.
    - ``training_views``: also measure at the trainers' views (:func:`fixative.core.views.evaluation_views`).
    - ``detectors``: run the stealth detectors; ``poison_fraction``: the share of images that are
      protected in each detection trial (the rest are clean originals).
    - ``max_side``: measure images downscaled so the longer side is at most this (None = as is).
    - ``tile_size``: larger images go through the encoders, decoders, IMPRESS and LPIPS in cells of
      this many pixels (memory stays bounded; the latents are laid side by side).
    - ``seed``: for every random draw (noise, detector restarts).
    - ``device``: "auto", "cpu", "cuda", "mps".
    """

    encoders: list[str] = field(default_factory=lambda: [defaults.DEFAULT_ENCODER])
    models_dir: str | None = None
    device: str = defaults.DEFAULT_DEVICE
    classifier: str = "auto"
    labels: list[str] | None = None
    style: bool = True
    jpeg_qualities: tuple[int, ...] = (95, 85, 75, 50)
    downup_factor: float = 0.5
    noise_sigma: float = 0.03
    blur_sigma: float = 1.0
    noisy_upscale_sigma: float = 0.05
    noise_downup: tuple[float, float] | None = (0.05, 0.5)
    platform: tuple[int, int] | None = (2048, 85)
    upscaler: str = "auto"
    impress: bool = True
    purifier: str | None = None
    impress_settings: ImpressSettings = field(default_factory=ImpressSettings)
    noise_control: bool = True
    training_views: bool = True
    detectors: bool = True
    poison_fraction: float = 0.15
    max_side: int | None = None
    tile_size: int = defaults.DEFAULT_TILE_SIZE
    seed: int = 0
    grid_height: int = 192


@dataclass
class EncoderEfficacy:
    """One encoder under one condition for one image (see the module docstring for definitions)."""

    distance_clean: float  # ||E(C(x)) - E(t)|| (target mode) or ||E(C(x))|| (away mode)
    distance_protected: float  # ||E(C(x')) - E(t)|| or ||E(C(x')) - E(C(x))||
    ratio: float | None  # target mode only
    gain: float
    concept: dict | None = None  # classifier on decoded views
    style: dict | None = None  # Gram style distances of decoded views


@dataclass
class ImageResult:
    name: str
    size: tuple[int, int]
    mode: str  # "target" or "away"
    imperceptibility: dict[str, float]
    efficacy: dict[str, dict[str, EncoderEfficacy]]  # condition -> encoder -> values
    noise_control: dict | None = None
    labels: dict | None = None  # classifier top-1 of original, protected, target
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class StrengthReport:
    """Everything measured: per image, aggregated, and how (JSON-ready via :meth:`to_json`)."""

    settings: dict
    encoders: list[dict]
    countermeasures: list[dict]
    classifier: str | None
    images: list[ImageResult]
    aggregate: dict
    stealth: dict
    notes: list[str] = field(default_factory=list)
    grids: dict[str, dict] = field(default_factory=dict, repr=False)  # per image: {"png", "columns"}, for HTML
    seconds: float = 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("grids")
        return clean_json(data)


def clean_json(value):
    """NaN/inf -> None, tuples -> lists, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
