"""CLIP for made targets: it ranks anchor candidates and picks the automatic style.

:func:`find_clip` says which CLIP model to use without loading it (a given folder or hub id, else the
default one only when it is already on this machine); :class:`ClipScorer` holds it, frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.errors import FixativeError
from fixative.files.images import resize_rgb
from fixative.models.hub import is_hub_id
from fixative.models.store import ModelStore

#: the CLIP model looked for (locally only, never downloaded unasked) to rank anchor candidates
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
#: the CLIP model's spec that turns CLIP off
CLIP_OFF = ("none", "off", "")

_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipLocation(NamedTuple):
    """Where a CLIP model is: its ``name`` (for records), ``location`` (folder or hub id), ``local_only``."""

    name: str
    location: str
    local_only: bool


def find_clip(spec: str | None, store: ModelStore) -> ClipLocation | None:
    """The CLIP model to use for ``spec``, found without loading it; None = rank without CLIP.

    ``spec``: a folder (or a path in the model store) or a hub id; ``"none"`` = never; None = the
    store's ``clip/`` folder, else :data:`DEFAULT_CLIP_MODEL` if it is in the Hugging Face cache.
    """
    if spec is not None and spec.strip().lower() in CLIP_OFF:
        return None
    if spec is not None:
        path = Path(spec).expanduser()
        local = path if path.exists() else store.find(spec)
        if local is not None:
            return ClipLocation(spec, str(Path(local).resolve()), True)
        if is_hub_id(spec):
            return ClipLocation(spec, spec, store.offline)
        raise store.not_found(spec, looked_for=(spec,), how="give the CLIP model as a folder or a hub id")
    local = store.find("clip")
    if local is not None and (Path(local) / "config.json").is_file():
        return ClipLocation("clip", str(Path(local).resolve()), True)
    from huggingface_hub import try_to_load_from_cache

    cfg = try_to_load_from_cache(DEFAULT_CLIP_MODEL, "config.json", cache_dir=str(store.hub_cache))
    return ClipLocation(DEFAULT_CLIP_MODEL, DEFAULT_CLIP_MODEL, True) if isinstance(cfg, str) else None


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
        x = resize_rgb(x, (max(self.size, round(h * s)), max(self.size, round(w * s))))
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
