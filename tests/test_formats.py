"""Reading every input format and writing every output format (no models: pixels and metadata only)."""

import os
from pathlib import Path

import corpus
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from fixative.errors import InputImageError
from fixative.files.formats import atomic_write, encode_image, output_bits, remove_stale_temporaries
from fixative.files.images import load_image, reset_exif_orientation


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    return corpus.write_good(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, corpus.write_bad(folder)


def test_every_good_file_reads_upright_at_its_depth(good):
    for name, path in good.items():
        before = path.read_bytes()
        image = load_image(path)
        assert path.read_bytes() == before
        assert image.size == (corpus.H, corpus.W), name
        assert image.rgb.shape == (1, 3, corpus.H, corpus.W) and 0 <= image.rgb.min() <= image.rgb.max() <= 1
        assert image.bits == (16 if "16" in name else 8), name
        has_alpha = name.startswith(("rgba", "graya", "palette_trns"))
        assert (image.alpha is not None) == has_alpha, name


def test_alpha_and_16_bit_colour_are_exact(good):
    rgba = load_image(good["rgba8_png.png"])
    assert np.array_equal(rgba.alpha, corpus.alpha8(1))
    rgba16 = load_image(good["rgba16_png.png"])
    assert rgba16.alpha.dtype == np.uint16
    assert np.array_equal(rgba16.alpha, corpus.alpha8(3).astype(np.uint16) * 257 + 5)
    expected = corpus.rgb16(3).astype(np.float32) / 65535
    assert np.allclose(rgba16.rgb[0].permute(1, 2, 0).numpy(), expected, atol=1e-7)
    tif16 = load_image(good["rgba16_tif.tif"])
    assert np.array_equal(tif16.alpha, corpus.alpha8(7).astype(np.uint16) * 257)
    assert np.allclose(tif16.rgb[0].permute(1, 2, 0).numpy(), corpus.rgb16(7).astype(np.float32) / 65535, atol=1e-7)
    palette = load_image(good["palette_trns_png.png"])
    assert set(np.unique(palette.alpha)) == {0, 255} and (palette.alpha == 0).any()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow_and_reset(tmp_path, orientation):
    pixels = corpus.rgb8(orientation, 12, 20)
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(pixels).save(path, exif=corpus.exif_bytes(orientation))
    image = load_image(path)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    got = (image.rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, expected)
    exif = Image.Exif()
    exif.load(image.info["exif"])
    assert exif[0x0112] == 1 and exif[315] == "Test Artist"


def test_reset_orientation_keeps_other_bytes():
    raw = corpus.exif_bytes(8)
    reset = reset_exif_orientation(raw)
    assert len(reset) == len(raw) and sum(a != b for a, b in zip(raw, reset, strict=True)) == 1


def test_cmyk_and_grey_become_rgb_with_notes(good):
    cmyk = load_image(good["cmyk_jpg.jpg"])
    assert any("CMYK" in n for n in cmyk.notes)
    assert "icc_profile" not in cmyk.info  # a CMYK profile would be wrong on RGB pixels
    grey = load_image(good["gray16_png.png"])
    assert torch.equal(grey.rgb[:, 0], grey.rgb[:, 1]) and grey.bits == 16


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff"])
def test_lossless_round_trip_keeps_pixels_alpha_and_metadata(good, tmp_path, fmt):
    for name in ("rgba8_png.png", "rgba16_png.png", "photo_rot6_jpg.jpg", "rgba16_tif.tif", "palette_trns_png.png"):
        image = load_image(good[name])
        bits = output_bits(fmt, image.bits)
        dest = tmp_path / f"{Path(name).stem}.{fmt}"
        atomic_write(dest, encode_image(image.rgb, image.alpha, fmt=fmt, bits=bits, info=image.info))
        again = load_image(dest)
        assert again.bits == bits, (name, fmt)
        if bits == image.bits:
            assert torch.allclose(again.rgb, image.rgb, atol=0.5 / (65535 if bits == 16 else 255)), (name, fmt)
            if image.alpha is not None:
                assert np.array_equal(again.alpha, image.alpha), (name, fmt)
        for key in ("icc_profile", "exif", "xmp"):
            if key in image.info:
                assert key in again.info, (name, fmt, key)
        if "xmp" in image.info:
            assert b'tiff:Orientation="1"' in again.info["xmp"]
        if name.startswith("photo"):
            exif = Image.Exif()
            exif.load(again.info["exif"])
            assert exif.get(315) == "Test Artist" and exif.get(0x0112, 1) == 1
    assert not list(tmp_path.glob(".*.part"))


def test_jpeg_out_refuses_alpha_and_keeps_metadata(good, tmp_path):
    photo = load_image(good["photo_rot6_jpg.jpg"])
    data = encode_image(photo.rgb, None, fmt="jpeg", info=photo.info, quality=90)
    (tmp_path / "p.jpg").write_bytes(data)
    again = load_image(tmp_path / "p.jpg")
    assert again.size == photo.size and again.orientation == 1 and "icc_profile" in again.info
    rgba = load_image(good["rgba8_png.png"])
    with pytest.raises(InputImageError, match="transparency"):
        encode_image(rgba.rgb, rgba.alpha, fmt="jpeg")


def test_every_bad_file_is_refused_by_name_with_its_reason(bad):
    from fixative.core.engine import check_size

    folder, expected = bad
    for name, word in expected.items():
        before = (folder / name).read_bytes()
        with pytest.raises(InputImageError) as info:
            if name in corpus.TOO_SMALL:  # readable, but below the engine's minimum: refused before any search
                check_size(*load_image(folder / name).size)
            else:
                load_image(folder / name)
        assert word in str(info.value) and (name in str(info.value) or name in corpus.TOO_SMALL), str(info.value)
        assert (folder / name).read_bytes() == before


def test_pixel_limit_is_configurable_and_checked_before_decoding(good):
    with pytest.raises(InputImageError, match="pixel limit"):
        load_image(good["rgb8_png.png"], max_pixels=100)
    assert load_image(good["rgb8_png.png"], max_pixels=corpus.H * corpus.W).size == (corpus.H, corpus.W)


def test_atomic_write_replaces_and_cleans(tmp_path):
    dest = tmp_path / "x.png"
    atomic_write(dest, b"one")
    atomic_write(dest, b"two")
    assert dest.read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["x.png"]
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask
    (tmp_path / ".x.png.abc123.part").write_bytes(b"half")
    assert remove_stale_temporaries(dest) == 1 and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_atomic_path_json_and_mode_leave_no_temporary(tmp_path):
    from fixative.files.atomic import atomic_path, atomic_write_json, atomic_write_text

    dest = tmp_path / "r.json"
    atomic_write_json(dest, {"a": 1})
    assert dest.read_text() == '{\n  "a": 1\n}\n'
    atomic_write_text(tmp_path / "key.pem", "secret", encoding="ascii", mode=0o600)
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    with atomic_path(tmp_path / "w.bin") as tmp:  # for writers that take a file name
        assert tmp.parent == tmp_path and tmp.name.startswith(".w.bin.") and tmp.name.endswith(".part")
        assert tmp.stat().st_mode & 0o077 == 0  # never readable by others, even briefly
        tmp.write_bytes(b"whole")
    assert (tmp_path / "w.bin").read_bytes() == b"whole"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"ha")
        raise RuntimeError("killed mid-write")
    assert dest.read_text() == '{\n  "a": 1\n}\n'  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem", "r.json", "w.bin"]
