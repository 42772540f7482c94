"""The perceptual metric: LPIPS (Zhang et al. 2018) through the ``lpips`` package.

One small frozen module. Images come in as float tensors in [0,1], NCHW; the conversion to
LPIPS' [-1,1] range happens here and nowhere else. The ImageNet backbone loads from the model
store when its files are there (``lpips/alexnet_features.safetensors`` or
``lpips/vgg16_features.safetensors``, keyed as torchvision's ``alexnet().features``), and by
lpips' own (torchvision) download otherwise. The calibrated linear layers ship inside the
lpips package.

The module itself, :class:`~fixative.core.perceptual.Perceptual`, is in the core.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fixative.core.perceptual import LPIPS_NETS, Perceptual
from fixative.errors import ModelNotFoundError

if TYPE_CHECKING:
    from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

_BACKBONE_FILES = {"alex": "lpips/alexnet_features.safetensors", "vgg": "lpips/vgg16_features.safetensors"}


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
                    "folder (see models/README.md) and name it in models.models_dir, or set FIXATIVE_MODELS_DIR"
                ) from exc
    lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    model.load_state_dict(torch.load(lin_path, map_location="cpu", weights_only=True), strict=False)
    return model


def weight_files(net: str = "alex", store: ModelStore | None = None) -> list[Path]:
    """The files LPIPS ``net`` loads its weights from: the store's backbone (else torchvision's
    cached download, where present) and the lpips package's calibrated linear layers."""
    import lpips
    import torch.hub

    from fixative.models.store import ModelStore

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


def load_perceptual(net: str = "alex", store: ModelStore | None = None,
                    device: torch.device | str = "cpu") -> Perceptual:
    """Build the LPIPS metric for ``net`` ("alex" or "vgg"), backbone from the store if present."""
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {LPIPS_NETS}")
    from fixative.models.store import ModelStore

    store = store or ModelStore()
    backbone = store.find(_BACKBONE_FILES[net])
    if backbone is None:
        log.info("LPIPS %s backbone not in %s; trying torchvision's download", net, store.search_dirs())
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            log.info("offline mode is set: the torchvision download will probably fail")
    return Perceptual(_build_lpips(net, backbone), net).to(device)
