"""The perceptual metric: LPIPS (Zhang et al. 2018) through the ``lpips`` package.

One small frozen module. Images come in as float tensors in [0,1], NCHW; the conversion to
LPIPS' [-1,1] range happens here and nowhere else. The ImageNet backbone loads from the model
store when its files are there (``lpips/alexnet_features.safetensors`` or
``lpips/vgg16_features.safetensors``, keyed as torchvision's ``alexnet().features``), and by
lpips' own (torchvision) download otherwise. The calibrated linear layers ship inside the
lpips package.

For the optimizer the features of the unchanging original are computed once
(:meth:`Perceptual.reference`) and reused at every step.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from protect.errors import ModelNotFoundError

if TYPE_CHECKING:
    from protect.store import ModelStore

log = logging.getLogger(__name__)

LPIPS_NETS = ("alex", "vgg")
_BACKBONE_FILES = {"alex": "lpips/alexnet_features.safetensors", "vgg": "lpips/vgg16_features.safetensors"}


@dataclass
class LpipsReference:
    """Cached LPIPS features of a fixed image (unit-normalised per layer)."""

    features: list[Tensor]
    shape: torch.Size


def _build_lpips(net: str, backbone: Path | None) -> nn.Module:
    import lpips  # heavy (torchvision): imported on first use, never at import time

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained is deprecated' chatter
        if backbone is not None:
            model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
            from safetensors.torch import load_file

            tensors = load_file(str(backbone))
            params = dict(model.net.named_parameters())
            by_index = {}
            for name in params:  # "slice2.3.weight" -> ("3", "weight")
                _, index, kind = name.split(".")
                by_index[f"features.{index}.{kind}"] = params[name]
            missing = sorted(set(by_index) - set(tensors))
            if missing:
                raise ModelNotFoundError(
                    f"LPIPS backbone file {backbone} lacks tensors {missing[:4]}; expected torchvision "
                    f"'{net}' features keys such as 'features.0.weight'"
                )
            with torch.no_grad():
                for key, param in by_index.items():
                    param.copy_(tensors[key].to(param.dtype))
        else:
            try:
                model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=False, verbose=False)
            except Exception as exc:  # torchvision download failed (offline, firewall, ...)
                raise ModelNotFoundError(
                    f"the LPIPS '{net}' ImageNet backbone is not in the model store and could not be "
                    f"downloaded by torchvision ({type(exc).__name__}: {exc}). Run `fixative models fetch "
                    f"lpips-{net}` on a machine with internet access, or put '{_BACKBONE_FILES[net]}' into a models "
                    "folder (see models/README.md) and pass --models-dir, or set FIXATIVE_MODELS_DIR"
                ) from exc
    lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    model.load_state_dict(torch.load(lin_path, map_location="cpu", weights_only=True), strict=False)
    return model


def weight_files(net: str = "alex", store: ModelStore | None = None) -> list[Path]:
    """The files LPIPS ``net`` loads its weights from: the store's backbone (else torchvision's
    cached download, where present) and the lpips package's calibrated linear layers."""
    import lpips
    import torch.hub

    from protect.store import ModelStore

    store = store or ModelStore()
    files = []
    backbone = store.find(_BACKBONE_FILES[net])
    if backbone is not None:
        files.append(backbone)
    else:
        name = "alexnet" if net == "alex" else "vgg16"
        cached = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{name}-*.pth"))
        files += cached[:1]
    files.append(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth")
    return files


class Perceptual(nn.Module):
    """LPIPS distance between images in [0,1]; frozen, eval mode, differentiable w.r.t. inputs.

    ``distance(a, b)`` returns one value per image (shape ``[N]``): 0 for identical images,
    about 0.1 for a barely visible change, 0.7 for a strong one.
    """

    def __init__(self, model: nn.Module, net: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.net = net

    @classmethod
    def load(cls, net: str = "alex", store: ModelStore | None = None, device: torch.device | str = "cpu"):
        """Build the LPIPS metric for ``net`` ("alex" or "vgg"), backbone from the store if present."""
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}; choose one of {LPIPS_NETS}")
        from protect.store import ModelStore

        store = store or ModelStore()
        backbone = store.find(_BACKBONE_FILES[net])
        if backbone is None:
            log.info("LPIPS %s backbone not in %s; trying torchvision's download", net, store.search_dirs())
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                log.info("offline mode is set: the torchvision download will probably fail")
        return cls(_build_lpips(net, backbone), net).to(device)

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
