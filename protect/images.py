"""Reading artwork into the core's format and writing protected results safely.

The core works on float tensors in [0,1], NCHW, RGB. Alpha never enters the optimisation: it
is kept as the file's own integers and written back bit-exact. EXIF orientation is applied on
reading (the output is upright, with no orientation tag). Writes are atomic: a temporary file
in the destination folder, then a rename, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from protect.errors import InputImageError

#: refuse images above this many pixels (a decompression bomb or a mistake); 300 MP
MAX_PIXELS = 300_000_000


@dataclass
class LoadedImage:
    """An image ready for protection.

    - ``rgb``: float32 tensor (1, 3, H, W) in [0, 1].
    - ``alpha``: the alpha channel as the file's integers (H, W), uint8 or uint16, or None.
    - ``bits``: 8 or 16, the precision of the colour channels in the file.
    """

    path: Path
    rgb: Tensor
    alpha: np.ndarray | None
    bits: int
    mode: str
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.rgb.shape[-2], self.rgb.shape[-1]


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise InputImageError(f"{path}: no such file")
    if path.is_dir():
        raise InputImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise InputImageError(f"{path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if img.width * img.height > MAX_PIXELS:
                raise InputImageError(
                    f"{path}: {img.width}x{img.height} is over the {MAX_PIXELS // 1_000_000} MP limit"
                )
            img.load()
    except InputImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputImageError(f"{path}: not an image that can be read ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc})") from exc
    return img


def load_image(path: str | Path) -> LoadedImage:
    """Read an image file into RGB floats in [0,1] plus its exact alpha, upright per EXIF."""
    path = Path(path)
    img = _open(path)
    mode = img.mode
    info = {k: img.info[k] for k in ("icc_profile", "dpi") if k in img.info}
    img = ImageOps.exif_transpose(img)
    bits = 16 if mode in ("I;16", "I;16B", "I;16L", "I") else 8
    alpha = None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        rgb = np.asarray(rgba)[..., :3].astype(np.float32) / 255.0
    elif bits == 16:
        arr = np.asarray(img).astype(np.float32) / 65535.0
        rgb = np.repeat(arr[..., None], 3, axis=2)
    else:
        rgb = np.asarray(img.convert("RGB")).astype(np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].contiguous()
    return LoadedImage(path, tensor, alpha, bits, mode, info)


def load_target(path: str | Path, size: tuple[int, int]) -> Tensor:
    """Read a target image and resize it (bicubic, antialiased) to (height, width)."""
    target = load_image(path).rgb
    if tuple(target.shape[-2:]) != tuple(size):
        target = torch.nn.functional.interpolate(
            target, size=size, mode="bicubic", antialias=True, align_corners=False
        ).clamp(0, 1)
    return target


def to_uint8(rgb: Tensor) -> np.ndarray:
    """(1,3,H,W) floats in [0,1] -> HxWx3 uint8, rounding to the nearest level."""
    return (rgb[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def atomic_save(image: Image.Image, dest: Path, **save_args) -> None:
    """Save via a temporary file in the same folder, then rename over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, **save_args)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(dest: str | Path, rgb: Tensor, alpha: np.ndarray | None = None, info: dict | None = None) -> Path:
    """Write a lossless 8-bit PNG (RGB, or RGBA with the exact alpha) atomically."""
    dest = Path(dest)
    arr = to_uint8(rgb)
    if alpha is not None:
        a = alpha if alpha.dtype == np.uint8 else (alpha.astype(np.float64) / 257 + 0.5).astype(np.uint8)
        image = Image.fromarray(np.dstack([arr, a]), "RGBA")
    else:
        image = Image.fromarray(arr, "RGB")
    extra = {k: v for k, v in (info or {}).items() if k in ("icc_profile", "dpi")}
    atomic_save(image, dest, format="PNG", **extra)
    return dest
