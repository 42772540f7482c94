"""Reading artwork into the core's format, from every common file an artist has.

The core works on float tensors in [0,1], NCHW, RGB. Alpha never enters the optimisation: it
is kept as the file's own integers and written back bit-exact (:mod:`fixative.files.formats` writes).

What is read:

- PNG, JPEG, WebP, TIFF, BMP (and single-frame GIF), at 8 bits and, for PNG and TIFF, 16 bits
  per channel (Pillow reduces 16-bit colour to 8 bits, so those go through ``imagecodecs`` and
  ``tifffile`` instead);
- grayscale, palette (transparency included), CMYK (converted to sRGB through the file's ICC
  profile when it has one), RGB and RGBA, grey + alpha;
- EXIF orientation is applied to the pixels, and the orientation tag (EXIF and XMP) is reset
  to 1 in the metadata kept for the output, so viewers do not rotate it twice;
- the ICC profile, EXIF and XMP are kept in :attr:`LoadedImage.info` for the output.

What is refused, as an :class:`~fixative.errors.InputImageError` naming the file and the reason:
a missing, empty, non-image, damaged or truncated file, an animated or multi-page image, a
floating-point image, and an image over the pixel limit (checked from the header, before the
pixels are decoded: a decompression bomb never gets decoded).
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from fixative.defaults import MAX_PIXELS  # noqa: F401 (re-exported)
from fixative.errors import InputImageError
from fixative.files.bits16 import png_bit_depth, read_png16, read_tiff16, split16
from fixative.files.metadata import (  # noqa: F401 (re-exported)
    EXIF_HEADER,
    ORIENTATION_TAG,
    exif_of,
    icc_colour_space,
    orientation_of,
    reset_exif_orientation,
    reset_xmp_orientation,
    srgb_profile,
    xmp_of,
)

if TYPE_CHECKING:
    from torch import Tensor


#: file suffixes taken from folders and globs (a file named on the command line is tried whatever its name)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".dib", ".gif",
                  ".avif", ".heic", ".heif")
#: ISO-BMFF brands (the ``ftyp`` box) of HEIC/HEIF and of AVIF files
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_plugins_registered = False


@dataclass
class LoadedImage:
    """An image ready for protection.

    - ``rgb``: float32 tensor (1, 3, H, W) in [0, 1], upright.
    - ``alpha``: the alpha channel as the file's integers (H, W), uint8 or uint16, or None.
    - ``bits``: 8 or 16, the precision of the colour channels in the file.
    - ``mode``: Pillow's mode of the file (``"RGB"``, ``"P"``, ``"CMYK"``, ``"I;16"``, ...), or
      ``"RGB;16"``/``"RGBA;16"``/``"L;16"``/``"LA;16"`` for 16-bit files read without Pillow.
    - ``info``: metadata for the output: ``icc_profile`` (bytes), ``exif`` (bytes, starting
      ``Exif\\0\\0``, orientation reset to 1), ``xmp`` (bytes, orientation reset), ``dpi``.
    - ``format``: the file's format (``"PNG"``, ``"JPEG"``, ...); ``orientation``: the EXIF
      orientation that was applied (1 = none); ``notes``: conversions made, for the record.
    """

    path: Path
    rgb: Tensor
    alpha: np.ndarray | None
    bits: int
    mode: str
    info: dict = field(default_factory=dict)
    format: str = ""
    orientation: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.rgb.shape[-2], self.rgb.shape[-1]


# --- opening, with the checks that come before any decoding ---------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputImageError(f"{path}: no such file")
    if path.is_dir():
        raise InputImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise InputImageError(f"{path}: the file is empty (0 bytes)")


def container_kind(head: bytes) -> str | None:
    """"AVIF" or "HEIC" for the first bytes of an ISO-BMFF image file (its ``ftyp`` box), else None."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    return "HEIC" if brands & _HEIF_BRANDS else None


def register_plugins() -> None:
    """Let Pillow read HEIC/HEIF (``pillow-heif``) and AVIF (Pillow's own, else ``pillow-avif-plugin``) where
    those are installed; called once, when a file that needs them is opened."""
    global _plugins_registered
    if _plugins_registered:
        return
    _plugins_registered = True
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except ImportError:
        pass
    from PIL import features

    if not features.check("avif"):
        with contextlib.suppress(ImportError):
            import pillow_avif  # noqa: F401  (registers its opener on import)


def _plugin_hint(kind: str) -> str:
    if kind == "HEIC":
        return ("a HEIC/HEIF image: reading it needs the pillow-heif package, which is not installed "
                "(pip install pillow-heif, or pip install 'fixative[heif]')")
    return ("an AVIF image: this Pillow cannot read AVIF (pip install -U 'pillow>=11.2', or pip install "
            "pillow-avif-plugin)")


def _unreadable_reason(path: Path) -> str:
    """Why Pillow could not open ``path``: a HEIC/AVIF plugin that is missing; for a TIFF, what tifffile
    says about its samples."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    magic = head[:4]
    kind = container_kind(head)
    if kind is not None:
        return _plugin_hint(kind)
    if magic in (b"II*\x00", b"MM\x00*"):
        try:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                dtype = tif.pages[0].dtype
            if dtype is not None and dtype.kind == "f":
                return f"floating-point TIFF ({dtype}) is not supported; export 8 or 16 bits"
            return f"a TIFF whose layout is not supported (samples {dtype}); export 8 or 16 bits RGB"
        except Exception:  # not even tifffile can read it
            pass
    return "not an image that can be read (unknown or damaged format)"


def _is_container(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return container_kind(fh.read(64)) is not None
    except OSError:
        return False


def _open(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open (header only) and refuse what must not be decoded: non-images, animations, huge images."""
    _check_file(path)
    if path.suffix.lower() in (".avif", ".heic", ".heif") or _is_container(path):
        register_plugins()
    saved = Image.MAX_IMAGE_PIXELS
    try:
        # our own limit decides, just below (Pillow's 89 MP warning / 179 MP error would refuse below it);
        # Image.open reads the header only, so nothing is decoded before that check
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputImageError(f"{path}: refused before decoding, over the {max_pixels:,} pixel limit ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputImageError(f"{path}: {_unreadable_reason(path)}") from exc
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if img.width * img.height > max_pixels:
        img.close()
        raise InputImageError(
            f"{path}: {img.width}x{img.height} ({img.width * img.height:,} pixels) is over the "
            f"{max_pixels:,} pixel limit; refused before decoding (raise it with output.max_pixels)"
        )
    if img.width == 0 or img.height == 0:
        img.close()
        raise InputImageError(f"{path}: the image has no pixels ({img.width}x{img.height})")
    frames = getattr(img, "n_frames", 1)
    if frames > 1 or getattr(img, "is_animated", False):
        kind = "a multi-page" if img.format == "TIFF" else "an animated"
        img.close()
        raise InputImageError(
            f"{path}: {kind} image ({frames} frames) is not supported; export the frame to protect as a still image"
        )
    return img


# --- pixels ------------------------------------------------------------------------------------


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxW[xC] array, as Pillow's ``exif_transpose`` does."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(array))


def _pil_pixels(img: Image.Image, path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode with Pillow: (HxWx3 colour as uint8/uint16, alpha or None, bits)."""
    mode = img.mode
    if mode == "F":
        raise InputImageError(f"{path}: floating-point images are not supported; export 8 or 16 bits")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputImageError(f"{path}: 32-bit integer samples are not supported; export 8 or 16 bits")
        return np.repeat(arr.astype(np.uint16)[..., None], 3, axis=2), None, 16
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info) or (
        mode in ("L", "RGB") and "transparency" in img.info
    ):
        if mode in ("La", "RGBa"):
            notes.append("premultiplied alpha converted to straight alpha")
        rgba = np.asarray(img.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3].copy(), 8
    if mode == "CMYK":
        icc = img.info.get("icc_profile")
        if icc_colour_space(icc) == "CMYK":
            from PIL import ImageCms

            try:
                converted = ImageCms.profileToProfile(
                    img, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), outputMode="RGB"
                )
                notes.append("CMYK converted to sRGB through the file's ICC profile")
                return np.asarray(converted), None, 8
            except Exception as exc:  # a broken profile: fall back to the plain conversion
                notes.append(f"the CMYK ICC profile could not be used ({exc}); plain conversion")
        notes.append("CMYK converted to RGB without a colour profile")
    return np.asarray(img.convert("RGB")), None, 8


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read an image file into RGB floats in [0,1] plus its exact alpha, upright per EXIF.

    Raises :class:`InputImageError` (one line naming the file and the reason) for anything that
    cannot be protected; ``max_pixels`` is checked from the header, before decoding.
    """
    path = Path(path)
    img = _open(path, max_pixels)
    notes: list[str] = []
    try:
        with img:
            colour, alpha, bits, mode = _decode(img, path, notes)
            fmt, orientation = img.format or "", orientation_of(img)
            icc, exif, xmp, dpi = img.info.get("icc_profile"), exif_of(img), xmp_of(img), img.info.get("dpi")
    except InputImageError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc})") from exc
    except MemoryError as exc:
        raise InputImageError(f"{path}: not enough memory to decode this image") from exc

    if orientation != 1:
        colour = orient(colour, orientation)
        alpha = orient(alpha, orientation) if alpha is not None else None
    info = _output_info(icc, exif, xmp, dpi, orientation, notes)
    scale = 65535.0 if colour.dtype == np.uint16 else 255.0
    rgb = colour.astype(np.float32) / scale
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].contiguous()
    return LoadedImage(path, tensor, alpha, bits, mode, info, fmt, orientation, notes)


def _decode(img: Image.Image, path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None, int, str]:
    """(HxWx3 colour, alpha or None, bits, mode) of an opened image: 16-bit PNG and TIFF without Pillow."""
    fmt = img.format or ""
    bits16_png = fmt == "PNG" and png_bit_depth(path) == 16
    bps = getattr(img, "tag_v2", {}).get(258, (8,)) if fmt == "TIFF" else (8,)
    bits16_tiff = fmt == "TIFF" and max(bps if isinstance(bps, tuple) else (bps,)) > 8
    if bits16_png or bits16_tiff:
        arr, mode, more = (*read_png16(path), []) if bits16_png else read_tiff16(path)
        notes += more
        colour, alpha = split16(arr)
        return colour, alpha, 16, mode
    mode = img.mode  # as the file has it (before loading)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette-transparency chatter
        img.load()
    colour, alpha, bits = _pil_pixels(img, path, notes)
    return colour, alpha, bits, mode


def _output_info(icc: bytes | None, exif: bytes | None, xmp: bytes | None, dpi, orientation: int,
                 notes: list[str]) -> dict:
    """The metadata kept for the output (orientation reset to 1), with notes on what was converted or dropped."""
    space = icc_colour_space(icc)
    if space == "CMYK":
        icc = srgb_profile() if any("through the file's ICC profile" in n for n in notes) else None
    elif space not in (None, "RGB"):
        notes.append(f"{space} ICC profile not carried (the output is RGB)")
        icc = None
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied; the output's orientation tag is reset to 1")
    info: dict = {}
    if icc:
        info["icc_profile"] = icc
    if exif:
        info["exif"] = reset_exif_orientation(exif)
    if xmp:
        info["xmp"] = reset_xmp_orientation(xmp)
    if dpi:
        info["dpi"] = tuple(float(d) for d in dpi)
    return info


def resize_rgb(rgb: Tensor, size: tuple[int, int]) -> Tensor:
    """``rgb`` (N,C,H,W in [0,1]) at ``size`` (height, width): bicubic, antialiased, clamped to [0,1]; the
    tensor itself when it already has that size. How a target (a file or a generated one) meets the artwork."""
    if tuple(rgb.shape[-2:]) == tuple(size):
        return rgb
    import torch

    return torch.nn.functional.interpolate(rgb, size=size, mode="bicubic", antialias=True,
                                           align_corners=False).clamp(0, 1)


def load_target(path: str | Path, size: tuple[int, int]) -> Tensor:
    """Read a target image and resize it (see :func:`resize_rgb`) to (height, width)."""
    return resize_rgb(load_image(path).rgb, size)


def to_uint8(rgb: Tensor) -> np.ndarray:
    """(1,3,H,W) floats in [0,1] -> HxWx3 uint8, rounding to the nearest level."""
    return (rgb[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def atomic_save(image: Image.Image, dest: Path, **save_args) -> None:
    """Save a Pillow image via a temporary file in the same folder, then rename over ``dest``."""
    buffer = io.BytesIO()
    image.save(buffer, **save_args)
    from fixative.files.atomic import atomic_write

    atomic_write(Path(dest), buffer.getvalue())


def save_png(
    dest: str | Path, rgb: Tensor, alpha: np.ndarray | None = None, info: dict | None = None, bits: int = 8
) -> Path:
    """Write a lossless PNG (8 or 16 bits; RGB, or RGBA with the exact alpha) atomically, with metadata."""
    from fixative.files.atomic import atomic_write
    from fixative.files.formats import encode_image

    dest = Path(dest)
    atomic_write(dest, encode_image(rgb, alpha, fmt="png", bits=bits, info=info))
    return dest
