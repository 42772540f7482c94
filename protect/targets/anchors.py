"""Anchor targets (the Nightshade-like concept poison): an image of the anchor concept, at the artwork's shape.

Several candidates are made by text-to-image from ``"a photo of a {anchor}"`` with fixed seeds; the
one best aligned with the prompt under CLIP is kept when a CLIP model is available, else the one
whose latent is nearest the artwork's (the least perturbation reaches it). Candidates depend only on
the artwork's aspect ratio, so they are cached apart and a portfolio of same-shaped images makes
them once. :class:`AnchorTargets` is the part of :class:`~fixative.targets.made.TargetMaker` that
makes them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.files.images import resize_rgb
from fixative.targets.cache import cache_key, image_digest, quantize8
from fixative.targets.generation import MadeTarget, StepCounter, TargetStepCallback, call_pipeline, generation_size
from fixative.targets.sources import PipelineSource

log = logging.getLogger(__name__)

#: the field of the options that names the anchor concept (errors about it carry it)
ANCHOR_FIELD = "target.anchor"


class _Candidates:
    """The anchor candidates of one target: images, how they were made, and the generator if it ran."""

    def __init__(self) -> None:
        self.images: list[Tensor] = []
        self.pipe: Any = None
        self.size: tuple[int, int] | None = None  # the generation size, once the generator ran
        self.made_with: dict | None = None  # the recipe of a cached candidate: how it was generated


class AnchorTargets:
    """Anchor targets, mixed into :class:`~fixative.targets.made.TargetMaker` (whose settings, cache,
    generators and CLIP model it uses)."""

    def anchor_target(self, image: Tensor, anchor: str, *, concept: str | None = None,
                      on_step: TargetStepCallback | None = None) -> MadeTarget:
        """Nightshade-style target: the best of ``candidates`` txt2img images of "a photo of a {anchor}"
        (``on_step``: see :meth:`~fixative.targets.made.TargetMaker.make`; a cached candidate counts as its
        steps done)."""
        s = self.settings
        source = self._source("poison")
        digest = image_digest(image)
        prompt = s.anchor_prompt.format(anchor=anchor)
        seeds = list(range(s.seed, s.seed + s.candidates))
        clip_id = self._clip_id()
        request = {
            "v": 1, "kind": "anchor", "input": digest, "model": source.identity(), "prompt": prompt, "seeds": seeds,
            "guidance": s.guidance, "steps": s.steps, "resolution": s.resolution,
            "negative_prompt": s.negative_prompt, "selection": f"clip:{clip_id}" if clip_id else "latent",
        }
        key = cache_key(request)
        hit = self._cached(key, concept=concept)
        if hit is not None:
            return hit

        h, w = image.shape[-2:]
        made = self._anchor_candidates(source, prompt, seeds, (h, w), StepCounter(on_step, s.steps * len(seeds)))
        scores, by = self._rank_anchors(made.images, image, prompt, source)
        clip = by.startswith("clip")
        best = (max if clip else min)(range(len(seeds)), key=lambda i: scores[i])
        log.info("anchor %r: chose seed %d of %d candidates (%s)", anchor, seeds[best], len(seeds), by)
        target = quantize8(resize_rgb(made.images[best], (h, w)))
        fields = self._model_fields(source, made.pipe)
        if made.pipe is None and made.made_with:  # every candidate came from the cache: say how they were made
            fields.update({k: made.made_with[k] for k in ("pipeline", "scheduler", "device", "dtype")
                           if k in made.made_with})
        recipe = {
            "kind": "anchor", "mode": "poison", "concept": concept, "anchor": anchor, "prompt": prompt,
            "negative_prompt": s.negative_prompt, "seed": seeds[best], "guidance": s.guidance, "steps": s.steps,
            **fields,
            "generation_size": list(made.size or made.images[0].shape[-2:]), "size": [h, w],
            "input_sha256_pixels": digest,
            "candidates": [{"seed": sd, "score": round(float(sc), 6)} for sd, sc in zip(seeds, scores, strict=True)],
            "selection": {"by": by, "rule": "highest CLIP similarity to the prompt" if clip
                          else "smallest mean squared latent distance from the artwork", "chosen_seed": seeds[best]},
        }
        return self._store(key, target, recipe)

    def _anchor_candidates(self, source: PipelineSource, prompt: str, seeds: list[int], shape: tuple[int, int],
                           counter: StepCounter) -> _Candidates:
        """One candidate per seed at the artwork's aspect ratio: from the cache, else generated (and cached)."""
        s = self.settings
        h, w = shape
        g = math.gcd(h, w)
        made = _Candidates()
        for seed in seeds:
            fields = {"v": 1, "kind": "anchor-candidate", "model": source.identity(), "prompt": prompt,
                      "seed": seed, "guidance": s.guidance, "steps": s.steps, "resolution": s.resolution,
                      "negative_prompt": s.negative_prompt, "aspect": [h // g, w // g]}
            ckey = cache_key(fields)
            cached = self.cache.get(ckey) if self.cache is not None else None
            if cached is not None:
                made.images.append(cached[0])
                made.made_with = made.made_with or cached[1]
                counter.advance(s.steps)
                continue
            if made.pipe is None:
                made.pipe = self._pipeline(source, "text2img")
                made.size = generation_size(made.pipe, h, w, s.resolution)
                self._cost_note(made.pipe, "anchor", s.steps, made.size, len(seeds))
            before = counter.done
            img = call_pipeline(
                made.pipe, counter, prompt=prompt, height=made.size[0], width=made.size[1],
                num_inference_steps=s.steps, guidance_scale=s.guidance, negative_prompt=s.negative_prompt,
                generator=torch.Generator("cpu").manual_seed(seed),
            )[:1]
            counter.advance_to(before + s.steps)
            img = quantize8(img)
            if self.cache is not None:
                self.cache.put(ckey, img, {**fields, **self._model_fields(source, made.pipe)})
            made.images.append(img)
        return made

    @torch.no_grad()
    def _rank_anchors(self, candidates: list[Tensor], image: Tensor, prompt: str,
                      source: PipelineSource) -> tuple[list[float], str]:
        """Each candidate's score and what scored it: CLIP similarity to ``prompt`` (higher is better), else the
        mean squared distance from the artwork in the generator's latent space, else in pixels (lower is better)."""
        clip = self._clip_scorer()
        if clip is not None:
            text = clip.text_embeds([prompt])
            sims = torch.cat([clip.image_embeds(c) for c in candidates]) @ text.T
            return [float(v) for v in sims[:, 0]], f"clip:{clip.name}"
        pipe = self._pipeline(source, "text2img")
        vae = getattr(pipe, "vae", None)
        size = tuple(candidates[0].shape[-2:])
        if vae is None:
            ref = resize_rgb(image.float().cpu(), size)
            return [float(F.mse_loss(c, ref)) for c in candidates], "pixels"

        def encode(x: Tensor) -> Tensor:
            x = (x * 2 - 1).to(self.device, next(vae.parameters()).dtype)
            out = vae.encode(x)
            dist = getattr(out, "latent_dist", None)
            return (dist.mean if dist is not None else out.latents).float().cpu()

        ref = encode(resize_rgb(image.float().cpu(), size))
        return [float(F.mse_loss(encode(c), ref)) for c in candidates], f"latent:{source.spec}/vae"
