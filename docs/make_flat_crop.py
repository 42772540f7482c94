"""Make the README's flat-area crop: ``docs/flat-crop-200.png``.

A flat illustration drawn in code (``benchmarks/visibility.py``: plain sky, solid hills and houses) is
protected towards ``Wood.jpg`` with taef2 twice: with the default intensity (no more visible than its own
JPEG at quality 75, by FLIP) and with the former default (LPIPS 0.07 with an 8/255 cap). The figure shows
the same crop of the plain sky and a roof edge at 200 % (each pixel drawn as 2x2), left to right: the
original, the former default, the new default, and the image's own JPEG at quality 75.

    PYTHONPATH=. python docs/make_flat_crop.py --models-dir ../shared/models --images ../shared/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from benchmarks.visibility import flat_illustration, resized
from protect.budgets import LpipsLimit, VisibilityLimit
from protect.engine import Protector
from protect.images import load_image, save_png
from protect.optimizer import OptimizerSettings
from protect.presets import LPIPS_INTENSITIES, LPIPS_INTENSITY_LINF
from protect.visibility import flip_of_file, jpeg_reference

CROP = (150, 40, 150 + 200, 40 + 140)  # left, top, right, bottom in the 512 px wide image: sky, sun and a roof


def to_pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, default=Path("../shared/models"))
    ap.add_argument("--images", type=Path, default=Path("../shared/images"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("flat-crop-200.png"))
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()

    protector = Protector.from_specs(["taef2"], models_dir=args.models_dir)
    art = flat_illustration(320, 512)
    target = F.interpolate(resized(load_image(args.images / "Wood.jpg").rgb, 512), size=(320, 512), mode="bicubic",
                           antialias=True, align_corners=False).clamp(0, 1)
    settings = OptimizerSettings(steps=args.steps, seed=0, patience=0)
    new = protector.protect(art, target, budget=VisibilityLimit(like_jpeg=75), settings=settings)
    old = protector.protect(art, target, budget=LpipsLimit(LPIPS_INTENSITIES["medium"]),
                            settings=OptimizerSettings(steps=args.steps, seed=0, patience=0,
                                                       linf=LPIPS_INTENSITY_LINF["medium"]))
    jpeg = jpeg_reference(art, 75)
    panels = [(art, "original"),
              (old.image, f"former default, LPIPS 0.07 + cap: FLIP {flip_of_file(art, old.image):.3f}, "
                          f"ratio {old.metrics.mean_ratio:.2f}"),
              (new.image, f"new default (like JPEG q75): FLIP {flip_of_file(art, new.image):.3f}, "
                          f"ratio {new.metrics.mean_ratio:.2f}"),
              (jpeg, f"its own JPEG q75: FLIP {flip_of_file(art, jpeg):.3f}")]
    w, h = (CROP[2] - CROP[0]) * 2, (CROP[3] - CROP[1]) * 2
    label = 20
    figure = Image.new("RGB", (w * 2 + 8, (h + label) * 2 + 8), "white")
    draw = ImageDraw.Draw(figure)
    for k, (image, text) in enumerate(panels):
        left, top = (k % 2) * (w + 8), (k // 2) * (h + label + 8)
        figure.paste(to_pil(image).crop(CROP).resize((w, h), Image.NEAREST), (left, top + label))
        draw.text((left + 4, top + 4), text, fill="black")
    save_png(args.out, torch.from_numpy(np.asarray(figure) / 255.0).permute(2, 0, 1)[None].float())
    print(f"{args.out}: former default FLIP {flip_of_file(art, old.image):.4f} ratio {old.metrics.mean_ratio:.3f}; "
          f"new default FLIP {flip_of_file(art, new.image):.4f} ratio {new.metrics.mean_ratio:.3f}; "
          f"JPEG q75 FLIP {flip_of_file(art, jpeg):.4f}; {args.steps} steps")


if __name__ == "__main__":
    main()
