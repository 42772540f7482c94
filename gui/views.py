"""Pictures the app shows after a protection: the original as read, an amplified difference map,
what the model "sees" (an encoder's latent decoded), and the zip of a portfolio's results.

All pictures are written as lossless PNG files (the app shows them by path, so nothing is
re-encoded as WebP on the way). They are previews: the downloadable outputs are the files that
:func:`fixative.batch.runner.run_batch` wrote, untouched.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fixative.files.images import LoadedImage, load_image, save_png
from fixative.provenance.manifest import INDEX_NAME, record_path

#: the difference map's gain is capped so that a change of one level does not fill the map
MAX_GAIN = 64.0


def original_preview(original: LoadedImage, dest: Path) -> Path:
    """The original as the engine read it (upright, 8-bit, alpha kept) as a PNG at ``dest``."""
    alpha = original.alpha
    if alpha is not None and alpha.dtype != np.uint8:
        alpha = (alpha.astype(np.float32) / 257 + 0.5).astype(np.uint8)
    return save_png(dest, original.rgb, alpha)


@dataclass
class DifferenceMap:
    """An amplified difference map: ``path`` (PNG), ``gain`` (x), ``largest`` (the largest change, in 0-255 levels)."""

    path: Path
    gain: float
    largest: float

    def caption(self) -> str:
        if self.largest == 0:
            return "No pixel changed."
        return (f"Where the picture changed: every pixel's largest colour change, amplified x{self.gain:.0f} "
                f"(white = the largest change, {self.largest:.1f} of 255 levels; black = unchanged).")


def difference_map(original: torch.Tensor, protected: torch.Tensor, dest: Path) -> DifferenceMap:
    """|protected - original| (largest over the colour channels) amplified so that the largest change is white.

    ``original``/``protected``: 1x3xHxW floats in [0,1] of the same size. The gain is 255 / the
    largest change in levels, at most :data:`MAX_GAIN`.
    """
    diff = (protected.float() - original.float()).abs().amax(dim=1)[0] * 255  # H x W, in levels
    largest = float(diff.max())
    gain = min(MAX_GAIN, 255.0 / largest) if largest > 0 else 1.0
    pixels = (diff * gain).clamp(0, 255).round().to(torch.uint8).cpu().numpy()
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "L").save(dest, format="PNG")
    return DifferenceMap(dest, gain, largest)


@torch.no_grad()
def decoded_view(encoder, image: torch.Tensor, cell: int = 1024) -> torch.Tensor:
    """D(E(image)): what ``encoder`` keeps of ``image`` (1x3xHxW in [0,1]), decoded back to pixels.

    Large images go through in non-overlapping cells of at most ``cell`` pixels (bounded memory),
    each encoded and decoded at full resolution. Needs ``encoder.can_decode``.
    """
    from fixative.core.tiling import plan_tiles

    h, w = image.shape[-2:]
    out = torch.empty(1, 3, h, w)
    for tile in plan_tiles(h, w, cell, 0, int(getattr(encoder, "downsample", 8))):
        crop = tile.crop(image)
        decoded = encoder.decode(encoder(crop), size=tuple(crop.shape[-2:]))
        out[..., tile.top : tile.bottom, tile.left : tile.right] = decoded.float().cpu()
    return out


@dataclass
class ModelView:
    """What the model sees: ``original``/``protected`` are PNG paths of the decoded latents (None when no
    encoder can decode); ``encoder`` names the encoder used; ``note`` says what is shown or why nothing is."""

    original: Path | None
    protected: Path | None
    encoder: str | None
    note: str


def model_view(encoders, original: torch.Tensor, protected: torch.Tensor, folder: Path, stem: str,
               cell: int = 1024) -> ModelView:
    """Decode the original's and the protected image's latents with the first of ``encoders`` that can decode."""
    decoder = next((e for e in encoders if getattr(e, "can_decode", False)), None)
    names = ", ".join(str(getattr(e, "name", "?")) for e in encoders)
    if decoder is None:
        return ModelView(None, None, None,
                         f"None of the encoders used ({names}) has a decoder here, so what the model sees cannot be "
                         "shown. taef2 can (with taef2_decoder.pth in the model folder), and so can the full VAEs.")
    before = save_png(folder / f"{stem}.model-original.png", decoded_view(decoder, original, cell))
    after = save_png(folder / f"{stem}.model-protected.png", decoded_view(decoder, protected, cell))
    return ModelView(before, after, decoder.name,
                     f"What the {decoder.name} encoder sees, decoded back to pixels: left the original, right the "
                     "protected image. A model trained on the protected image learns from the right-hand view.")


def load_pair(original: Path, protected: Path, max_pixels: int) -> tuple[LoadedImage, LoadedImage]:
    """Read an original and its protected file the way the engine reads images (upright, [0,1])."""
    return load_image(original, max_pixels=max_pixels), load_image(protected, max_pixels=max_pixels)


def portfolio_zip(out_dir: Path, outputs: list[Path], dest: Path, *, certificate: str | None = None) -> Path:
    """A zip of ``outputs`` (files in ``out_dir``), their provenance records, the portfolio index and its
    signature, and ``certificate`` (the signer's public certificate chain, PEM) as ``signer-certificate.pem``.

    Files are stored, not recompressed, so each image in the zip is byte-for-byte the engine's output.
    """
    from fixative.provenance.credentials import INDEX_SIGNATURE_NAME

    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for output in outputs:
            for path in (output, record_path(output)):
                if path.is_file():
                    zf.write(path, path.relative_to(out_dir).as_posix())
        for name in (INDEX_NAME, INDEX_SIGNATURE_NAME):
            if (out_dir / name).is_file():
                zf.write(out_dir / name, name)
        if certificate:
            zf.writestr(CERTIFICATE_NAME, certificate)
    return dest


#: the signer's public certificate chain in a download (what ``fixative verify --trust`` takes)
CERTIFICATE_NAME = "signer-certificate.pem"
