"""A generated corpus of image files: every input format the batch takes, and every kind of bad file.

``write_good(folder)`` writes small images in each format, depth and colour type (with EXIF
orientation, ICC, XMP, palette transparency, 16-bit colour and alpha; AVIF, and HEIC where
pillow-heif is installed) and returns their paths by name; ``write_bad(folder)`` writes the files
that must be refused (damaged, animated, too large, and the hardening round's: images below the
engine's minimum size and a 3 px strip), with a word each refusal's reason contains.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tiny import smooth_image

H, W = 32, 40
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


def rgb8(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.ascontiguousarray((smooth_image(h, w, seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def rgb16(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    arr = smooth_image(h, w, seed)[0].permute(1, 2, 0).numpy().astype(np.float64)
    return np.ascontiguousarray((arr * 65535).round().astype(np.uint16))


def alpha8(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)
    a[:4] = 0  # fully transparent rows: their colour must survive too
    return a


def exif_bytes(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[315] = "Test Artist"
    exif[33432] = "(c) Test Artist"
    return exif.tobytes()


def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def write_good(folder: Path) -> dict[str, Path]:
    """Every supported kind of input; names say what they are."""
    import imagecodecs
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kw) -> None:
        image.save(folder / name, **kw)
        out[name] = folder / name

    def raw(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        out[name] = folder / name

    rgb = Image.fromarray(rgb8(0), "RGB")
    rgba = Image.fromarray(np.dstack([rgb8(1), alpha8(1)]), "RGBA")
    save("rgb8_png.png", rgb)
    save("rgba8_png.png", rgba)
    raw("rgb16_png.png", imagecodecs.png_encode(rgb16(2)))
    raw("rgba16_png.png", imagecodecs.png_encode(np.dstack([rgb16(3), alpha8(3).astype(np.uint16) * 257 + 5])))
    save("gray8_png.png", rgb.convert("L"))
    save("gray16_png.png", Image.fromarray(rgb16(4)[..., 0]))  # Pillow: I;16
    save("graya8_png.png", rgba.convert("LA"))
    save("palette_png.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    save("palette_trns_png.png", pal, transparency=int(np.asarray(pal)[0, 0]))
    # a phone photo: rotated by EXIF, with an ICC profile, XMP and artist/copyright
    save("photo_rot6_jpg.jpg", Image.fromarray(rgb8(5, W, H)), quality=95, exif=exif_bytes(6),
         icc_profile=srgb_icc(), xmp=XMP)
    save("gray_jpg.jpg", rgb.convert("L"), quality=95)
    save("cmyk_jpg.jpg", rgb.convert("CMYK"), quality=95)
    save("lossy_webp.webp", rgb, quality=90)
    save("rgba_webp.webp", rgba, lossless=True, exact=True)
    save("rgb8_tif.tif", rgb, compression="tiff_lzw")
    save("cmyk_tif.tif", rgb.convert("CMYK"))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb16(6), photometric="rgb", compression="zlib")
    raw("rgb16_tif.tif", buffer.getvalue())
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.dstack([rgb16(7), alpha8(7).astype(np.uint16) * 257]), photometric="rgb",
                     extrasamples=("unassalpha",))
    raw("rgba16_tif.tif", buffer.getvalue())
    save("rgb_bmp.bmp", rgb)
    from PIL import features

    if features.check("avif"):  # Pillow 11.2+ reads and writes AVIF itself
        save("rgb_avif.avif", rgb, quality=90)
    if heif_plugin():
        save("rgb_heic.heic", rgb, quality=90)
    return out


def heif_plugin() -> bool:
    """True (and HEIC registered with Pillow) where pillow-heif is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny file whose header claims a huge image (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


#: files of :func:`write_bad` that are readable images, refused by the batch for their size
#: (fixative.core.engine.MIN_SIDE)
TOO_SMALL = ("tiny_1px.png", "tiny_4px.png", "tiny_24px.png", "strip_3px.png")


def write_bad(folder: Path) -> dict[str, str]:
    """Every kind of bad file: name -> a word that its refusal's reason contains."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(rgb8(9), "RGB")
    frames = [rgb, Image.fromarray(rgb8(10), "RGB")]
    (folder / "zero_bytes.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    Image.fromarray(rgb8(11, 64, 64), "RGB").save(buffer, "PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    (folder / "not_an_image.jpg").write_text("These are my notes, not a picture.\n")
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "animated_apng.png", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(folder / "multipage.tif", save_all=True, append_images=frames[1:])
    (folder / "bomb.png").write_bytes(bomb_png())
    tifffile.imwrite(folder / "float32.tif", np.random.default_rng(0).random((H, W, 3), dtype=np.float32),
                     photometric="rgb")
    # below the engine's minimum (fixative.core.engine.MIN_SIDE): refused up front, saying the minimum
    for side in (1, 4, 24):  # TOO_SMALL
        Image.fromarray(rgb8(12, side, side), "RGB").save(folder / f"tiny_{side}px.png")
    Image.fromarray(rgb8(13, 3, 100_000), "RGB").save(folder / "strip_3px.png")  # 3x100000
    return {
        "zero_bytes.png": "empty",
        "corrupt.png": "not an image",
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "not_an_image.jpg": "not an image",
        "animated.gif": "animated",
        "animated.webp": "animated",
        "animated_apng.png": "animated",
        "multipage.tif": "multi-page",
        "bomb.png": "pixel limit",
        "float32.tif": "floating-point",
        "tiny_1px.png": "at least 32 px",
        "tiny_4px.png": "at least 32 px",
        "tiny_24px.png": "at least 32 px",
        "strip_3px.png": "at least 32 px",
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), to show originals are untouched."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_numbered_pngs(folder: Path, count: int = 3) -> Path:
    """``folder/t0.png`` ... ``t{count-1}.png``, RGB images of seeds 0..count-1; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rgb8(i), "RGB").save(folder / f"t{i}.png")
    return folder
