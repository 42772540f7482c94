"""Make the README's before/after figure: ``docs/before-after.png``.

The artwork is drawn here, procedurally (a painted landscape), so the figure carries no third-party
image. It is protected the way ``fixative protect --intensity medium --robust off`` does it (no more
visible than the picture's own JPEG at quality 75, by FLIP) towards a drawn target in another style
(blue and yellow swirls), with taef2, and the figure shows, left to right: the original, the protected
image, where the change went (amplified), and what taef2 sees of each (its latents decoded back to pixels).

    python docs/make_figure.py --models-dir ../shared/models            # about a minute on a laptop CPU
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fixative.core.budgets import VisibilityLimit
from fixative.core.optimizer import OptimizerSettings
from fixative.files.images import save_png
from fixative.gui.views import decoded_view
from fixative.models.loading import load_protector

SIZE = 256  # pixels per side of each panel


def painted_landscape(size: int, seed: int = 3) -> np.ndarray:
    """A soft painted landscape (sky, sun, three hill lines, brush texture): size x size x 3 floats in [0,1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    sky = np.stack([0.98 - 0.35 * y, 0.75 - 0.25 * y, 0.55 + 0.35 * y], axis=-1)
    sun = np.exp(-(((x - 0.7) ** 2 + (y - 0.3) ** 2) / 0.006))[..., None]
    img = sky * (1 - sun) + np.array([1.0, 0.92, 0.7]) * sun
    hills = [(0.55, 0.05, 7.0, (0.45, 0.5, 0.62)), (0.68, 0.06, 4.0, (0.3, 0.45, 0.35)),
             (0.82, 0.04, 9.0, (0.2, 0.3, 0.18))]
    for base, amp, freq, colour in hills:
        ridge = base + amp * np.sin(freq * x * math.pi + rng.uniform(0, 6)) + 0.02 * np.sin(31 * x)
        mask = 1 / (1 + np.exp(-(y - ridge) * size / 2.5))
        shade = np.array(colour) * (1.05 - 0.4 * (y - ridge).clip(0, 1))[..., None]
        img = img * (1 - mask[..., None]) + shade * mask[..., None]
    strokes = rng.normal(0, 1, (size // 4, size // 4))
    strokes = np.kron(strokes, np.ones((4, 4)))[:size, :size]
    img = img + 0.025 * strokes[..., None] + rng.normal(0, 0.01, img.shape)
    return img.clip(0, 1)


def swirls(size: int) -> np.ndarray:
    """The target style: dense swirling strokes in deep blue and yellow, size x size x 3 floats in [0,1]."""
    y, x = np.mgrid[0:size, 0:size] / size
    angle = np.arctan2(y - 0.45, x - 0.5)
    radius = np.hypot(y - 0.45, x - 0.5)
    waves = np.sin(40 * radius + 3 * angle) + 0.6 * np.sin(23 * x + 17 * y) * np.cos(29 * y)
    t = (0.5 + 0.5 * np.tanh(1.5 * waves))[..., None]
    return ((1 - t) * np.array([0.08, 0.15, 0.45]) + t * np.array([0.95, 0.85, 0.3])).clip(0, 1)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


def to_pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, default=Path("../shared/models"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("before-after.png"))
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()

    protector = load_protector(["taef2"], models_dir=args.models_dir)
    art, target = to_tensor(painted_landscape(SIZE)), to_tensor(swirls(SIZE))
    result = protector.protect(art, target, budget=VisibilityLimit(like_jpeg=75),
                               settings=OptimizerSettings(steps=args.steps, seed=0))
    protected = result.image.float().cpu().reshape(1, 3, SIZE, SIZE)
    encoder = protector.encoders[0]
    seen_before, seen_after = decoded_view(encoder, art), decoded_view(encoder, protected)
    diff = (protected - art).abs().amax(dim=1, keepdim=True)
    gain = 1 / max(float(diff.max()), 1e-6)
    m = result.metrics
    panels = [
        (to_pil(art), "original"),
        (to_pil(protected), f"protected (FLIP {m.flip:.3f}, like JPEG q{m.like_jpeg})"),
        (to_pil((diff * gain).expand(1, 3, SIZE, SIZE)), f"change, amplified x{gain:.0f}"),
        (to_pil(seen_before), "taef2 sees the original"),
        (to_pil(seen_after), f"taef2 sees the protected one (ratio {m.mean_ratio:.2f})"),
    ]
    label = 22
    figure = Image.new("RGB", (SIZE * len(panels) + 8 * (len(panels) - 1), SIZE + label), "white")
    draw = ImageDraw.Draw(figure)
    for k, (panel, text) in enumerate(panels):
        left = k * (SIZE + 8)
        figure.paste(panel, (left, label))
        draw.text((left + 4, 4), text, fill="black")
    save_png(args.out, to_tensor(np.asarray(figure) / 255.0))
    print(f"{args.out}: FLIP {m.flip:.4f} (limit {m.flip_limit:.4f}), "
          f"LPIPS {m.lpips:.4f}, PSNR {m.psnr:.1f} dB, largest change {m.linf * 255:.0f}/255, "
          f"distance ratio on taef2 {m.mean_ratio:.3f}, {m.steps} steps in {m.seconds:.1f} s")


if __name__ == "__main__":
    main()
