"""Make the README's flat-area crop: ``docs/flat-crop-200.png``.

From the files ``benchmarks/visibility.py --save DIR`` writes for an image (the image at the benchmark's
size, its result with the former default, LPIPS 0.07 with an 8/255 cap, as saved, and its result with the
new default, no more visible than its own JPEG at quality 75 by FLIP), the figure shows the same crop of a
flat area at 200 % (each pixel drawn as 2x2), left to right and top to bottom: the original, the former
default, the new default, and the image's own JPEG at quality 75, each labelled with its FLIP (by
``flip-evaluator``, on the whole image) against the original.

    PYTHONPATH=. python benchmarks/visibility.py --images-list Storm.jpg --levels 75 --lpips medium --save out/
    PYTHONPATH=. python docs/make_flat_crop.py --saved out/ --image Storm --crop 620,20,920,220
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fixative.core.visibility import flip_of_file, jpeg_reference
from fixative.files.images import load_image, save_png

#: the sky of Storm.jpg at 1024 px (left, top, right, bottom): smooth gradient, no texture to hide a change
DEFAULT_CROP = (620, 20, 920, 220)
GAP, LABEL = 8, 20


def to_pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


def parse_crop(text: str) -> tuple[int, int, int, int]:
    left, top, right, bottom = (int(v) for v in text.split(","))
    return left, top, right, bottom


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saved", type=Path, required=True, help="the folder of benchmarks/visibility.py --save")
    ap.add_argument("--image", default="Storm", help="the image's name without extension")
    ap.add_argument("--crop", type=parse_crop, default=DEFAULT_CROP, help="left,top,right,bottom in px")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("flat-crop-200.png"))
    args = ap.parse_args()

    art = load_image(args.saved / f"{args.image}-original.png").rgb
    old = load_image(args.saved / f"{args.image}-lpips-medium.png").rgb
    new = load_image(args.saved / f"{args.image}-q75.png").rgb
    jpeg = jpeg_reference(art, 75)
    flips = [flip_of_file(art, im) for im in (old, new, jpeg)]
    panels = [(art, "original"),
              (old, f"former default (LPIPS 0.07 + 8/255 cap): FLIP {flips[0]:.3f}"),
              (new, f"new default (no more visible than JPEG q75): FLIP {flips[1]:.3f}"),
              (jpeg, f"the same picture saved as JPEG q75: FLIP {flips[2]:.3f}")]
    left, top, right, bottom = args.crop
    w, h = (right - left) * 2, (bottom - top) * 2
    figure = Image.new("RGB", (w * 2 + GAP, (h + LABEL) * 2 + GAP), "white")
    draw = ImageDraw.Draw(figure)
    for k, (image, text) in enumerate(panels):
        x0, y0 = (k % 2) * (w + GAP), (k // 2) * (h + LABEL + GAP)
        figure.paste(to_pil(image).crop(args.crop).resize((w, h), Image.NEAREST), (x0, y0 + LABEL))
        draw.text((x0 + 4, y0 + 4), text, fill="black")
    save_png(args.out, torch.from_numpy(np.asarray(figure) / 255.0).permute(2, 0, 1)[None].float())
    print(f"{args.out}: {args.image} crop {args.crop} at 200 %; FLIP former default {flips[0]:.4f}, "
          f"new default {flips[1]:.4f}, JPEG q75 {flips[2]:.4f}")


if __name__ == "__main__":
    main()
