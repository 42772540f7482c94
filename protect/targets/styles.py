"""Style targets (the Glaze-like cloak): the artwork re-rendered by img2img in a distant style.

- :func:`style_prompt`: a style as a built-in name or free text; :func:`choose_style`: the automatic
  style, Glaze's rule of a target style neither near nor the farthest (the 75th percentile of
  distance, by CLIP or by :func:`image_profile`).
- :class:`StyleTargets`: the part of :class:`~fixative.targets.made.TargetMaker` that makes them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.errors import ConfigError
from fixative.files.images import resize_rgb
from fixative.targets.cache import cache_key, image_digest, quantize8
from fixative.targets.generation import (
    MadeTarget,
    StepCounter,
    TargetStepCallback,
    call_pipeline,
    generation_size,
)
from fixative.targets.names import STYLES

if TYPE_CHECKING:
    from fixative.targets.clip import ClipScorer

log = logging.getLogger(__name__)

#: the automatic style is the built-in style at this percentile of distance from the image (Glaze: 50-75%)
AUTO_STYLE_PERCENTILE = 0.75
#: the field of the options that names the style (errors about it carry it)
STYLE_FIELD = "target.style"

_STYLES_BY_NAME = {s.name: s for s in STYLES}


def style_prompt(style: str) -> tuple[str | None, str]:
    """``(built-in name or None, prompt)`` for a style: a built-in name, or free text."""
    text = style.strip()
    if not text:
        raise ConfigError("the style is empty: give a built-in name, 'auto', or a description", field=STYLE_FIELD)
    builtin = _STYLES_BY_NAME.get(text.lower())
    return (builtin.name, builtin.prompt) if builtin else (None, text)


def image_profile(rgb: Tensor) -> tuple[float, float, float, float]:
    """(saturation, brightness, contrast, detail) of a (1,3,H,W) [0,1] image, each 0-1.

    Saturation: mean HSV saturation; brightness: mean luma; contrast: 2 x the luma's standard
    deviation; detail: 10 x the mean absolute luma gradient; all clipped to [0, 1]. Computed on
    a copy at most 256 px on its long side.
    """
    x = rgb.detach().float().cpu()[:1].clamp(0, 1)
    h, w = x.shape[-2:]
    if max(h, w) > 256:
        s = 256 / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    mx, mn = x.amax(1), x.amin(1)
    sat = ((mx - mn) / mx.clamp_min(1e-6)).mean()
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    grads = []
    if luma.shape[-1] > 1:
        grads.append((luma[..., 1:] - luma[..., :-1]).abs().mean())
    if luma.shape[-2] > 1:
        grads.append((luma[..., 1:, :] - luma[..., :-1, :]).abs().mean())
    detail = torch.stack(grads).mean() * 10 if grads else torch.tensor(0.0)
    vals = (sat, luma.mean(), luma.std(unbiased=False) * 2, detail)
    return tuple(round(float(v.clamp(0, 1)), 4) for v in vals)  # type: ignore[return-value]


@dataclass
class StyleChoice:
    """What the automatic style chose and why: ``distances`` from the image(s) to every built-in style."""

    name: str
    prompt: str
    by: str  # "clip:<model>" or "image statistics"
    distances: dict[str, float]

    def describe(self) -> str:
        ranked = sorted(self.distances, key=self.distances.get)
        return (f"'{self.name}' (by {self.by}: {ranked.index(self.name) + 1}th nearest of {len(ranked)} built-in "
                f"styles; the nearest is '{ranked[0]}', the farthest '{ranked[-1]}')")


def _pick_in_band(distances: dict[str, float]) -> str:
    ranked = sorted(distances, key=lambda n: (distances[n], n))
    return ranked[math.floor(AUTO_STYLE_PERCENTILE * (len(ranked) - 1))]


def choose_style(images: Iterable[Tensor], clip: ClipScorer | None = None) -> StyleChoice:
    """Pick a built-in style distant from ``images`` (one artwork, or a whole portfolio).

    Glaze picks one target style per artist, so for a portfolio pass all its images: their
    mean is compared with each style. With ``clip``, distances are 1 - cosine between the
    images' mean CLIP embedding and each style prompt's; without, Euclidean distances between
    :func:`image_profile` and each style's hand-set profile. The style at the 75th percentile of
    distance is chosen (see :mod:`fixative.targets.made`).
    """
    images = list(images)
    if not images:
        raise ConfigError("choose_style needs at least one image")
    if clip is not None:
        emb = torch.cat([clip.image_embeds(img) for img in images]).mean(0, keepdim=True)
        emb = F.normalize(emb, dim=-1)
        texts = clip.text_embeds([s.prompt for s in STYLES])
        sims = (emb @ texts.T)[0]
        distances = {s.name: round(1 - float(v), 5) for s, v in zip(STYLES, sims, strict=True)}
        by = f"clip:{clip.name}"
    else:
        profiles = torch.tensor([image_profile(img) for img in images]).mean(0)
        distances = {s.name: round(float(torch.dist(profiles, torch.tensor(s.profile))), 5) for s in STYLES}
        by = "image statistics"
    name = _pick_in_band(distances)
    return StyleChoice(name, _STYLES_BY_NAME[name].prompt, by, distances)


class StyleTargets:
    """Style targets, mixed into :class:`~fixative.targets.made.TargetMaker` (whose settings, cache,
    generators and CLIP model it uses)."""

    def choose_style(self, images: Iterable[Tensor]) -> StyleChoice:
        """Pick a built-in style distant from ``images`` (CLIP when available); see :func:`choose_style`."""
        return choose_style(images, self._clip_scorer())

    def style_target(self, image: Tensor, style: str = "auto", on_step: TargetStepCallback | None = None) -> MadeTarget:
        """Glaze-style target: ``image`` re-rendered by img2img with the style's prompt (``on_step``: see
        :meth:`~fixative.targets.made.TargetMaker.make`)."""
        source = self._source("cloak")
        digest = image_digest(image)
        auto = style.strip().lower() == "auto"
        key = cache_key(self._style_request(digest, source, style, auto))
        hit = self._cached(key)
        if hit is not None:
            return hit

        choice = None
        if auto:
            choice = self.choose_style([image])
            name, prompt = choice.name, choice.prompt
            log.info("the automatic style chose %s", choice.describe())
        else:
            name, prompt = style_prompt(style)
        target, recipe = self._restyle(image, prompt, source, on_step)
        recipe = {"kind": "style", "mode": "cloak", "style": name, "prompt": prompt, **recipe,
                  "input_sha256_pixels": digest}
        if choice is not None:
            recipe["style_choice"] = {"auto": True, "by": choice.by, "distances": choice.distances}
        return self._store(key, target, recipe)

    def _style_request(self, digest: str, source: Any, style: str, auto: bool) -> dict[str, Any]:
        """What a style target depends on (its cache key's fields)."""
        s = self.settings
        request: dict[str, Any] = {
            "v": 1, "kind": "style", "input": digest, "model": source.identity(), "strength": s.strength,
            "guidance": s.guidance, "steps": s.steps, "seed": s.seed, "resolution": s.resolution,
            "negative_prompt": s.negative_prompt,
        }
        request["style"] = {"auto": self._clip_id() or "image statistics"} if auto else style_prompt(style)[1]
        return request

    def _restyle(self, image: Tensor, prompt: str, source: Any,
                 on_step: TargetStepCallback | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Run img2img on ``image`` with ``prompt``: the target at the image's size, and how it was made."""
        s = self.settings
        pipe = self._pipeline(source, "img2img")
        h, w = image.shape[-2:]
        gh, gw = generation_size(pipe, h, w, s.resolution)
        denoising = max(1, int(s.steps * s.strength))  # img2img runs the last `strength` of the schedule
        self._cost_note(pipe, "style", denoising, (gh, gw), 1)
        counter = StepCounter(on_step, denoising)
        images = call_pipeline(
            pipe, counter, prompt=prompt,
            image=resize_rgb(image.float().cpu().clamp(0, 1), (gh, gw)), strength=s.strength,
            num_inference_steps=s.steps, guidance_scale=s.guidance, negative_prompt=s.negative_prompt,
            generator=torch.Generator("cpu").manual_seed(s.seed),
        )
        counter.advance_to(denoising)
        recipe = {
            "negative_prompt": s.negative_prompt, "seed": s.seed, "strength": s.strength,
            "guidance": s.guidance, "steps": s.steps, **self._model_fields(source, pipe),
            "generation_size": [gh, gw], "size": [h, w],
        }
        return quantize8(resize_rgb(images[:1], (h, w))), recipe
