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
- ``--style auto`` follows Glaze's rule of a target style neither near nor the farthest: the
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
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.core.devices import resolve_device
from fixative.errors import ConfigError, FixativeError
from fixative.models.store import ModelStore
from fixative.targets.cache import TargetCache, cache_key, image_digest, quantize8
from fixative.targets.names import DEFAULT_TARGET_MODELS, STYLE_NAMES, STYLES, Style  # noqa: F401 (re-exported)
from fixative.targets.patterns import DEFAULT_PATTERN, DEFAULT_PERIOD, PATTERNS, immunize_pattern

log = logging.getLogger(__name__)

MODES = ("cloak", "poison", "immunize")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: pipeline short names for ``--target-model``: a folder of that name in the model store, else the hub repo
PIPELINE_SHORT_NAMES: dict[str, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
#: the CLIP model looked for (locally only, never downloaded unasked) to rank anchor candidates
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
#: Nightshade's prompt for anchor images
ANCHOR_PROMPT = "a photo of a {anchor}"
#: --style auto takes the built-in style at this percentile of distance from the image (Glaze: 50-75%)
AUTO_STYLE_PERCENTILE = 0.75

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: below this much free GPU memory (after loading), attention is computed in slices
LOW_GPU_MEMORY_BYTES = 4 << 30


# ---------------------------------------------------------------------------------------------
# styles

_STYLES_BY_NAME = {s.name: s for s in STYLES}


def style_prompt(style: str) -> tuple[str | None, str]:
    """``(built-in name or None, prompt)`` for a ``--style`` value: a built-in name, or free text."""
    text = style.strip()
    if not text:
        raise ConfigError("--style needs a style: a built-in name, 'auto', or a description")
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
    """What ``--style auto`` chose and why: ``distances`` from the image(s) to every built-in style."""

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
    distance is chosen (see the module docs).
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


# ---------------------------------------------------------------------------------------------
# settings and results


@dataclass(frozen=True)
class GenerationSettings:
    """How targets are generated (defaults from Glaze/Nightshade, see the module docs).

    - ``strength``: img2img strength for style targets (0 = the artwork unchanged, 1 = ignore it).
    - ``guidance``: classifier-free guidance scale; ``steps``: scheduler steps.
    - ``seed``: the style target's seed, and the first anchor candidate's (then seed+1, ...).
    - ``candidates``: anchor images made per anchor; ``anchor_prompt``: with ``{anchor}``.
    - ``resolution``: side of the square whose area targets are generated at (aspect ratio
      kept); None = the model's native size (512 for SD 1.5, 1024 for SDXL).
    - ``negative_prompt``: passed where the pipeline takes one; None = none.
    """

    strength: float = 0.45
    guidance: float = 7.5
    steps: int = 50
    seed: int = 0
    candidates: int = 4
    anchor_prompt: str = ANCHOR_PROMPT
    resolution: int | None = None
    negative_prompt: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.strength <= 1:
            raise ConfigError(f"img2img strength must be in (0, 1], not {self.strength}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, not {self.steps}")
        if self.candidates < 1:
            raise ConfigError(f"candidates must be at least 1, not {self.candidates}")
        if "{anchor}" not in self.anchor_prompt:
            raise ConfigError(f"anchor_prompt must contain '{{anchor}}': {self.anchor_prompt!r}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"resolution must be at least 8 px, not {self.resolution}")
        if self.steps * self.strength < 1:
            raise ConfigError(f"steps x strength must be at least 1 (got {self.steps} x {self.strength})")


class MadeTarget(NamedTuple):
    """A made target: ``image`` (1,3,H,W) float32 in [0,1] at the artwork's size, on the 8-bit grid,
    on the CPU; ``recipe``, JSON-ready, for the protected image's record. Unpacks as a pair."""

    image: Tensor
    recipe: dict


# ---------------------------------------------------------------------------------------------
# generator models


@dataclass(frozen=True)
class PipelineSource:
    """Where a ``--target-model`` is: a diffusers pipeline folder, a single checkpoint file, or a hub repo."""

    spec: str
    kind: Literal["folder", "file", "hub"]
    location: str

    def identity(self) -> dict:
        """What identifies the weights, for cache keys, without reading them.

        A folder or file: its absolute path plus the size and modification time of its files
        (a replaced model makes new targets); a hub repo: its id.
        """
        if self.kind == "hub":
            return {"hub": self.location}
        path = Path(self.location)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in files:
            st = p.stat()
            digest.update(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {self.kind: str(path), "files": digest.hexdigest()[:16]}


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", "\\")) or spec.lower().endswith(_SINGLE_FILE_SUFFIXES)


def _source_for_path(spec: str, path: Path, option: str = "--target-model") -> PipelineSource:
    path = path.resolve()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ConfigError(
                f"{option} {spec}: {path} is not a diffusers pipeline folder (no model_index.json); "
                "save one with pipeline.save_pretrained(DIR), or give a hub id or a single checkpoint file"
            )
        return PipelineSource(spec, "folder", str(path))
    if path.suffix.lower() not in _SINGLE_FILE_SUFFIXES:
        kinds = ", ".join(_SINGLE_FILE_SUFFIXES)
        raise ConfigError(f"{option} {spec}: {path} is not a checkpoint file ({kinds})")
    return PipelineSource(spec, "file", str(path))


def resolve_pipeline(spec: str, store: ModelStore | None = None, option: str = "--target-model") -> PipelineSource:
    """Where ``spec``'s pipeline is, without loading it.

    Order: a short name (``sd15``, ``sd21``, ``sdxl``: a pipeline folder of that name in the model
    store, else its hub repo); an existing folder or file; a folder or file in the model store;
    a hub id (``org/name``). ``option``: the command-line flag that error messages name.
    """
    store = store or ModelStore()
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"{option} was given an empty value")
    short = PIPELINE_SHORT_NAMES.get(spec.lower())
    if short is not None:
        local = store.find(spec.lower())
        if local is not None and (local / "model_index.json").is_file():
            return PipelineSource(spec, "folder", str(local.resolve()))
        return PipelineSource(spec, "hub", short)
    path = Path(spec).expanduser()
    if path.exists():
        return _source_for_path(spec, path, option)
    found = store.find(spec)
    if found is not None:
        return _source_for_path(spec, found, option)
    if _HUB_ID.match(spec) and not _looks_like_path(spec):
        return PipelineSource(spec, "hub", spec)
    raise store.not_found(
        spec,
        looked_for=(spec,),
        how=("pass a diffusers pipeline folder (saved with save_pretrained), a single checkpoint file, a Hugging "
             f"Face repo id (org/name), or a short name: {', '.join(PIPELINE_SHORT_NAMES)}"),
    )


def pipeline_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The generator's dtype: fp32 on the CPU; on a GPU bf16 where native, else fp16 ("auto")."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ConfigError("fp16 is for GPUs; use bf16 or fp32 on the CPU")
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
    families = {
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
    if model_type not in families:
        raise FixativeError(
            f"{path}: a {model_type!r} checkpoint; single files of SD 1.x/2.x, SDXL, SD3 and FLUX.1 are supported "
            "(use a diffusers pipeline folder or hub id for others)"
        )
    t2i, i2i = families[model_type]
    return getattr(diffusers, t2i), getattr(diffusers, i2i)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": ...}`` for diffusers versions that renamed ``torch_dtype``, else ``{"torch_dtype": ...}``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (diffusers >= 0.36)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


@contextmanager
def _loading_bars(show: bool) -> Iterator[None]:
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


def _model_index(source: PipelineSource, store: ModelStore, option: str = "--target-model") -> dict:
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
        short = source.spec.lower() in PIPELINE_SHORT_NAMES
        raise store.not_found(
            source.spec,
            looked_for=(f"{source.spec.lower()}/model_index.json",) if short else (),
            hub_repo=source.location,
            how=(f"`hf download {source.location}` where there is network (then copy the Hugging Face cache), or "
                 f"save the pipeline with save_pretrained(DIR) and pass {option} DIR"),
            detail=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        ) from exc


def load_pipeline(source: PipelineSource, task: Literal["text2img", "img2img"], *, dtype: torch.dtype,
                  store: ModelStore | None = None, progress: bool = True, option: str = "--target-model") -> Any:
    """Load ``source`` as a diffusers pipeline for ``task`` (on the CPU, in ``dtype``).

    Folders and hub ids go through diffusers' ``AutoPipelineForText2Image`` /
    ``AutoPipelineForImage2Image`` (any model family diffusers maps: SD 1.x/2.x, SDXL, SD3,
    FLUX.1, Kandinsky, PixArt, ...); single files through the family's ``from_single_file``.
    The safety checker is not loaded: a target is never shown or published, and a false
    positive would silently make it black. ``option``: the flag named in error messages.
    """
    store = store or ModelStore()
    if importlib.util.find_spec("transformers") is None:
        raise FixativeError(
            "made targets (--style, --anchor) need the transformers package: pip install 'fixative[targets]'"
        )
    import diffusers
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    if source.kind == "file":
        t2i, i2i = _single_file_classes(Path(source.location))
        cls = i2i if task == "img2img" else t2i
        try:
            with _loading_bars(progress):
                return cls.from_single_file(source.location, local_files_only=store.offline, **_dtype_kwarg(dtype))
        except Exception as exc:
            raise FixativeError(
                f"cannot load {source.location} as a {cls.__name__}: {exc}. A single file needs its model's configs "
                "from the Hugging Face cache or hub; or pass a diffusers pipeline folder"
            ) from exc

    index = _model_index(source, store, option)
    kwargs: dict[str, Any] = _dtype_kwarg(dtype)
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if source.kind == "hub":
        kwargs.update(local_files_only=store.offline, cache_dir=str(store.hub_cache))
    else:
        kwargs["local_files_only"] = True
    auto = AutoPipelineForImage2Image if task == "img2img" else AutoPipelineForText2Image
    try:
        with _loading_bars(progress):
            pipe = auto.from_pretrained(source.location, **kwargs)
    except ValueError as exc:
        if "AutoPipeline can't find" in str(exc) or "can't find a pipeline" in str(exc).lower():
            need = "an image-to-image (needed for style targets)" if task == "img2img" else "a text-to-image"
            raise FixativeError(
                f"{option} {source.spec}: {index.get('_class_name', 'this model')} has no {need} pipeline "
                "in diffusers; use SD 1.x/2.x, SDXL, SD3 or FLUX.1"
            ) from exc
        raise FixativeError(f"cannot load the pipeline {source.spec}: {exc}") from exc
    except Exception as exc:
        if source.kind == "hub":
            raise store.not_found(
                source.spec, looked_for=(source.location,), hub_repo=source.location,
                how=f"`hf download {source.location}` where there is network, or pass a local pipeline folder",
                detail=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            ) from exc
        raise FixativeError(f"cannot load the pipeline {source.spec} ({source.location}): {exc}") from exc
    log.debug("loaded %s from %s (diffusers %s)", type(pipe).__name__, source.location, diffusers.__version__)
    return pipe


def generation_size(pipe: Any, height: int, width: int, resolution: int | None = None) -> tuple[int, int]:
    """(h, w) at which ``pipe`` generates a target for a ``height`` x ``width`` artwork.

    The area of a ``resolution``-sided square (default: the model's native size), the artwork's
    aspect ratio, each side a multiple of what the model needs (64 px for SD: 8 for the VAE x 8
    for the UNet's downsampling).
    """
    vsf = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    cfg = getattr(denoiser, "config", None)
    if resolution is None:
        sample = getattr(pipe, "default_sample_size", None) or getattr(cfg, "sample_size", None)
        if isinstance(sample, (list, tuple)):
            sample = sample[0]
        resolution = int(sample) * vsf if sample else 512
    if getattr(pipe, "unet", None) is not None:
        multiple = vsf * 2 ** (len(cfg.block_out_channels) - 1)
    else:
        multiple = vsf * int(getattr(cfg, "patch_size", 2) or 2)
    multiple = math.lcm(multiple, 8)  # pipelines check that sides are multiples of 8
    scale = resolution / math.sqrt(height * width)
    gh = max(multiple, round(height * scale / multiple) * multiple)
    gw = max(multiple, round(width * scale / multiple) * multiple)
    return gh, gw


def _resize(img: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# CLIP


class ClipScorer:
    """A frozen CLIP model (vision + text) giving unit-norm embeddings of [0,1] images and of texts."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str, *, size: int,
                 mean: Sequence[float] = _OPENAI_CLIP_MEAN, std: Sequence[float] = _OPENAI_CLIP_STD) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @classmethod
    def load(cls, location: str, name: str, *, local_only: bool, cache_dir: str | None = None,
             device: torch.device | str = "cpu") -> ClipScorer:
        """Load a transformers ``CLIPModel`` and its tokenizer from a folder or hub id."""
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as exc:  # pragma: no cover - transformers is installed with diffusers' pipelines
            raise FixativeError(f"CLIP needs the transformers package ({exc})") from exc
        try:
            model = CLIPModel.from_pretrained(location, local_files_only=local_only, cache_dir=cache_dir)
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only, cache_dir=cache_dir)
        except Exception as exc:
            raise FixativeError(f"cannot load the CLIP model {name!r} from {location}: {exc}") from exc
        mean, std = _OPENAI_CLIP_MEAN, _OPENAI_CLIP_STD
        try:
            from transformers import CLIPImageProcessor

            proc = CLIPImageProcessor.from_pretrained(location, local_files_only=local_only, cache_dir=cache_dir)
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
        except Exception:  # no preprocessor_config.json: OpenAI's constants
            pass
        return cls(model.to(device), tokenizer, name, size=int(model.config.vision_config.image_size),
                   mean=mean, std=std)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeds(self, images: Tensor) -> Tensor:
        """(N,3,H,W) [0,1] -> (N,D) unit vectors; resized (short side) and centre-cropped to the model's size."""
        x = images.detach().float().cpu()
        h, w = x.shape[-2:]
        s = self.size / min(h, w)
        x = _resize(x, (max(self.size, round(h * s)), max(self.size, round(w * s))))
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]
        x = ((x - self.mean) / self.std).to(self.device)
        feats = self.model.get_image_features(pixel_values=x)
        feats = getattr(feats, "pooler_output", feats)
        return F.normalize(feats.float().cpu(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> Tensor:
        """Texts -> (N,D) unit vectors."""
        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        feats = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})
        feats = getattr(feats, "pooler_output", feats)
        return F.normalize(feats.float().cpu(), dim=-1)


# ---------------------------------------------------------------------------------------------
# the maker


#: ``on_step(done, total)``: called after each denoising step of a target's generation; it may raise to stop it
StepCallback = Callable[[int, int], None]


class _StepCounter:
    """Counts the denoising steps of one target over its generator calls and reports them as (done, total).

    Passed to diffusers as ``callback_on_step_end``, so an exception raised by ``on_step`` (a cancel)
    leaves the pipeline at once, mid-generation.
    """

    def __init__(self, on_step: StepCallback | None, total: int) -> None:
        self.on_step, self.total, self.done = on_step, max(1, total), 0

    def advance(self, steps: int = 1) -> None:
        if steps <= 0:
            return
        self.done = min(self.total, self.done + steps)
        if self.on_step is not None:
            self.on_step(self.done, self.total)

    def advance_to(self, done: int) -> None:
        """Report every step up to ``done`` (after a call whose pipeline ran fewer steps or reported none)."""
        self.advance(done - self.done)

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        self.advance()
        return callback_kwargs


def _call_pipeline(pipe: Any, counter: _StepCounter | None = None, **kwargs: Any) -> Tensor:
    """Call ``pipe`` with the keyword arguments it accepts; return images as (N,3,H,W) float32 CPU [0,1].

    ``counter`` is called after every denoising step (where the pipeline takes ``callback_on_step_end``).
    """
    if counter is not None:
        kwargs["callback_on_step_end"] = counter
    params = inspect.signature(pipe.__call__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params and v is not None}
    out = pipe(output_type="pt", **kwargs)
    images = out.images if hasattr(out, "images") else out[0]
    images = torch.as_tensor(images).float().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.shape[-1] == 3 and images.shape[1] != 3:  # NHWC
        images = images.permute(0, 3, 1, 2)
    if not torch.isfinite(images).all():
        raise FixativeError(
            f"{type(pipe).__name__} produced NaN/inf pixels (a known fp16 overflow of some VAEs); "
            "rerun with --precision fp32 (or bf16)"
        )
    return images.clamp(0, 1).contiguous()


class TargetMaker:
    """Makes targets for any number of images, loading each generator (and CLIP) once, when first needed.

    - ``target_model``: pipeline short name, folder, single file or hub id; None = the default of
      each mode (:data:`DEFAULT_TARGET_MODELS`).
    - ``device``, ``precision``: where and how the generator runs (chosen at run time; fp32 on the
      CPU, bf16/fp16 on a GPU). ``models_dir``: the model store's ``--models-dir``.
    - ``cache_dir``: the target cache (default: see :mod:`fixative.targets.cache`); ``cache=False``
      makes every target afresh and stores nothing.
    - ``clip_model``: a CLIP folder or hub id to rank anchor candidates (and pick ``--style auto``);
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
        self._clip_found: tuple[str, str, bool] | None | bool = False  # False: not looked for yet
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
        on_step: StepCallback | None = None,
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
                raise ConfigError("--mode poison needs --anchor CONCEPT (what the image should teach instead)")
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

    def choose_style(self, images: Iterable[Tensor]) -> StyleChoice:
        """Pick a built-in style distant from ``images`` (CLIP when available); see :func:`choose_style`."""
        return choose_style(images, self._clip_scorer())

    def style_target(self, image: Tensor, style: str = "auto", on_step: StepCallback | None = None) -> MadeTarget:
        """Glaze-style target: ``image`` re-rendered by img2img with the style's prompt (``on_step``: see
        :meth:`make`)."""
        s = self.settings
        source = self._source("cloak")
        digest = image_digest(image)
        auto = style.strip().lower() == "auto"
        request: dict[str, Any] = {
            "v": 1, "kind": "style", "input": digest, "model": source.identity(), "strength": s.strength,
            "guidance": s.guidance, "steps": s.steps, "seed": s.seed, "resolution": s.resolution,
            "negative_prompt": s.negative_prompt,
        }
        if auto:
            request["style"] = {"auto": self._clip_id() or "image statistics"}
        else:
            request["style"] = style_prompt(style)[1]
        key = cache_key(request)
        hit = self._cached(key)
        if hit is not None:
            return hit

        choice = None
        if auto:
            choice = self.choose_style([image])
            name, prompt = choice.name, choice.prompt
            log.info("--style auto chose %s", choice.describe())
        else:
            name, prompt = style_prompt(style)
        pipe = self._pipeline(source, "img2img")
        h, w = image.shape[-2:]
        gh, gw = generation_size(pipe, h, w, s.resolution)
        denoising = max(1, int(s.steps * s.strength))  # img2img runs the last `strength` of the schedule
        self._cost_note(pipe, "style", denoising, (gh, gw), 1)
        counter = _StepCounter(on_step, denoising)
        images = _call_pipeline(
            pipe, counter, prompt=prompt,
            image=_resize(image.float().cpu().clamp(0, 1), (gh, gw)), strength=s.strength,
            num_inference_steps=s.steps, guidance_scale=s.guidance, negative_prompt=s.negative_prompt,
            generator=torch.Generator("cpu").manual_seed(s.seed),
        )
        counter.advance_to(denoising)
        target = quantize8(_resize(images[:1], (h, w)))
        recipe = {
            "kind": "style", "mode": "cloak", "style": name, "prompt": prompt,
            "negative_prompt": s.negative_prompt, "seed": s.seed, "strength": s.strength,
            "guidance": s.guidance, "steps": s.steps, **self._model_fields(source, pipe),
            "generation_size": [gh, gw], "size": [h, w], "input_sha256_pixels": digest,
        }
        if choice is not None:
            recipe["style_choice"] = {"auto": True, "by": choice.by, "distances": choice.distances}
        return self._store(key, target, recipe)

    def anchor_target(self, image: Tensor, anchor: str, *, concept: str | None = None,
                      on_step: StepCallback | None = None) -> MadeTarget:
        """Nightshade-style target: the best of ``candidates`` txt2img images of "a photo of a {anchor}"
        (``on_step``: see :meth:`make`; a cached candidate counts as its steps done)."""
        s = self.settings
        source = self._source("poison")
        digest = image_digest(image)
        prompt = s.anchor_prompt.format(anchor=anchor)
        seeds = list(range(s.seed, s.seed + s.candidates))
        clip_id = self._clip_id()
        selection = f"clip:{clip_id}" if clip_id else "latent"
        request = {
            "v": 1, "kind": "anchor", "input": digest, "model": source.identity(), "prompt": prompt, "seeds": seeds,
            "guidance": s.guidance, "steps": s.steps, "resolution": s.resolution,
            "negative_prompt": s.negative_prompt, "selection": selection,
        }
        key = cache_key(request)
        hit = self._cached(key, concept=concept)
        if hit is not None:
            return hit

        h, w = image.shape[-2:]
        g = math.gcd(h, w)
        pipe = None
        gen: tuple[int, int] | None = None
        candidates: list[Tensor] = []
        made_with: dict | None = None  # the recipe of a cached candidate: how it was generated
        counter = _StepCounter(on_step, s.steps * len(seeds))
        for seed in seeds:
            # candidates do not depend on the artwork, only on its aspect ratio: cached apart, so that a
            # portfolio of same-shaped images generates them once
            ckey_fields = {"v": 1, "kind": "anchor-candidate", "model": source.identity(), "prompt": prompt,
                           "seed": seed, "guidance": s.guidance, "steps": s.steps, "resolution": s.resolution,
                           "negative_prompt": s.negative_prompt, "aspect": [h // g, w // g]}
            ckey = cache_key(ckey_fields)
            cached = self.cache.get(ckey) if self.cache is not None else None
            if cached is not None:
                candidates.append(cached[0])
                made_with = made_with or cached[1]
                counter.advance(s.steps)
                continue
            if pipe is None:
                pipe = self._pipeline(source, "text2img")
                gen = generation_size(pipe, h, w, s.resolution)
                self._cost_note(pipe, "anchor", s.steps, gen, len(seeds))
            before = counter.done
            img = _call_pipeline(
                pipe, counter, prompt=prompt, height=gen[0], width=gen[1], num_inference_steps=s.steps,
                guidance_scale=s.guidance, negative_prompt=s.negative_prompt,
                generator=torch.Generator("cpu").manual_seed(seed),
            )[:1]
            counter.advance_to(before + s.steps)
            img = quantize8(img)
            if self.cache is not None:
                self.cache.put(ckey, img, {**ckey_fields, **self._model_fields(source, pipe)})
            candidates.append(img)
        gen = gen or tuple(candidates[0].shape[-2:])

        scores, by = self._rank_anchors(candidates, image, prompt, source)
        best = max(range(len(seeds)), key=lambda i: scores[i]) if by.startswith("clip") else \
            min(range(len(seeds)), key=lambda i: scores[i])
        log.info("anchor %r: chose seed %d of %d candidates (%s)", anchor, seeds[best], len(seeds), by)
        target = quantize8(_resize(candidates[best], (h, w)))
        fields = self._model_fields(source, pipe)
        if pipe is None and made_with:  # every candidate came from the cache: say how they were made
            fields.update({k: made_with[k] for k in ("pipeline", "scheduler", "device", "dtype") if k in made_with})
        recipe = {
            "kind": "anchor", "mode": "poison", "concept": concept, "anchor": anchor, "prompt": prompt,
            "negative_prompt": s.negative_prompt, "seed": seeds[best], "guidance": s.guidance, "steps": s.steps,
            **fields,
            "generation_size": list(gen), "size": [h, w], "input_sha256_pixels": digest,
            "candidates": [{"seed": sd, "score": round(float(sc), 6)} for sd, sc in zip(seeds, scores, strict=True)],
            "selection": {"by": by, "rule": "highest CLIP similarity to the prompt" if by.startswith("clip")
                          else "smallest mean squared latent distance from the artwork", "chosen_seed": seeds[best]},
        }
        return self._store(key, target, recipe)

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
            log.info("--style auto chose '%s' (%s; as when the target was made)", recipe.get("style"),
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

    def _pipeline(self, source: PipelineSource, task: Literal["text2img", "img2img"]) -> Any:
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
            "(--device cuda/mps) takes seconds.",
            what, images, steps, params / 1e6, size[1], size[0], where,
        )

    def _clip_where(self) -> tuple[str, str, bool] | None:
        """(name, location, local_only) of the CLIP model to use, or None; found without loading it."""
        if self._clip_found is not False:
            return self._clip_found  # type: ignore[return-value]
        spec = self.clip_model
        found: tuple[str, str, bool] | None = None
        if spec is not None and spec.strip().lower() in ("none", "off", ""):
            found = None
        elif spec is not None:
            path = Path(spec).expanduser()
            local = path if path.exists() else self.store.find(spec)
            if local is not None:
                found = (spec, str(Path(local).resolve()), True)
            elif _HUB_ID.match(spec):
                found = (spec, spec, self.store.offline)
            else:
                raise self.store.not_found(spec, looked_for=(spec,), how="pass a CLIP folder or a hub id")
        else:
            local = self.store.find("clip")
            if local is not None and (Path(local) / "config.json").is_file():
                found = ("clip", str(Path(local).resolve()), True)
            else:
                from huggingface_hub import try_to_load_from_cache

                cfg = try_to_load_from_cache(DEFAULT_CLIP_MODEL, "config.json", cache_dir=str(self.store.hub_cache))
                if isinstance(cfg, str):
                    found = (DEFAULT_CLIP_MODEL, DEFAULT_CLIP_MODEL, True)
        self._clip_found = found
        return found

    def _clip_id(self) -> str | None:
        where = self._clip_where()
        return where[0] if where else None

    def _clip_scorer(self) -> ClipScorer | None:
        if self._clip is False:
            where = self._clip_where()
            self._clip = None
            if where is not None:
                name, location, local_only = where
                with _loading_bars(self.progress):
                    self._clip = ClipScorer.load(location, name, local_only=local_only,
                                                 cache_dir=str(self.store.hub_cache), device=self.device)
        return self._clip  # type: ignore[return-value]

    @torch.no_grad()
    def _rank_anchors(self, candidates: list[Tensor], image: Tensor, prompt: str,
                      source: PipelineSource) -> tuple[list[float], str]:
        clip = self._clip_scorer()
        if clip is not None:
            text = clip.text_embeds([prompt])
            sims = torch.cat([clip.image_embeds(c) for c in candidates]) @ text.T
            return [float(v) for v in sims[:, 0]], f"clip:{clip.name}"
        pipe = self._pipeline(source, "text2img")
        vae = getattr(pipe, "vae", None)
        size = tuple(candidates[0].shape[-2:])
        if vae is None:
            ref = _resize(image.float().cpu(), size)
            return [float(F.mse_loss(c, ref)) for c in candidates], "pixels"

        def encode(x: Tensor) -> Tensor:
            x = (x * 2 - 1).to(self.device, next(vae.parameters()).dtype)
            out = vae.encode(x)
            dist = getattr(out, "latent_dist", None)
            return (dist.mean if dist is not None else out.latents).float().cpu()

        ref = encode(_resize(image.float().cpu(), size))
        return [float(F.mse_loss(encode(c), ref)) for c in candidates], f"latent:{source.spec}/vae"


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
    "ANCHOR_PROMPT", "DEFAULT_TARGET_MODELS", "MODES", "PATTERNS", "STYLES", "STYLE_NAMES", "ClipScorer",
    "GenerationSettings", "MadeTarget", "PipelineSource", "Style", "StyleChoice", "TargetMaker", "choose_style",
    "generation_size", "image_profile", "load_pipeline", "make_target", "resolve_pipeline", "style_prompt",
]
