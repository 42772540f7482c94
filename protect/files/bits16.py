"""16-bit PNG and TIFF pixels, which Pillow would reduce to 8 bits: read with ``imagecodecs`` and ``tifffile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fixative.errors import InputImageError


def png_bit_depth(path: Path) -> int:
    """Bits per sample of a PNG file, read from its IHDR chunk (8 when it cannot be read)."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[24] if len(head) >= 26 and head[12:16] == b"IHDR" else 8


def read_png16(path: Path) -> tuple[np.ndarray, str]:
    """A 16-bit PNG's samples (HxW or HxWxC uint16) and its mode (``"RGB;16"``, ...)."""
    import imagecodecs

    try:
        arr = imagecodecs.png_decode(path.read_bytes())
    except Exception as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc})") from exc
    if arr.ndim == 2:
        return arr, "L;16"
    return arr, {1: "L;16", 2: "LA;16", 3: "RGB;16"}.get(arr.shape[2], "RGBA;16")


def read_tiff16(path: Path) -> tuple[np.ndarray, str, list[str]]:
    """A 16-bit TIFF's first page as uint16 samples, its mode and notes on what was converted or dropped."""
    import tifffile

    notes: list[str] = []
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            photometric = int(page.photometric)
            planar = int(page.planarconfig)
    except Exception as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc})") from exc
    if arr.dtype.kind == "f":
        raise InputImageError(f"{path}: floating-point TIFF ({arr.dtype}) is not supported; export 8 or 16 bits")
    if arr.dtype != np.uint16:
        raise InputImageError(f"{path}: {arr.dtype} TIFF samples are not supported; export 8 or 16 bits")
    if arr.ndim == 3 and planar == 2:  # separate planes: (S, H, W) -> (H, W, S)
        arr = np.moveaxis(arr, 0, -1)
    if photometric == 0:  # min-is-white
        arr = 65535 - arr
    if photometric == 5:  # separated (CMYK): naive conversion, no profile at 16 bits
        c, m, y, k = (arr[..., i].astype(np.float64) / 65535 for i in range(4))
        rgb = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=-1)
        arr = np.concatenate([(rgb * 65535 + 0.5).astype(np.uint16), arr[..., 4:]], axis=-1)
        notes.append("16-bit CMYK converted to RGB without a colour profile")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.ndim == 3 and channels == 1:
        arr = arr[..., 0]
    mode = {1: "L;16", 2: "LA;16", 3: "RGB;16"}.get(channels, "RGBA;16")
    if channels > 4:
        notes.append(f"{channels - 4} extra channels beyond RGBA dropped")
        arr = arr[..., :4]
    return arr, mode, notes


def split16(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit HxW[xC] (grey, grey+alpha, RGB, RGBA) -> (HxWx3 uint16 colour, alpha or None)."""
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), None
    if arr.shape[2] == 2:
        return np.repeat(arr[..., :1], 3, axis=2), arr[..., 1].copy()
    if arr.shape[2] == 4:
        return arr[..., :3], arr[..., 3].copy()
    return arr[..., :3], None
