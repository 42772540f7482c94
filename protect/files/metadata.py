"""The metadata carried from an artwork into its protected output: ICC profile, EXIF and XMP.

EXIF orientation is applied to the pixels on reading, so the orientation tag (EXIF and XMP) is reset to 1
in what is kept (viewers must not rotate the output twice); a TIFF's own layout tags are never carried.
"""

from __future__ import annotations

import re
import struct

from PIL import Image

ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"
#: TIFF tags that describe a TIFF file's own layout: never carried into another file's EXIF
_TIFF_LAYOUT_TAGS = {
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 290, 291, 292, 293,
    317, 318, 319, 320, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 512, 513, 514, 529, 530,
    531, 532, 700, 33723, 34377, 34675, 37724,
}


def reset_exif_orientation(exif: bytes) -> bytes:
    """EXIF bytes (``Exif\\0\\0`` + TIFF structure) with the IFD0 orientation set to 1; all else byte-identical."""
    body = exif[len(EXIF_HEADER) :] if exif.startswith(EXIF_HEADER) else exif
    prefix = exif[: len(exif) - len(body)]
    if len(body) < 8 or body[:2] not in (b"II", b"MM"):
        return exif
    end = "<" if body[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(end + "I", body[4:8])
        (count,) = struct.unpack(end + "H", body[offset : offset + 2])
        data = bytearray(body)
        for i in range(count):
            entry = offset + 2 + 12 * i
            tag, kind = struct.unpack(end + "HH", data[entry : entry + 4])
            if tag == ORIENTATION_TAG and kind == 3:  # SHORT, stored in the entry itself
                data[entry + 8 : entry + 10] = struct.pack(end + "H", 1)
                return prefix + bytes(data)
    except struct.error:
        return exif
    return exif


_XMP_ORIENTATION = (
    re.compile(rb'(tiff:Orientation\s*=\s*["\'])\d(["\'])'),
    re.compile(rb"(<tiff:Orientation>)\s*\d\s*(</tiff:Orientation>)"),
)


def reset_xmp_orientation(xmp: bytes) -> bytes:
    """XMP with ``tiff:Orientation`` set to 1 (attribute or element form)."""
    for rx in _XMP_ORIENTATION:
        xmp = rx.sub(rb"\g<1>1\g<2>", xmp)
    return xmp


def exif_of(img: Image.Image) -> bytes | None:
    """The EXIF bytes to carry from ``img`` (``Exif\\0\\0`` + TIFF structure), or None."""
    if img.format == "TIFF":
        # a TIFF's EXIF is its own first IFD: keep the descriptive tags, not the file's layout
        exif = img.getexif()
        for sub in (0x8769, 0x8825):  # Exif and GPS IFDs: load them so that they are written out
            if sub in exif:
                exif.get_ifd(sub)
        for tag in list(exif):
            if tag in _TIFF_LAYOUT_TAGS:
                del exif[tag]
        return exif.tobytes() if len(exif) else None
    raw = img.info.get("exif")
    if not raw:
        return None
    return raw if raw.startswith(EXIF_HEADER) else EXIF_HEADER + raw


def xmp_of(img: Image.Image) -> bytes | None:
    """The XMP packet of ``img`` as bytes, or None."""
    xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    if not xmp and img.format == "TIFF":
        xmp = getattr(img, "tag_v2", {}).get(700)
    if not xmp:
        return None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, tuple):  # some Pillow versions give TIFF byte tags as tuples
        xmp = bytes(xmp)
    return bytes(xmp)


def orientation_of(img: Image.Image) -> int:
    """``img``'s EXIF orientation, 1-8 (1 when absent or unreadable)."""
    try:
        value = int(img.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF: treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


def icc_colour_space(profile: bytes | None) -> str | None:
    """The colour space of an ICC profile ("RGB", "GRAY", "CMYK", ...), or None."""
    if not profile or len(profile) < 20:
        return None
    return profile[16:20].decode("ascii", "replace").strip()


def srgb_profile() -> bytes:
    """An sRGB ICC profile (made by Pillow's littleCMS), for outputs converted from CMYK."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
