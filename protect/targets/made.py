"""Made targets: what a protected image's encoding is moved towards, when the user gives no image.

- **cloak** (Glaze-like style cloak): the artwork re-rendered in a distant style by a diffusion
  model's image-to-image pipeline, ``t = img2img(x, style prompt)``.
- **poison** (Nightshade-like concept poison): an image of the *anchor* concept made by the
  text-to-image pipeline from ``"a photo of a {anchor}"``, at the artwork's aspect ratio. Several
  candidates are made with fixed seeds; the one best aligned with the anchor prompt under CLIP is
  kept when a CLIP model is available, else the one whose latent is nearest the artwork's (the
  least perturbation reaches it).
- **immunize** (PhotoGuard/Mist-like): a fixed pattern made by code (:mod:`fixative.targets.patterns`).

Defaults (see :class:`GenerationSettings`), from the Glaze and Nightshade papers (Shan et al.,
USENIX Security 2023; IEEE S&P 2024) where they say, from Stable Diffusion's own defaults where
they do not:

- style: img2img ``strength`` 0.45 (the middle of 0.4-0.5: enough to change brushwork, palette
  and texture while the composition stays, so the target is reachable within a small LPIPS
  budget), ``guidance`` 7.5, 50 scheduler steps (of which ``strength`` x 50 = 22 run), seed 0;
- the automatic style (``style="auto"``) follows Glaze's rule of a target style neither near nor the farthest: the
  built-in styles are ranked by distance from the image (CLIP, else simple image statistics) and
  the one at the 75th percentile (the far end of Glaze's 50-75% band) is taken;
- anchors: prompt ``"a photo of a {anchor}"`` (Nightshade's), 4 candidates with seeds 0-3,
  guidance 7.5, 50 steps, generated at the model's native area (512x512 px for SD 1.5) and the
  artwork's aspect ratio, then resized to the artwork's size.

Made targets are cached on disk (:mod:`fixative.targets.cache`) keyed by the input's pixels and
the generator settings, so re-protecting with another budget reuses them without loading the
generator. Every target comes with a JSON-ready *recipe* (model, prompt, seed, strength, steps,
guidance, size, device, dtype...) for the protected image's record.

The library entry points are :func:`make_target` (one image) and :class:`TargetMaker` (load a
generator once and make targets for a whole portfolio). Nothing is loaded at import time.

The parts, each in its module of :mod:`fixative.targets`: ``sources`` (where a target model is),
``pipelines`` (loading it), ``generation`` (settings, sizes, one pipeline call), ``clip`` (the CLIP
model that ranks), ``styles`` and ``anchors`` (the two kinds of made target); this module holds the
maker that puts them together, and re-exports their public names.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fixative.core.devices import resolve_device
from fixative.errors import ConfigError
from fixative.models.store import ModelStore
from fixative.targets.anchors import ANCHOR_FIELD, AnchorTargets
from fixative.targets.cache import TargetCache, quantize8
from fixative.targets.clip import DEFAULT_CLIP_MODEL, ClipLocation, ClipScorer, find_clip
from fixative.targets.generation import (
    ANCHOR_PROMPT,
    GenerationSettings,
    MadeTarget,
    StepCounter,
    TargetStepCallback,
    call_pipeline,
    generation_size,
)
from fixative.targets.modes import MODES
from fixative.targets.names import DEFAULT_TARGET_MODELS, STYLE_NAMES, STYLES, Style
from fixative.targets.patterns import DEFAULT_PATTERN, DEFAULT_PERIOD, PATTERNS, immunize_pattern
from fixative.targets.pipelines import PRECISIONS, Task, load_pipeline, loading_bars, pipeline_dtype
from fixative.targets.sources import PIPELINE_SHORT_NAMES, PipelineSource, resolve_pipeline
from fixative.targets.styles import (
    AUTO_STYLE_PERCENTILE,
    StyleChoice,
    StyleTargets,
    choose_style,
    image_profile,
    style_prompt,
)

log = logging.getLogger(__name__)

#: below this much free GPU memory (after loading), attention is computed in slices
LOW_GPU_MEMORY_BYTES = 4 << 30


class TargetMaker(StyleTargets, AnchorTargets):
    """Makes targets for any number of images, loading each generator (and CLIP) once, when first needed.

    - ``target_model``: pipeline short name, folder, single file or hub id; None = the default of
      each mode (:data:`DEFAULT_TARGET_MODELS`).
    - ``device``, ``precision``: where and how the generator runs (chosen at run time; fp32 on the
      CPU, bf16/fp16 on a GPU). ``models_dir``: the model store's own folder.
    - ``cache_dir``: the target cache (default: see :mod:`fixative.targets.cache`); ``cache=False``
      makes every target afresh and stores nothing.
    - ``clip_model``: a CLIP folder or hub id to rank anchor candidates (and pick the automatic style);
      None = use :data:`DEFAULT_CLIP_MODEL` if it is already on this machine (model store folder
      ``clip/`` or the Hugging Face cache), else rank by latent distance; ``"none"`` = never.
    - ``settings``: :class:`GenerationSettings`; ``progress``: show diffusers' progress bars.
    """

    def __init__(
        self,
        target_model: str | None = None,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        models_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        cache: bool = True,
        clip_model: str | None = None,
        settings: GenerationSettings | None = None,
        progress: bool = True,
    ) -> None:
        self.target_model = target_model
        self.device = resolve_device(device)
        self.dtype = pipeline_dtype(self.device, precision)
        self.store = ModelStore(models_dir)
        self.cache = TargetCache(cache_dir) if cache else None
        self.clip_model = clip_model
        self.settings = settings or GenerationSettings()
        self.progress = progress
        self._pipes: dict[tuple[str, str], Any] = {}
        self._clip: ClipScorer | None | bool = False  # False: not looked for yet
        self._clip_found: ClipLocation | None | bool = False  # False: not looked for yet
        self._warned_cpu: set[str] = set()

    # --- public ----------------------------------------------------------------------------------

    def make(
        self,
        mode: str,
        image: Tensor,
        *,
        style: str | None = None,
        concept: str | None = None,
        anchor: str | None = None,
        pattern: str = DEFAULT_PATTERN,
        on_step: TargetStepCallback | None = None,
    ) -> MadeTarget:
        """The target for ``image`` (1,3,H,W in [0,1]) in ``mode``: cloak (``style``: a built-in name, free text
        or "auto", the default), poison (``anchor`` required; ``concept`` recorded) or immunize (``pattern``).

        ``on_step(done, total)`` is called after every denoising step of a generated target (not for a cached
        one or a pattern); an exception it raises stops the generation at once and propagates."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ConfigError(f"an image must be a (1, 3, H, W) tensor, not {tuple(image.shape)}")
        if mode == "cloak":
            return self.style_target(image, style or "auto", on_step=on_step)
        if mode == "poison":
            if not anchor or not anchor.strip():
                raise ConfigError("poison mode needs an anchor concept (what the image should teach instead)",
                                  field=ANCHOR_FIELD)
            return self.anchor_target(image, anchor.strip(), concept=concept.strip() if concept else None,
                                      on_step=on_step)
        return self.pattern_target(image, pattern)

    def pattern_target(self, image: Tensor, pattern: str = DEFAULT_PATTERN) -> MadeTarget:
        """The built-in immunize pattern at ``image``'s size (no model, no cache: it is made in milliseconds)."""
        h, w = image.shape[-2:]
        target = immunize_pattern(h, w, pattern)
        recipe = {"kind": "pattern", "mode": "immunize", "pattern": pattern, "size": [h, w],
                  "made_by": "fixative.targets.patterns.immunize_pattern"}
        if pattern != "gray":
            recipe["period"] = DEFAULT_PERIOD
        return MadeTarget(quantize8(target), recipe)

    # --- internals -------------------------------------------------------------------------------

    def _source(self, mode: str) -> PipelineSource:
        return resolve_pipeline(self.target_model or DEFAULT_TARGET_MODELS[mode], self.store)

    def _cached(self, key: str, **overrides: Any) -> MadeTarget | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is None:
            return None
        image, recipe = hit
        recipe = {**recipe, **{k: v for k, v in overrides.items() if k in recipe}}
        recipe["cache"] = {"key": key, "hit": True, "path": str(self.cache.path(key))}
        log.info("target reused from the cache: %s", self.cache.path(key))
        if recipe.get("style_choice"):
            log.info("the automatic style chose '%s' (%s; as when the target was made)", recipe.get("style"),
                     recipe["style_choice"].get("by"))
        return MadeTarget(image, recipe)

    def _store(self, key: str, target: Tensor, recipe: dict) -> MadeTarget:
        if self.cache is not None:
            path = self.cache.put(key, target, recipe)
            recipe = {**recipe, "cache": {"key": key, "hit": False, "path": str(path)}}
        return MadeTarget(target, recipe)

    def _model_fields(self, source: PipelineSource, pipe: Any) -> dict:
        import diffusers

        fields = {"model": source.spec, "model_source": {"kind": source.kind, "location": source.location},
                  "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                  "generator": "torch.Generator('cpu').manual_seed(seed)", "diffusers": diffusers.__version__}
        if pipe is not None:
            fields["pipeline"] = type(pipe).__name__
            fields["scheduler"] = type(pipe.scheduler).__name__ if hasattr(pipe, "scheduler") else None
        return fields

    def _pipeline(self, source: PipelineSource, task: Task) -> Any:
        key = (source.kind + ":" + source.location, task)
        if key in self._pipes:
            return self._pipes[key]
        other = next((p for (loc, _), p in self._pipes.items() if loc == key[0]), None)
        if other is not None:  # the same weights for the other task: share the components
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

            auto = AutoPipelineForImage2Image if task == "img2img" else AutoPipelineForText2Image
            pipe = auto.from_pipe(other)
        else:
            pipe = load_pipeline(source, task, dtype=self.dtype, store=self.store, progress=self.progress)
            pipe = pipe.to(self.device)
            self._fit_memory(pipe)
        pipe.set_progress_bar_config(disable=not self.progress, leave=False)
        self._pipes[key] = pipe
        return pipe

    def _fit_memory(self, pipe: Any) -> None:
        """Attention slicing where memory is short: always on Apple MPS, on CUDA below 4 GiB free."""
        short = self.device.type == "mps"
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            short = free < LOW_GPU_MEMORY_BYTES
            if short:
                log.info("%.1f GiB of GPU memory free: computing attention in slices", free / 2**30)
        if short and hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing()

    def _cost_note(self, pipe: Any, what: str, steps: int, size: tuple[int, int], images: int) -> None:
        """One clear message, once per kind of target, when generation is going to run on the CPU."""
        if self.device.type != "cpu" or what in self._warned_cpu:
            return
        self._warned_cpu.add(what)
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        params = sum(p.numel() for p in denoiser.parameters()) if denoiser is not None else 0
        where = f" (cached in {self.cache.root}, so re-protecting reuses it)" if self.cache is not None else ""
        log.warning(
            "making %s targets on the CPU: %d image(s) of %d denoising steps of a %.3gM-parameter model at %dx%d px "
            "for each new artwork%s. With a full-size model this takes minutes per image; a GPU "
            "(device cuda or mps) takes seconds.",
            what, images, steps, params / 1e6, size[1], size[0], where,
        )

    def _clip_where(self) -> ClipLocation | None:
        """Where the CLIP model to use is, or None (looked for once, without loading it)."""
        if self._clip_found is False:
            self._clip_found = find_clip(self.clip_model, self.store)
        return self._clip_found  # type: ignore[return-value]

    def _clip_id(self) -> str | None:
        where = self._clip_where()
        return where.name if where else None

    def _clip_scorer(self) -> ClipScorer | None:
        if self._clip is False:
            where = self._clip_where()
            self._clip = None
            if where is not None:
                with loading_bars(self.progress):
                    self._clip = ClipScorer.load(where.location, where.name, local_only=where.local_only,
                                                 cache_dir=str(self.store.hub_cache), device=self.device)
        return self._clip  # type: ignore[return-value]



def make_target(
    mode: str,
    image: Tensor,
    *,
    style: str | None = None,
    concept: str | None = None,
    anchor: str | None = None,
    pattern: str = DEFAULT_PATTERN,
    target_model: str | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    models_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    clip_model: str | None = None,
    settings: GenerationSettings | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> MadeTarget:
    """One made target for ``image`` (see :class:`TargetMaker`; use that to keep models loaded over many images).

    ``seed`` overrides ``settings.seed``. Returns :class:`MadeTarget` ``(image, recipe)``.
    """
    settings = settings or GenerationSettings()
    if seed is not None:
        settings = GenerationSettings(**{**asdict(settings), "seed": seed})
    maker = TargetMaker(target_model, device=device, precision=precision, models_dir=models_dir,
                        cache_dir=cache_dir, cache=cache, clip_model=clip_model, settings=settings,
                        progress=progress)
    return maker.make(mode, image, style=style, concept=concept, anchor=anchor, pattern=pattern)


__all__ = [
    "ANCHOR_PROMPT", "AUTO_STYLE_PERCENTILE", "DEFAULT_CLIP_MODEL", "DEFAULT_TARGET_MODELS", "LOW_GPU_MEMORY_BYTES",
    "MODES", "PATTERNS", "PIPELINE_SHORT_NAMES", "PRECISIONS", "STYLES", "STYLE_NAMES", "ClipScorer",
    "GenerationSettings", "MadeTarget", "PipelineSource", "TargetStepCallback", "StepCounter", "Style", "StyleChoice",
    "TargetMaker", "call_pipeline", "choose_style", "generation_size", "image_profile", "load_pipeline",
    "make_target", "pipeline_dtype", "resolve_pipeline", "style_prompt",
]
