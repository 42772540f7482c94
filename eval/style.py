"""Style distance: Gram matrices of VGG16 features (Gatys et al. 2016).

The ImageNet VGG16 convolution weights come from the model store's
``lpips/vgg16_features.safetensors`` (keyed as torchvision's ``vgg16().features``, the same file
LPIPS vgg uses), so no download is needed. Images are compared at a fixed working size (the
shorter side reduced to ``size``, 256 by default; smaller images are used as they are) so that
large images stay cheap.

``StyleDistance.distance(a, b)`` = sum over relu1_2, relu2_2, relu3_3, relu4_3 of the mean
squared difference of the Gram matrices (each normalised by C*H*W). 0 = the same textures and
colours; only ratios and comparisons between distances are meaningful.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fixative.errors import ModelNotFoundError
from fixative.models.store import ModelStore

VGG16_FILE = "lpips/vgg16_features.safetensors"
STYLE_LAYERS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3 in torchvision's vgg16().features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def gram(features: Tensor) -> Tensor:
    """Gram matrix per image, normalised by C*H*W: (N, C, H, W) -> (N, C, C)."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class StyleDistance(nn.Module):
    """Frozen VGG16 (up to relu4_3) computing Gram-matrix style distances between [0, 1] images."""

    def __init__(self, features: nn.Sequential, size: int = 256, layers: tuple[int, ...] = STYLE_LAYERS):
        super().__init__()
        self.features = features[: max(layers) + 1]
        self.layers = tuple(layers)
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def load(cls, store: ModelStore | None = None, device: torch.device | str = "cpu", size: int = 256):
        """VGG16 features from the model store (``lpips/vgg16_features.safetensors``)."""
        import torchvision
        from safetensors.torch import load_file

        store = store or ModelStore()
        path = store.find(VGG16_FILE)
        if path is None:
            raise ModelNotFoundError(
                f"the style distance needs ImageNet VGG16 weights: put {VGG16_FILE!r} in a models folder "
                f"(see models/README.md); looked in {', '.join(str(d) for d in store.search_dirs()) or 'nowhere'}"
            )
        features = torchvision.models.vgg16(weights=None).features
        state = {k.removeprefix("features."): v for k, v in load_file(str(path)).items()}
        features.load_state_dict(state)
        return cls(features, size).to(device)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def grams(self, images: Tensor) -> list[Tensor]:
        """Gram matrices of the style layers for a batch of [0, 1] images."""
        x = images.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        scale = min(1.0, self.size / min(h, w))  # never upscale: small images are compared as they are
        if scale < 1:
            x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bicubic",
                              antialias=scale < 1, align_corners=False).clamp(0, 1)
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.layers:
                out.append(gram(x))
        return out

    @staticmethod
    def gram_distance(a: list[Tensor], b: list[Tensor]) -> Tensor:
        """Distance between precomputed Gram lists; shape [N]."""
        return sum(((ga - gb) ** 2).flatten(1).mean(dim=1) for ga, gb in zip(a, b, strict=True))

    @torch.no_grad()
    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Style distance between two batches of [0, 1] images; shape [N]."""
        return self.gram_distance(self.grams(a), self.grams(b))
