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

The parts: :mod:`fixative.eval.strength_types` (settings and results),
:mod:`fixative.eval.strength_latents` (tiled encoding, latent efficacy, detector features),
:mod:`fixative.eval.strength_views` (concept and style of the decoded views),
:mod:`fixative.eval.strength_grid` (the image grid), :mod:`fixative.eval.strength_conditions` (the
countermeasures from the settings) and :mod:`fixative.eval.strength_aggregate` (means over images, the
stealth detectors). Their public names are importable from here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
from torch import Tensor

from fixative.core.constraints import LpipsBudget, quantize
from fixative.core.devices import resolve_device
from fixative.core.metrics import linf, psnr, ssim
from fixative.core.views import evaluation_views
from fixative.errors import ConfigError, FixativeError
from fixative.eval.classifier import ImageClassifier, load_classifier
from fixative.eval.countermeasures import Countermeasure
from fixative.eval.names import display_names
from fixative.eval.pairs import ImagePair, LoadedPair, load_pair
from fixative.eval.strength_aggregate import aggregate, stealth
from fixative.eval.strength_conditions import build_countermeasures
from fixative.eval.strength_grid import Decoded, amplified_difference, grid_columns, grid_png
from fixative.eval.strength_latents import (
    decode_tiled,
    encode_tiled,
    latent_efficacy,
    pooled_views,
    quadrant_crops,
)
from fixative.eval.strength_types import (
    IMPERCEPTIBILITY_KEYS,
    MIN_GAIN,
    NONE,
    VIEW_PREFIX,
    EncoderEfficacy,
    ImageResult,
    StrengthReport,
    StrengthSettings,
    clean_json,
)
from fixative.eval.strength_views import decoded_concept, decoded_style
from fixative.eval.style import StyleDistance
from fixative.models.encoders import Encoder, load_encoders
from fixative.models.perceptual import Perceptual, load_perceptual
from fixative.models.store import ModelStore
from fixative.options import LpipsNet

log = logging.getLogger(__name__)

__all__ = ["IMPERCEPTIBILITY_KEYS", "MIN_GAIN", "NONE", "VIEW_PREFIX", "EncoderEfficacy", "ImageResult",
           "StrengthEvaluator", "StrengthReport", "StrengthSettings", "amplified_difference", "decode_tiled",
           "encode_tiled", "pooled_views", "quadrant_crops"]


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
        alex = load_perceptual(LpipsNet.ALEX, store=store, device=device)
        vgg = load_perceptual(LpipsNet.VGG, store=store, device=device)
        notes: list[str] = []
        classifier = load_classifier(settings.classifier, store=store, device=device, labels=settings.labels)
        style = None
        if settings.style:
            try:
                style = StyleDistance.load(store, device)
            except FixativeError as exc:
                notes.append(f"style distance skipped: {exc}")
        cms = build_countermeasures(settings, encoders, alex, store, device, notes)
        return cls(encoders, alex, vgg, classifier=classifier, style=style, countermeasures=cms, settings=settings,
                   device=device, notes=notes)

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
        return latent_efficacy(enc, clean, prot, target_latent, self.settings.tile_size, self.device)

    @torch.no_grad()
    def _views(self, pair: LoadedPair, enc: Encoder, z0: Tensor, z1: Tensor, anchor: int | None,
               style_refs: dict | None) -> tuple[dict | None, dict | None, Tensor]:
        """Decode both latents; classify and style-compare the views. Returns (concept, style, views)."""
        views = decode_tiled(enc, torch.cat([z0, z1]), pair.size, self.settings.tile_size).float()
        concept = decoded_concept(self.classifier, views, anchor) if self.classifier is not None else None
        style = None
        if self.style is not None and style_refs is not None:
            style = decoded_style(self.style, views, style_refs)
        return concept, style, views

    def _seed(self, image_index: int, condition_index: int) -> int:
        return (self.settings.seed * 1_000_003 + image_index * 1009 + condition_index) % (2**31)

    def measure_pair(self, pair: LoadedPair, index: int = 0) -> tuple[ImageResult, dict[str, dict], dict]:
        """Measure one loaded pair. Returns (result, detector features, image grid: PNG bytes and column names)."""
        started = time.perf_counter()
        x, xp, t = pair.original.to(self.device), pair.protected.to(self.device), pair.target
        t = t.to(self.device) if t is not None else None
        imp = self.imperceptibility(x, xp)
        result = ImageResult(pair.name, pair.size, "target" if t is not None else "away", imp, {},
                             notes=list(pair.notes))
        target_latents, anchor, style_refs = self._references(result, x, xp, t)
        features: dict[str, dict] = {}
        decoded = self._conditions(pair, result, features, target_latents, anchor, style_refs, index)
        if self.settings.training_views:
            result.efficacy.update(self._training_views(x, xp, t))
        if self.classifier is not None:
            features[f"classifier:{self.classifier.kind}"] = self._classifier_features(x, xp)
        if self.settings.noise_control:
            result.noise_control = self._noise_control(x, xp, t, target_latents, imp["lpips_alex"], index)
        grid = {"png": grid_png(x, xp, t, decoded, self.settings.grid_height),
                "columns": grid_columns(x, xp, t, decoded)}
        result.seconds = time.perf_counter() - started
        return result, features, grid

    @torch.no_grad()
    def _references(self, result: ImageResult, x: Tensor, xp: Tensor, t: Tensor | None
                    ) -> tuple[list[Tensor | None], int | None, dict | None]:
        """The target's latent per encoder, the anchor class (the classifier's top-1 of the target; the
        three labels go into ``result.labels``) and the style references (target, original)."""
        target_latents = [encode_tiled(e, t, self.settings.tile_size).float() if t is not None else None
                          for e in self.encoders]
        anchor = None
        if self.classifier is not None:
            labels = self.classifier.labels
            top = self.classifier.probs(torch.cat([x, xp] + ([t] if t is not None else []))).argmax(dim=1).tolist()
            result.labels = {"original": labels[top[0]], "protected": labels[top[1]],
                             "target": labels[top[2]] if t is not None else None,
                             "protected_keeps_label": bool(top[0] == top[1])}
            anchor = top[2] if t is not None else None
        style_refs = None
        if self.style is not None and t is not None:
            style_refs = {"target": self.style.grams(t), "original": self.style.grams(x)}
        return target_latents, anchor, style_refs

    def _conditions(self, pair: LoadedPair, result: ImageResult, features: dict[str, dict],
                    target_latents: list[Tensor | None], anchor: int | None, style_refs: dict | None,
                    index: int) -> Decoded:
        """Efficacy under no countermeasure and each countermeasure, into ``result.efficacy``; the latent
        features (no countermeasure) into ``features``. Returns the first decoded views for the grid."""
        x, xp = pair.original.to(self.device), pair.protected.to(self.device)
        decoded = None
        conditions = [(NONE, None)] + [(c.name, c) for c in self.countermeasures]
        for ci, (cname, cm) in enumerate(conditions):
            if cm is None:
                clean, prot = x, xp
            else:
                both = cm(torch.cat([x, xp]), seed=self._seed(index, ci))
                clean, prot = both[:1], both[1:]
            per_encoder: dict[str, EncoderEfficacy] = {}
            for name, enc, tz in zip(self.names, self.encoders, target_latents, strict=True):
                with torch.no_grad():  # (not around the countermeasure: IMPRESS needs gradients)
                    eff, z0, z1 = self._efficacy(enc, clean, prot, tz)
                    if getattr(enc, "can_decode", False) and (self.classifier is not None or self.style is not None
                                                              or cm is None):
                        eff.concept, eff.style, view = self._views(pair, enc, z0, z1, anchor, style_refs)
                        if cm is None and decoded is None:
                            decoded = (name, view[1:], view[:1])
                if cm is None:
                    features[f"latent:{name}"] = {"clean": pooled_views(z0), "protected": pooled_views(z1)}
                per_encoder[name] = eff
            result.efficacy[cname] = per_encoder
            log.debug("%s: %s done", pair.name, cname)
        return decoded

    @torch.no_grad()
    def _classifier_features(self, x: Tensor, xp: Tensor) -> dict[str, Tensor]:
        """The classifier's features of the whole images and their quadrants, (5, D) each."""
        feats = [self.classifier.features(c) for c in quadrant_crops(torch.cat([x, xp]))]  # each (2, D)
        return {"clean": torch.stack([f[0] for f in feats]).cpu(),
                "protected": torch.stack([f[1] for f in feats]).cpu()}

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
            settings=clean_json({k: v for k, v in asdict(self.settings).items()}),
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
        """Means over images (see :func:`fixative.eval.strength_aggregate.aggregate`)."""
        return aggregate(results, self.names, self.conditions())

    def stealth(self, features: Sequence[dict[str, dict]], fpr: float = 0.05) -> dict:
        """The poison detectors on mixes of clean and protected images
        (see :func:`fixative.eval.strength_aggregate.stealth`)."""
        return stealth(features, self.settings.poison_fraction, fpr)
