"""The perceptual metric of the core: LPIPS (Zhang et al. 2018) as one small frozen module.

Images come in as float tensors in [0,1], NCHW; the conversion to LPIPS' [-1,1] range happens here and
nowhere else. For the optimizer the features of the unchanging original are computed once
(:meth:`Perceptual.reference`) and reused at every step. The network and its weights are built by
:func:`fixative.models.perceptual.load_perceptual` (the model store, the built-in backbone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

LPIPS_NETS = ("alex", "vgg")


@dataclass
class LpipsReference:
    """Cached LPIPS features of a fixed image (unit-normalised per layer)."""

    features: list[Tensor]
    shape: torch.Size


class Perceptual(nn.Module):
    """LPIPS distance between images in [0,1]; frozen, eval mode, differentiable w.r.t. inputs.

    ``distance(a, b)`` returns one value per image (shape ``[N]``): 0 for identical images,
    about 0.1 for a barely visible change, 0.7 for a strong one.
    """

    def __init__(self, model: nn.Module, net: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.net = net

    def _layers(self, image01: Tensor):
        """The backbone's layer outputs, one at a time (only the current one is held in memory)."""
        m = self.model
        h = m.scaling_layer(image01 * 2 - 1)
        for i in range(1, m.net.N_slices + 1):
            h = getattr(m.net, f"slice{i}")(h)
            yield h

    @staticmethod
    def _unit(feature: Tensor) -> Tensor:
        return feature / (torch.sqrt(torch.sum(feature * feature, dim=1, keepdim=True)) + 1e-10)

    def _features(self, image01: Tensor) -> list[Tensor]:
        return [self._unit(h) for h in self._layers(image01)]

    def reference(self, image01: Tensor) -> LpipsReference:
        """Features of a fixed image, to compare many candidates against it cheaply."""
        with torch.no_grad():
            return LpipsReference([f.detach() for f in self._features(image01)], image01.shape)

    def distance_to(self, image01: Tensor, ref: LpipsReference, spatial: bool = False) -> Tensor:
        """LPIPS of ``image01`` against a cached reference: shape [N], or [N,1,H,W] if ``spatial``."""
        total = 0
        for lin, h, r in zip(self.model.lins, self._layers(image01), ref.features, strict=True):
            d = lin((self._unit(h) - r.to(h.dtype)) ** 2)
            if spatial:
                d = nn.functional.interpolate(d.float(), size=image01.shape[-2:], mode="bilinear")
                total = total + d
            else:
                total = total + d.float().mean(dim=(2, 3))
        return total if spatial else total.flatten()

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS between two batches of images in [0,1]; shape [N]."""
        return self.distance_to(a, LpipsReference(self._features(b), b.shape))

    def distance_in_cells(self, a: Tensor, b: Tensor, cell: int = 1024, margin: int = 64) -> Tensor:
        """LPIPS between two batches of images in [0,1] (shape [N]) in bounded memory, for images of any size.

        An image no larger than ``cell`` + 2 ``margin`` px on both sides is measured whole (:meth:`distance`).
        Larger ones are cut into cells of ``cell`` px (the last ones smaller), each measured with ``margin`` px
        of its neighbours around it; the per-pixel LPIPS map of the cell's own pixels is averaged over the image.
        LPIPS being a spatial mean, that is the whole image's value up to the networks' deepest receptive
        fields reaching past the margin (a small difference; memory stays that of one cell, which matters for
        the VGG backbone: about 22 GB for a whole 18 MP image).
        """
        height, width = a.shape[-2:]
        if height <= cell + 2 * margin and width <= cell + 2 * margin:
            return self.distance(a, b)
        total = torch.zeros(a.shape[0], dtype=torch.float64)
        for top in range(0, height, cell):
            for left in range(0, width, cell):
                y0, x0 = max(0, top - margin), max(0, left - margin)
                y1, x1 = min(height, top + cell + margin), min(width, left + cell + margin)
                ref = LpipsReference(self._features(b[..., y0:y1, x0:x1]), b[..., y0:y1, x0:x1].shape)
                spatial = self.distance_to(a[..., y0:y1, x0:x1], ref, spatial=True)
                own = spatial[..., top - y0 : min(height, top + cell) - y0, left - x0 : min(width, left + cell) - x0]
                total += own.sum(dim=(1, 2, 3)).double().cpu()
        return (total / (height * width)).float()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.distance(a, b)
