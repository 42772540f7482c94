"""Writing protected images: lossless PNG (default), lossless WebP, TIFF, and JPEG on request.

Every writer encodes into memory first (:func:`encode_image` returns bytes, so that the
output's SHA-256 is known before anything touches the disk), then :func:`~fixative.files.atomic.atomic_write` puts the
bytes in a temporary file beside the destination, flushes them to disk and renames it over the
destination: a reader, or a run killed at any moment, never sees half a file.

Bit depth: PNG and TIFF are written at 16 bits per channel when asked (the input had 16), WebP
and JPEG are 8-bit formats. Alpha is written as given (bit-exact), widened from 8 to 16 bits by
x257 when a 16-bit file needs it. Metadata carried: the ICC profile, EXIF (orientation already
reset by :mod:`fixative.files.images`), XMP and the resolution (dpi); a 16-bit TIFF carries EXIF's
descriptive tags (artist, copyright, description, make, model, software, date) in its own
first IFD, since ``tifffile`` writes no EXIF sub-IFD.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fixative.defaults import DEFAULT_JPEG_QUALITY, OUTPUT_FORMATS  # noqa: F401 (re-exported)
from fixative.errors import ConfigError, InputImageError
from fixative.files.atomic import (  # noqa: F401 (re-exported: the writers' one atomic write)
    STALE_SECONDS,
    _host,
    atomic_write,
    is_stale_temporary,
    remove_stale_temporaries,
    temporary_prefix,
)

if TYPE_CHECKING:
    from torch import Tensor

#: formats that hold 16 bits per channel
SIXTEEN_BIT_FORMATS = ("png", "tiff")
LOSSY_FORMATS = ("jpeg",)
#: EXIF IFD0 text tags a 16-bit TIFF keeps: description, make, model, software, date, artist, copyright
_TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


def output_bits(fmt: str, input_bits: int) -> int:
    """Bits per channel of the output: the input's where the format allows it, else 8."""
    return 16 if input_bits == 16 and fmt in SIXTEEN_BIT_FORMATS else 8


def to_integers(rgb: Tensor, bits: int) -> np.ndarray:
    """(1,3,H,W) floats in [0,1] -> HxWx3 uint8 or uint16, rounding to the nearest level."""
    levels = 65535 if bits == 16 else 255
    arr = rgb[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)
    return (arr * levels + 0.5).astype(np.uint16 if bits == 16 else np.uint8)


def fit_alpha(alpha: np.ndarray, bits: int) -> np.ndarray:
    """Alpha at the output's depth: unchanged when it already is; x257 up (exact); /257 rounded down to 8."""
    if bits == 16:
        return alpha.astype(np.uint16) * np.uint16(257) if alpha.dtype == np.uint8 else alpha.astype(np.uint16)
    if alpha.dtype == np.uint8:
        return alpha
    return (alpha.astype(np.float64) / 257 + 0.5).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_metadata_chunks(info: dict) -> bytes:
    chunks = b""
    if info.get("icc_profile"):
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(info["icc_profile"]))
    if info.get("dpi"):
        x, y = (int(round(d / 0.0254)) for d in info["dpi"])
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1))
    if info.get("exif"):
        exif = info["exif"]
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    if info.get("xmp"):
        chunks += _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + info["xmp"])
    return chunks


def _png16(pixels: np.ndarray, info: dict) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit colour): imagecodecs' encoder plus our metadata chunks."""
    import imagecodecs

    data = imagecodecs.png_encode(np.ascontiguousarray(pixels), level=6)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return data[:ihdr_end] + _png_metadata_chunks(info) + data[ihdr_end:]


def _tiff16(pixels: np.ndarray, info: dict) -> bytes:
    import tifffile

    extratags = []
    if info.get("xmp"):
        extratags.append((700, "B", len(info["xmp"]), info["xmp"], True))
    if info.get("exif"):
        exif = Image.Exif()
        try:
            exif.load(info["exif"])
        except Exception:  # unreadable EXIF: the pixels matter more
            exif = {}
        for tag in _TIFF_TEXT_TAGS:
            value = exif.get(tag)
            if isinstance(value, str) and value:
                extratags.append((tag, "s", 0, value, True))
    kwargs: dict = {}
    if info.get("dpi"):
        kwargs.update(resolution=tuple(float(d) for d in info["dpi"]), resolutionunit="INCH")
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        pixels,
        photometric="rgb",
        planarconfig="contig",
        extrasamples=("unassalpha",) if pixels.shape[2] == 4 else None,
        compression="zlib",
        predictor=True,
        iccprofile=info.get("icc_profile"),
        extratags=extratags,
        metadata=None,
        **kwargs,
    )
    return buffer.getvalue()


def _pil_bytes(image: Image.Image, fmt: str, info: dict, quality: int) -> bytes:
    args: dict = {}
    for key in ("icc_profile", "exif", "dpi"):
        if info.get(key):
            args[key] = info[key]
    if fmt == "png":
        from PIL import PngImagePlugin

        if info.get("xmp"):
            meta = PngImagePlugin.PngInfo()
            meta.add_itxt("XML:com.adobe.xmp", info["xmp"].decode("utf-8", "replace"))
            args["pnginfo"] = meta
        args.update(format="PNG", compress_level=6)
    elif fmt == "webp":
        # exact: keep the colour under fully transparent pixels (the default would zero it)
        args.update(format="WEBP", lossless=True, exact=True, quality=80, method=4)
        if info.get("xmp"):
            args["xmp"] = info["xmp"]
    elif fmt == "tiff":
        # uncompressed: Pillow writes the EXIF sub-IFD only through its own (non-libtiff) writer
        args.update(format="TIFF", compression=None)
        if info.get("xmp"):  # XMP is TIFF tag 700, written with the EXIF tags (a tiffinfo= would drop those)
            exif = Image.Exif()
            if info.get("exif"):
                exif.load(info["exif"])
            exif[700] = info["xmp"]
            args["exif"] = exif
    elif fmt == "jpeg":
        # 4:4:4 (no chroma subsampling): the perturbation's colour detail is what subsampling removes first
        args.update(format="JPEG", quality=quality, subsampling=0, optimize=True)
        if info.get("xmp"):
            args["xmp"] = info["xmp"]
    buffer = io.BytesIO()
    image.save(buffer, **args)
    return buffer.getvalue()


def encode_image(
    rgb: Tensor,
    alpha: np.ndarray | None = None,
    *,
    fmt: str = "png",
    bits: int = 8,
    info: dict | None = None,
    quality: int = DEFAULT_JPEG_QUALITY,
) -> bytes:
    """The bytes of a file holding ``rgb`` (1x3xHxW in [0,1]) and ``alpha`` in format ``fmt``.

    ``bits``: 8 or 16 (16 only for PNG/TIFF). ``info``: metadata (``icc_profile``, ``exif``,
    ``xmp``, ``dpi``) to carry. ``quality``: JPEG quality (JPEG only). A JPEG cannot hold alpha:
    asking for one with an alpha channel raises :class:`InputImageError` rather than dropping it.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if bits == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        raise ConfigError(f"{fmt} cannot hold 16 bits per channel")
    info = info or {}
    pixels = to_integers(rgb, bits)
    if alpha is not None:
        if fmt == "jpeg":
            raise InputImageError("the image has transparency, which JPEG cannot hold; "
                                  "use output.format png, webp or tiff")
        if alpha.shape != pixels.shape[:2]:
            raise ConfigError(f"alpha {alpha.shape} does not match the image {pixels.shape[:2]}")
        pixels = np.dstack([pixels, fit_alpha(alpha, bits)])
    if bits == 16:
        return _png16(pixels, info) if fmt == "png" else _tiff16(pixels, info)
    image = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    return _pil_bytes(image, fmt, info, quality)


def decode_rgb(data: bytes) -> Tensor:
    """Decode 8-bit file bytes (e.g. a JPEG just written) into a 1x3xHxW float tensor in [0,1]."""
    import torch

    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
