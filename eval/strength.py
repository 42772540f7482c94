"""Protection strength without training: imperceptibility, latent efficacy, robustness, stealth.

:class:`StrengthEvaluator` holds the models (encoders, LPIPS alex and vgg, a classifier, the
VGG16 style network, the countermeasures), loaded once; :meth:`StrengthEvaluator.evaluate`
measures a list of :class:`~fixative.eval.pairs.ImagePair` and returns a :class:`StrengthReport`.

Definitions (per image, per encoder E, per condition C = no countermeasure or one of them; the
countermeasure is applied to the original x and the protected x' alike, with the same noise):

- target mode (a target t is known): ``ratio = ||E(C(x')) - E(t)|| / ||E(C(x)) - E(t)||``
  (1 = no effect, 0 = the encoder sees the target), ``gain = 1 - ratio``;
- away mode (no target): ``gain = ||E(C(x')) - E(C(x))|| / ||E(C(x))||``, the relative latent shift;
- ``retention = gain under C / gain without countermeasure`` (1 = all protection kept, 0 = removed;
  aggregated as a ratio of mean gains; None where the mean gain without countermeasure is below
  :data:`MIN_GAIN`: there is nothing to retain);
- decoded view: ``D(E(C(x')))`` for encoders with a decoder; concept success = the classifier's
  top-1 label of the decoded view is the anchor (the classifier's top-1 label of the target);
  style ratio = ``style(D(E(C(x'))), t) / style(D(E(C(x))), t)`` (below 1 = the decoded view moved
  towards the target's style);
- noise control: the same efficacy for Gaussian noise scaled to the protected image's LPIPS, to
  tell a protection from a perturbation of the same visibility;
- training views (conditions named ``training view 512 crop`` and ``training view 1024 px``, see
  :func:`fixative.core.views.evaluation_views`): what a model trained on the file sees after the trainer's
  resize: the original, the protected image *and the target* are viewed alike (shorter side 512 px with
  a centre crop; longer side 1024 px), then measured as above. Any protection (Fixative's or another
  tool's) is measured there, so what survives a trainer's resize shows beside the full-size figure.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.core.constraints import LpipsBudget, quantize
from fixative.core.devices import resolve_device
from fixative.core.metrics import linf, psnr, ssim
from fixative.core.views import evaluation_views
from fixative.errors import ConfigError, FixativeError
from fixative.eval.classifier import ImageClassifier, load_classifier
from fixative.eval.countermeasures import (
    Countermeasure,
    ImpressPurification,
    ImpressSettings,
    NoisyUpscale,
    default_countermeasures,
    load_sd_upscaler,
)
from fixative.eval.detectors import (
    ActivationClustering,
    KNNDistance,
    PoisonDetector,
    SpectralSignature,
    detection_rate_at_fpr,
    roc_auc,
    roc_curve,
)
from fixative.eval.names import display_names, short_name
from fixative.eval.pairs import ImagePair, LoadedPair, load_pair
from fixative.eval.style import StyleDistance
from fixative.models.encoders import Encoder, load_encoders
from fixative.models.perceptual import Perceptual, load_perceptual
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

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
      the first measured encoder with a decoder, else taef2); ``impress_settings``.
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

    encoders: list[str] = field(default_factory=lambda: ["taef2"])
    models_dir: str | None = None
    device: str = "auto"
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
    tile_size: int = 1024
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
        return _clean_json(data)


def _clean_json(value):
    """NaN/inf -> None, tuples -> lists, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _norm(t: Tensor) -> float:
    return float(t.double().pow(2).sum().sqrt())


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _stats(values: Sequence[float]) -> dict:
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if vals.size == 0:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": float(vals.mean()), "median": float(np.median(vals)), "min": float(vals.min()),
            "max": float(vals.max())}


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


def _to_png(image: Tensor) -> bytes:
    arr = (image[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def amplified_difference(original: Tensor, protected: Tensor) -> tuple[Tensor, float]:
    """Signed difference shown around mid-grey, amplified so its largest change reaches the
    full range (at most 50x). Returns (image, amplification)."""
    d = protected.float() - original.float()
    peak = float(d.abs().max())
    amp = min(50.0, 0.5 / peak) if peak > 0 else 1.0
    return (0.5 + d * amp).clamp(0, 1), amp


class StrengthEvaluator:
    """Models loaded once; :meth:`evaluate` measures any number of pairs."""

    def __init__(
        self,
        encoders: Sequence[Encoder],
        lpips_alex: Perceptual,
        lpips_vgg: Perceptual | None,
        *,
        classifier: ImageClassifier | None = None,
        style: StyleDistance | None = None,
        countermeasures: Sequence[Countermeasure] = (),
        settings: StrengthSettings | None = None,
        device: torch.device | str = "cpu",
        notes: Sequence[str] = (),
    ):
        if not encoders:
            raise ConfigError("at least one encoder is needed to measure efficacy")
        self.device = resolve_device(device)
        self.encoders = list(encoders)
        self.names = [getattr(e, "name", type(e).__name__) for e in self.encoders]
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"encoder names must differ, got {self.names}")
        self.lpips_alex = lpips_alex
        self.lpips_vgg = lpips_vgg
        self.classifier = classifier
        self.style = style
        self.countermeasures = list(countermeasures)
        if len({c.name for c in self.countermeasures} | {NONE}) != len(self.countermeasures) + 1:
            raise ConfigError("countermeasure names must be unique and not 'none'")
        self.settings = settings or StrengthSettings()
        self.notes = list(notes)

    # --- construction from specs -----------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: StrengthSettings) -> StrengthEvaluator:
        """Load every model named by ``settings`` from the model store."""
        device = resolve_device(settings.device)
        store = ModelStore(settings.models_dir)
        encoders = load_encoders(settings.encoders, store=store, device=device)
        alex = load_perceptual("alex", store=store, device=device)
        vgg = load_perceptual("vgg", store=store, device=device)
        notes: list[str] = []
        classifier = load_classifier(settings.classifier, store=store, device=device, labels=settings.labels)
        style = None
        if settings.style:
            try:
                style = StyleDistance.load(store, device)
            except FixativeError as exc:
                notes.append(f"style distance skipped: {exc}")
        upscaler = None
        if settings.upscaler != "classical":
            upscaler = load_sd_upscaler(None if settings.upscaler == "auto" else settings.upscaler, store, device)
        if upscaler is not None:
            noisy = NoisyUpscale(settings.noisy_upscale_sigma, upscaler[0], upscaler_name=upscaler[1])
        else:
            noisy = NoisyUpscale(settings.noisy_upscale_sigma)
        impress = None
        if settings.impress:
            purifier = cls._purifier(settings, encoders, store, device)
            if purifier is None:
                notes.append("IMPRESS skipped: no autoencoder with a decoder (give --purifier or add taef2 "
                             "with its taef2_decoder.pth)")
            else:
                impress = ImpressPurification(purifier, alex, replace(settings.impress_settings,
                                                                      tile=settings.tile_size))
        cms = default_countermeasures(
            jpeg_qualities=tuple(settings.jpeg_qualities), downup_factor=settings.downup_factor,
            noise_sigma=settings.noise_sigma, blur_sigma=settings.blur_sigma, noisy_upscale=noisy, impress=impress,
            platform=tuple(settings.platform) if settings.platform else None,
            noise_downup=tuple(settings.noise_downup) if settings.noise_downup else None,
        )
        return cls(encoders, alex, vgg, classifier=classifier, style=style, countermeasures=cms, settings=settings,
                   device=device, notes=notes)

    @staticmethod
    def _purifier(settings: StrengthSettings, encoders: Sequence[Encoder], store: ModelStore, device):
        if settings.purifier:
            (enc,) = load_encoders([settings.purifier], store=store, device=device)
            if not enc.can_decode:
                raise ConfigError(f"--purifier {settings.purifier}: this autoencoder has no decoder")
            return enc
        for enc in encoders:
            if enc.can_decode:
                return enc
        try:
            (enc,) = load_encoders(["taef2"], store=store, device=device)
        except FixativeError:
            return None
        return enc if enc.can_decode else None

    # --- measuring ---------------------------------------------------------------------------

    def describe_encoders(self, pairs: Sequence[ImagePair]) -> list[dict]:
        used = {u for p in pairs for u in p.protected_with}
        display = display_names(self.names)
        out = []
        for name, enc in zip(self.names, self.encoders, strict=True):
            role = "unknown" if not used else ("used to protect" if name in used else "transfer (not used to protect)")
            out.append({"name": name, "display": display[name], "source": getattr(enc, "source", ""),
                        "can_decode": bool(getattr(enc, "can_decode", False)), "role": role})
        return out

    @torch.no_grad()
    def imperceptibility(self, original: Tensor, protected: Tensor) -> dict[str, float]:
        from fixative.core.budgets import jpeg_equivalent
        from fixative.core.visibility import flip_of_file

        x, xp = original.to(self.device), protected.to(self.device)
        # FLIP by NVIDIA's flip-evaluator (the independent measure), and the JPEG quality of equal visibility
        out: dict = {"flip": flip_of_file(x, xp)}
        out["like_jpeg"] = jpeg_equivalent(x, out["flip"], measure=flip_of_file)
        cell = self.settings.tile_size
        out["lpips_alex"] = float(self.lpips_alex.distance_in_cells(xp, x, cell)[0])
        out["lpips_vgg"] = (float(self.lpips_vgg.distance_in_cells(xp, x, cell)[0]) if self.lpips_vgg is not None
                            else None)
        out["psnr"] = float(psnr(xp, x)[0])
        out["ssim"] = float(ssim(xp, x)[0])
        out["linf"] = float(linf(xp, x)[0])
        return out

    @torch.no_grad()
    def _noise_like(self, original: Tensor, lpips_target: float, seed: int) -> Tensor:
        """Gaussian noise scaled (bisection) so that LPIPS alex to the original matches ``lpips_target``."""
        g = torch.Generator().manual_seed(seed)
        noise = (torch.randn(original.shape, generator=g) * 0.01).to(self.device)
        x = original.to(self.device)
        budget = LpipsBudget(self.lpips_alex, x, min(max(lpips_target, 1e-4), 0.99))
        delta, _, _ = budget.scale_back(noise, levels=255, iters=10, max_scale=64.0)
        return quantize(x + delta)

    def _efficacy(self, enc: Encoder, clean: Tensor, prot: Tensor, target_latent: Tensor | None
                  ) -> tuple[EncoderEfficacy, Tensor, Tensor]:
        z = encode_tiled(enc, torch.cat([clean, prot]).to(self.device), self.settings.tile_size).float()
        z0, z1 = z[:1], z[1:]
        if target_latent is not None:
            d0, d1 = _norm(z0 - target_latent), _norm(z1 - target_latent)
            ratio = d1 / d0 if d0 > 0 else 1.0
            return EncoderEfficacy(d0, d1, ratio, 1.0 - ratio), z0, z1
        base, shift = _norm(z0), _norm(z1 - z0)
        return EncoderEfficacy(base, shift, None, shift / base if base > 0 else 0.0), z0, z1

    @torch.no_grad()
    def _views(self, pair: LoadedPair, enc: Encoder, z0: Tensor, z1: Tensor, anchor: int | None,
               style_refs: dict | None) -> tuple[dict | None, dict | None, Tensor]:
        """Decode both latents; classify and style-compare the views. Returns (concept, style, views)."""
        views = decode_tiled(enc, torch.cat([z0, z1]), pair.size, self.settings.tile_size).float()
        concept = None
        if self.classifier is not None:
            p = self.classifier.probs(views)
            top = p.argmax(dim=1).tolist()
            concept = {"top1_clean_view": self.classifier.labels[top[0]],
                       "top1_protected_view": self.classifier.labels[top[1]]}
            if anchor is not None:
                top5 = p[1].topk(min(5, p.shape[1])).indices.tolist()
                concept.update({
                    "anchor": self.classifier.labels[anchor],
                    "success": bool(top[1] == anchor),
                    "success_top5": bool(anchor in top5),
                    "clean_view_is_anchor": bool(top[0] == anchor),
                    "p_anchor_protected_view": float(p[1, anchor]),
                    "p_anchor_clean_view": float(p[0, anchor]),
                })
        style = None
        if self.style is not None and style_refs is not None:
            grams = self.style.grams(views)
            g0, g1 = [g[:1] for g in grams], [g[1:] for g in grams]
            to_t0 = float(self.style.gram_distance(g0, style_refs["target"])[0])
            to_t1 = float(self.style.gram_distance(g1, style_refs["target"])[0])
            to_o1 = float(self.style.gram_distance(g1, style_refs["original"])[0])
            style = {"to_target_clean_view": to_t0, "to_target_protected_view": to_t1,
                     "to_original_protected_view": to_o1,
                     "ratio": to_t1 / to_t0 if to_t0 > 0 else None,
                     "closer_to_target_than_original": bool(to_t1 < to_o1)}
        return concept, style, views

    def _seed(self, image_index: int, condition_index: int) -> int:
        return (self.settings.seed * 1_000_003 + image_index * 1009 + condition_index) % (2**31)

    def measure_pair(self, pair: LoadedPair, index: int = 0) -> tuple[ImageResult, dict[str, dict], dict]:
        """Measure one loaded pair. Returns (result, detector features, image grid: PNG bytes and column names)."""
        started = time.perf_counter()
        x, xp, t = pair.original.to(self.device), pair.protected.to(self.device), pair.target
        t = t.to(self.device) if t is not None else None
        mode = "target" if t is not None else "away"
        imp = self.imperceptibility(x, xp)
        result = ImageResult(pair.name, pair.size, mode, imp, {}, notes=list(pair.notes))
        anchor = None
        style_refs = None
        with torch.no_grad():
            tile = self.settings.tile_size
            target_latents = [encode_tiled(e, t, tile).float() if t is not None else None for e in self.encoders]
            if self.classifier is not None:
                batch = torch.cat([x, xp] + ([t] if t is not None else []))
                top = self.classifier.probs(batch).argmax(dim=1).tolist()
                result.labels = {"original": self.classifier.labels[top[0]],
                                 "protected": self.classifier.labels[top[1]],
                                 "target": self.classifier.labels[top[2]] if t is not None else None,
                                 "protected_keeps_label": bool(top[0] == top[1])}
                anchor = top[2] if t is not None else None
            if self.style is not None and t is not None:
                style_refs = {"target": self.style.grams(t), "original": self.style.grams(x)}
        features: dict[str, dict] = {}
        decoded_view = None
        conditions: list[tuple[str, Countermeasure | None]] = [(NONE, None)] + [(c.name, c) for c in
                                                                                 self.countermeasures]
        for ci, (cname, cm) in enumerate(conditions):
            if cm is None:
                clean, prot = x, xp
            else:
                both = cm(torch.cat([x, xp]), seed=self._seed(index, ci))
                clean, prot = both[:1], both[1:]
            per_encoder: dict[str, EncoderEfficacy] = {}
            for name, enc, tz in zip(self.names, self.encoders, target_latents, strict=True):
                with torch.no_grad():
                    eff, z0, z1 = self._efficacy(enc, clean, prot, tz)
                    if getattr(enc, "can_decode", False) and (self.classifier is not None or self.style is not None
                                                              or cm is None):
                        eff.concept, eff.style, view = self._views(pair, enc, z0, z1, anchor, style_refs)
                        if cm is None and decoded_view is None:
                            decoded_view = (name, view[1:], view[:1])
                if cm is None:
                    features[f"latent:{name}"] = {"clean": pooled_views(z0), "protected": pooled_views(z1)}
                per_encoder[name] = eff
            result.efficacy[cname] = per_encoder
            log.debug("%s: %s done", pair.name, cname)
        if self.settings.training_views:
            result.efficacy.update(self._training_views(x, xp, t))
        if self.classifier is not None:
            with torch.no_grad():
                crops = quadrant_crops(torch.cat([x, xp]))
                feats = [self.classifier.features(c) for c in crops]  # each (2, D)
                features[f"classifier:{self.classifier.kind}"] = {
                    "clean": torch.stack([f[0] for f in feats]).cpu(),
                    "protected": torch.stack([f[1] for f in feats]).cpu()}
        if self.settings.noise_control:
            result.noise_control = self._noise_control(x, xp, t, target_latents, imp["lpips_alex"], index)
        grid = {"png": self._grid(x, xp, t, decoded_view), "columns": self._grid_columns(x, xp, t, decoded_view)}
        result.seconds = time.perf_counter() - started
        return result, features, grid

    @torch.no_grad()
    def _training_views(self, x: Tensor, xp: Tensor, t: Tensor | None) -> dict[str, dict[str, EncoderEfficacy]]:
        """Efficacy per encoder at each trainer's view, the target (if any) viewed like the images."""
        out = {}
        for label, view in evaluation_views(*x.shape[-2:]).items():
            clean, prot = view(x), view(xp)
            per_encoder = {}
            for name, enc in zip(self.names, self.encoders, strict=True):
                tz = enc(view(t)).float() if t is not None else None
                per_encoder[name] = self._efficacy(enc, clean, prot, tz)[0]
            out[VIEW_PREFIX + label] = per_encoder
        return out

    def conditions(self) -> list[str]:
        """The condition names measured, in order: none, the countermeasures, the training views."""
        views = [VIEW_PREFIX + v for v in evaluation_views(1024, 1024)] if self.settings.training_views else []
        return [NONE] + [c.name for c in self.countermeasures] + views

    @torch.no_grad()
    def _noise_control(self, x, xp, t, target_latents, lpips_value: float, index: int) -> dict:
        noisy = self._noise_like(x, lpips_value, self._seed(index, 10_000))
        out = {"lpips_alex": float(self.lpips_alex.distance(noisy, x)[0]), "psnr": float(psnr(noisy, x)[0]),
               "encoders": {}}
        for name, enc, tz in zip(self.names, self.encoders, target_latents, strict=True):
            eff, _, _ = self._efficacy(enc, x, noisy, tz)
            out["encoders"][name] = {"ratio": eff.ratio, "gain": eff.gain}
        return out

    def _grid(self, x: Tensor, xp: Tensor, t: Tensor | None, decoded) -> bytes:
        """One row of thumbnails: original, protected, amplified difference, decoded views, target."""
        diff, amp = amplified_difference(x, xp)
        tiles = [x, xp, diff]
        if decoded is not None:
            tiles += [decoded[2], decoded[1]]
        if t is not None:
            tiles.append(t)
        h = self.settings.grid_height
        scale = h / x.shape[-2]
        w = max(1, round(x.shape[-1] * scale))
        small = [F.interpolate(v.float().cpu(), size=(h, w), mode="bicubic", antialias=scale < 1,
                               align_corners=False).clamp(0, 1) for v in tiles]
        gap = torch.ones(1, 3, h, 4)
        row = []
        for i, s in enumerate(small):
            row += [s] if i == 0 else [gap, s]
        return _to_png(torch.cat(row, dim=-1))

    @staticmethod
    def _grid_columns(x: Tensor, xp: Tensor, t: Tensor | None, decoded) -> list[str]:
        _, amp = amplified_difference(x, xp)
        cols = ["original", "protected", f"difference x{amp:.0f}"]
        if decoded is not None:
            cols += [f"decoded original ({short_name(decoded[0])})", f"decoded protected ({short_name(decoded[0])})"]
        return cols + (["target"] if t is not None else [])

    # --- the whole evaluation -------------------------------------------------------------------

    def evaluate(
        self,
        pairs: Sequence[ImagePair],
        notes: Sequence[str] = (),
        progress: Callable[[int, int, str], None] | None = None,
    ) -> StrengthReport:
        """Measure every pair, aggregate, run the detectors. A pair that fails is noted and skipped."""
        started = time.perf_counter()
        results: list[ImageResult] = []
        features: list[dict[str, dict]] = []
        grids: dict[str, dict] = {}
        all_notes = list(notes) + list(self.notes)
        for i, pair in enumerate(pairs):
            if progress is not None:
                progress(i, len(pairs), pair.name)
            try:
                loaded = load_pair(pair, self.settings.max_side)
                res, feats, grid = self.measure_pair(loaded, i)
            except FixativeError as exc:
                all_notes.append(f"{pair.name}: not measured ({exc})")
                log.error("%s: %s", pair.name, exc)
                continue
            results.append(res)
            features.append(feats)
            grids[res.name] = grid
            log.info("%s measured in %.1f s", pair.name, res.seconds)
        if not results:
            raise FixativeError("no pair could be measured: " + "; ".join(all_notes[-3:]))
        modes = {r.mode for r in results}
        if len(modes) > 1:
            all_notes.append("some pairs have a target and some do not: the aggregate gains mix distance-ratio "
                             "gains (target) and latent-shift gains (away); see the per-image tables")
        report = StrengthReport(
            settings=_clean_json({k: v for k, v in asdict(self.settings).items()}),
            encoders=self.describe_encoders(pairs),
            countermeasures=[c.describe() for c in self.countermeasures],
            classifier=self.classifier.name if self.classifier is not None else None,
            images=results,
            aggregate=self.aggregate(results),
            stealth=self.stealth(features) if self.settings.detectors else {"skipped": "detectors off"},
            notes=all_notes,
            grids=grids,
        )
        report.seconds = time.perf_counter() - started
        return report

    def aggregate(self, results: Sequence[ImageResult]) -> dict:
        """Means over images: imperceptibility stats; per condition and encoder, gain, retention,
        concept success rate and style ratio; the noise control."""
        out: dict = {"images": len(results), "mode": sorted({r.mode for r in results})}
        out["imperceptibility"] = {k: _stats([r.imperceptibility.get(k) for r in results])
                                   for k in IMPERCEPTIBILITY_KEYS}
        conditions = self.conditions()
        eff: dict = {}
        for cname in conditions:
            eff[cname] = {}
            for name in self.names:
                rows = [r.efficacy[cname][name] for r in results if cname in r.efficacy]
                before = [r.efficacy[NONE][name].gain for r in results if cname in r.efficacy]
                gain = _mean([e.gain for e in rows])
                gain0 = _mean(before)
                entry = {
                    "ratio": _mean([e.ratio for e in rows]),
                    "gain": gain,
                    "retention": (gain / gain0) if (gain is not None and gain0 and gain0 > MIN_GAIN) else None,
                    "per_image_gain": [e.gain for e in rows],
                }
                concepts = [e.concept for e in rows if e.concept and "success" in e.concept]
                if concepts:
                    entry["concept_success"] = _mean([float(c["success"]) for c in concepts])
                    entry["concept_success_top5"] = _mean([float(c["success_top5"]) for c in concepts])
                    entry["concept_success_clean_view"] = _mean([float(c["clean_view_is_anchor"]) for c in concepts])
                    entry["p_anchor_protected_view"] = _mean([c["p_anchor_protected_view"] for c in concepts])
                    entry["p_anchor_clean_view"] = _mean([c["p_anchor_clean_view"] for c in concepts])
                styles = [e.style for e in rows if e.style]
                if styles:
                    entry["style_ratio"] = _mean([s["ratio"] for s in styles])
                    entry["style_closer_to_target"] = _mean([float(s["closer_to_target_than_original"])
                                                             for s in styles])
                eff[cname][name] = entry
        out["efficacy"] = eff
        controls = [r.noise_control for r in results if r.noise_control]
        if controls:
            out["noise_control"] = {
                "lpips_alex": _mean([c["lpips_alex"] for c in controls]),
                "encoders": {n: {"ratio": _mean([c["encoders"][n]["ratio"] for c in controls]),
                                 "gain": _mean([c["encoders"][n]["gain"] for c in controls])} for n in self.names},
            }
        labelled = [r.labels for r in results if r.labels]
        if labelled:
            out["protected_keeps_label"] = _mean([float(lab["protected_keeps_label"]) for lab in labelled])
        return out

    def stealth(self, features: Sequence[dict[str, dict]], fpr: float = 0.05) -> dict:
        """Run the detectors on mixes of clean originals and protected images, per feature space.

        Trials: the images are split into chunks of ``poison_fraction`` of them. In each trial the
        set holds the clean originals of *all* images plus the protected versions of one chunk (so
        the poison is a minority and every picture's content is present clean: a detector must find
        the perturbation, not an unusual picture). Each image gives five samples (whole and
        quadrants), grouped by picture (k-NN ignores neighbours from the same picture). ROC-AUC and
        the detection rate at ``fpr`` false positives are computed per trial and averaged.
        """
        n = len(features)
        if n < 2:
            return {"skipped": "the detectors need at least two images"}
        k = max(1, min(n - 1, round(self.settings.poison_fraction * n)))
        order = list(range(n))
        chunks = [order[i : i + k] for i in range(0, n, k)]
        spaces = sorted(set().union(*[f.keys() for f in features]))
        out: dict = {"trials": len(chunks), "poisoned_images_per_trial": k, "fpr": fpr,
                     "samples_per_image": None, "spaces": {}}
        for space in spaces:
            out["spaces"][space] = {}
            for det_cls in (KNNDistance, SpectralSignature, ActivationClustering):
                det: PoisonDetector = det_cls(expected_fraction=min(0.5, k / (n + k)))
                aucs, rates, pos_all, neg_all, evals = [], [], [], [], []
                for chunk in chunks:
                    rows, truth, groups = [], [], []
                    for i in range(n):
                        if space not in features[i]:
                            continue
                        kinds = ["clean", "protected"] if i in chunk else ["clean"]
                        for kind in kinds:
                            v = features[i][space][kind]
                            rows.append(v)
                            truth += [kind == "clean"] * v.shape[0]
                            groups += [i] * v.shape[0]
                            out["samples_per_image"] = int(v.shape[0])
                    if not any(not t for t in truth) or all(not t for t in truth):
                        continue
                    x = torch.cat(rows)
                    s = det.scores(x, groups)
                    is_clean = torch.tensor(truth)
                    pos, neg = s[~is_clean], s[is_clean]
                    aucs.append(roc_auc(pos, neg))
                    rates.append(detection_rate_at_fpr(pos, neg, fpr))
                    pos_all.append(pos)
                    neg_all.append(neg)
                    evals.append(det.evaluate_defence(truth, *det.detect_poison(x, groups)))
                if not aucs:
                    continue
                fprs, tprs = roc_curve(torch.cat(pos_all), torch.cat(neg_all))
                decision = {key: sum(e[key] for e in evals) for key in
                            ("true_positives", "false_positives", "false_negatives", "true_negatives")}
                mean_auc = _mean(aucs)
                out["spaces"][space][det.name] = {
                    "roc_auc": mean_auc,
                    "auc_either_direction": max(mean_auc, 1 - mean_auc) if mean_auc is not None else None,
                    "detection_rate_at_fpr": _mean(rates),
                    "per_trial_auc": aucs,
                    "pooled_roc": {"fpr": fprs, "tpr": tprs},
                    "own_threshold": decision,
                }
        return out
