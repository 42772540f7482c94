"""Loading a target model as a diffusers pipeline (text-to-image or image-to-image), and its dtype.

Folders and hub ids go through diffusers' auto pipelines; single checkpoint files through their
family's ``from_single_file``. Nothing is imported from diffusers until a pipeline is loaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from fixative.errors import ConfigError, FixativeError
from fixative.models.hub import hub_error_detail
from fixative.models.store import ModelStore
from fixative.targets.sources import PipelineSource
from fixative.vocabulary import Precision

log = logging.getLogger(__name__)

PRECISIONS = tuple(p.value for p in Precision)  # the vocabulary fixative.vocabulary.Precision

#: what a pipeline is loaded for: made anchors (text-to-image) or styles (image-to-image)
Task = Literal["text2img", "img2img"]

#: single-file model types (diffusers' ``infer_diffusers_model_type``) -> (text-to-image, image-to-image) classes
_SINGLE_FILE_FAMILIES = {
    "v1": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
    "v2": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
    "xl_base": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
    "playground-v2-5": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
    "sd3": ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"),
    "sd35_medium": ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"),
    "sd35_large": ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"),
    "flux-dev": ("FluxPipeline", "FluxImg2ImgPipeline"),
    "flux-schnell": ("FluxPipeline", "FluxImg2ImgPipeline"),
}


def pipeline_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The generator's dtype: fp32 on the CPU; on a GPU bf16 where native, else fp16 ("auto")."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}", field="precision")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ConfigError("fp16 is for GPUs; use bf16 or fp32 on the CPU", field="precision")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _single_file_classes(path: Path) -> tuple[type, type]:
    """(text-to-image, image-to-image) pipeline classes for a single checkpoint file."""
    import diffusers
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}  # noqa: SIM118
    else:
        from diffusers.loaders.single_file_utils import load_single_file_checkpoint

        shapes = load_single_file_checkpoint(str(path))
    try:
        model_type = infer_diffusers_model_type(shapes)
    except Exception as exc:
        raise FixativeError(f"{path}: cannot tell which model this checkpoint is ({exc})") from exc
    if model_type not in _SINGLE_FILE_FAMILIES:
        raise FixativeError(
            f"{path}: a {model_type!r} checkpoint; single files of SD 1.x/2.x, SDXL, SD3 and FLUX.1 are supported "
            "(use a diffusers pipeline folder or hub id for others)"
        )
    t2i, i2i = _SINGLE_FILE_FAMILIES[model_type]
    return getattr(diffusers, t2i), getattr(diffusers, i2i)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": ...}`` for diffusers versions that renamed ``torch_dtype``, else ``{"torch_dtype": ...}``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (diffusers >= 0.36)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


@contextmanager
def loading_bars(show: bool) -> Iterator[None]:
    """Hide diffusers' and transformers' loading progress bars while loading, unless ``show``."""
    if show:
        yield
        return
    from diffusers.utils import logging as dlog

    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover
        tlog = None
    was = [(m, m.is_progress_bar_enabled()) for m in (dlog, tlog) if m is not None]
    for m, _ in was:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, enabled in was:
            if enabled:
                m.enable_progress_bar()


def _model_index(source: PipelineSource, store: ModelStore) -> dict:
    """The pipeline's ``model_index.json`` (from its folder, or the hub: the cache only when offline)."""
    if source.kind == "folder":
        return json.loads((Path(source.location) / "model_index.json").read_text(encoding="utf-8"))
    from diffusers import DiffusionPipeline

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # huggingface_hub's deprecation notes
            return dict(DiffusionPipeline.load_config(
                source.location, local_files_only=store.offline, cache_dir=str(store.hub_cache)
            ))
    except Exception as exc:
        raise store.not_found(
            source.spec,
            looked_for=(f"{source.spec.lower()}/model_index.json",) if source.short else (),
            hub_repo=source.location,
            how=(f"`hf download {source.location}` where there is network (then copy the Hugging Face cache), or "
                 f"save the pipeline with save_pretrained(DIR) and give that folder as {source.role.name}"),
            detail=hub_error_detail(exc),
        ) from exc


def _load_single_file(source: PipelineSource, task: Task, dtype: torch.dtype, store: ModelStore,
                      progress: bool) -> Any:
    t2i, i2i = _single_file_classes(Path(source.location))
    cls = i2i if task == "img2img" else t2i
    try:
        with loading_bars(progress):
            return cls.from_single_file(source.location, local_files_only=store.offline, **_dtype_kwarg(dtype))
    except Exception as exc:
        raise FixativeError(
            f"cannot load {source.location} as a {cls.__name__}: {exc}. A single file needs its model's configs "
            "from the Hugging Face cache or hub; or pass a diffusers pipeline folder"
        ) from exc


def _load_pretrained(source: PipelineSource, task: Task, dtype: torch.dtype, store: ModelStore,
                     progress: bool) -> Any:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    index = _model_index(source, store)
    kwargs: dict[str, Any] = _dtype_kwarg(dtype)
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if source.kind == "hub":
        kwargs.update(local_files_only=store.offline, cache_dir=str(store.hub_cache))
    else:
        kwargs["local_files_only"] = True
    auto = AutoPipelineForImage2Image if task == "img2img" else AutoPipelineForText2Image
    try:
        with loading_bars(progress):
            return auto.from_pretrained(source.location, **kwargs)
    except ValueError as exc:
        if "AutoPipeline can't find" in str(exc) or "can't find a pipeline" in str(exc).lower():
            need = "an image-to-image (needed for style targets)" if task == "img2img" else "a text-to-image"
            raise FixativeError(
                f"{source.role.name} {source.spec}: {index.get('_class_name', 'this model')} has no {need} pipeline "
                "in diffusers; use SD 1.x/2.x, SDXL, SD3 or FLUX.1"
            ) from exc
        raise FixativeError(f"cannot load the pipeline {source.spec}: {exc}") from exc
    except Exception as exc:
        if source.kind == "hub":
            raise store.not_found(
                source.spec, looked_for=(source.location,), hub_repo=source.location,
                how=f"`hf download {source.location}` where there is network, or pass a local pipeline folder",
                detail=hub_error_detail(exc),
            ) from exc
        raise FixativeError(f"cannot load the pipeline {source.spec} ({source.location}): {exc}") from exc


def load_pipeline(source: PipelineSource, task: Task, *, dtype: torch.dtype, store: ModelStore | None = None,
                  progress: bool = True) -> Any:
    """Load ``source`` as a diffusers pipeline for ``task`` (on the CPU, in ``dtype``).

    Folders and hub ids go through diffusers' ``AutoPipelineForText2Image`` /
    ``AutoPipelineForImage2Image`` (any model family diffusers maps: SD 1.x/2.x, SDXL, SD3,
    FLUX.1, Kandinsky, PixArt, ...); single files through the family's ``from_single_file``.
    The safety checker is not loaded: a target is never shown or published, and a false
    positive would silently make it black.
    """
    store = store or ModelStore()
    if importlib.util.find_spec("transformers") is None:
        raise FixativeError(
            "made targets (a style or an anchor) need the transformers package: pip install 'fixative[targets]'"
        )
    import diffusers

    load = _load_single_file if source.kind == "file" else _load_pretrained
    pipe = load(source, task, dtype, store, progress)
    log.debug("loaded %s from %s (diffusers %s)", type(pipe).__name__, source.location, diffusers.__version__)
    return pipe
