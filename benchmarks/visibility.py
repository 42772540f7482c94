"""Gain against visibility: today's LPIPS budget vs the visibility (FLIP) budget.

For each image (resized to ``--size`` px on its longer side) and each visibility level "as visible as
its own JPEG at quality Q" (FLIP of that JPEG, by NVIDIA's ``flip-evaluator``), it prints the distance
ratio (after / before, towards the target; lower = stronger; gain = 1 - ratio) of:

- ``lpips``: the best of today's LPIPS presets (low 0.03 + 4/255 cap, medium 0.07 + 8/255, high 0.10 +
  16/255), each protected once and then scaled back (quantise-then-bisect, as the engine does) until its
  FLIP is at most the level's;
- ``visibility``: ``--intensity`` at that level (protected with the FLIP budget itself; the saved file is
  guaranteed by quantise-then-scale-back in FLIP).

Images: a flat digital artwork (Elephants.jpg), a flat illustration drawn here in code, a photo with bokeh
(LadyBird.jpg) and a textured photo (Garden.jpg), towards Wood.jpg (Garden.jpg for Wood itself).

With training views (``--views train``, the default, as ``fixative protect`` runs) the ratio is the mean
over the evaluation views (:func:`fixative.core.views.evaluation_views`). ``--check`` prints the issue's targets for
the default preset: FLIP at most the JPEG's, ratio at most 0.80 on each image, mean gain at least 1.3x.

    python benchmarks/visibility.py --models-dir ../shared/models --size 1024 --steps 300
    python benchmarks/visibility.py --images-list Elephants.jpg Storm.jpg LadyBird.jpg --levels 75 --lpips medium \
        --check --save out/
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fixative.core.budgets import VisibilityLimit
from fixative.core.optimizer import OptimizerSettings
from fixative.core.visibility import VisibilityBudget, VisibilityModel, flip_of_file, jpeg_reference
from fixative.files.images import load_image, save_png
from fixative.models.loading import load_protector
from fixative.presets import LPIPS_INTENSITIES, LPIPS_INTENSITY_LINF

SHARED = Path(__file__).resolve().parents[2] / "shared"
DRAWN = "drawn-flat"


def resized(rgb: torch.Tensor, size: int, align: int = 8) -> torch.Tensor:
    """Longer side ``size`` px (both sides a multiple of ``align``), antialiased."""
    h, w = rgb.shape[-2:]
    s = size / max(h, w)
    nh, nw = max(align, round(h * s / align) * align), max(align, round(w * s / align) * align)
    return F.interpolate(rgb, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def flat_illustration(height: int, width: int, seed: int = 5) -> torch.Tensor:
    """A flat cartoon-like illustration: a plain sky, a sun, hills and houses in solid colours with dark
    outlines (1x3xHxW in [0,1])."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.ones((height, width, 3)) * np.array([0.55, 0.78, 0.95])
    img[np.hypot(x - 0.78, y - 0.16) < 0.07] = (1.0, 0.85, 0.2)
    for base, amp, freq, colour in ((0.42, 0.04, 5.0, (0.45, 0.7, 0.35)), (0.52, 0.03, 9.0, (0.3, 0.55, 0.25))):
        ridge = base + amp * np.sin(freq * x * math.pi + rng.uniform(0, 6))
        img[y > ridge] = colour
    for i in range(4):
        x0, w0 = 0.08 + i * 0.22, 0.12
        body = (x > x0) & (x < x0 + w0) & (y > 0.5) & (y < 0.62)
        img[body] = rng.choice([(0.9, 0.4, 0.3), (0.95, 0.9, 0.75), (0.4, 0.45, 0.8)])
        roof = (y < 0.5) & (y > 0.5 - (w0 / 2 - np.abs(x - x0 - w0 / 2))) & (x > x0) & (x < x0 + w0)
        img[roof] = (0.5, 0.2, 0.15)
        edge = body ^ ((x > x0 + 0.004) & (x < x0 + w0 - 0.004) & (y > 0.504) & (y < 0.616))
        img[edge] = (0.1, 0.1, 0.12)
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]


def load(images: Path, name: str, size: int) -> torch.Tensor:
    if name == DRAWN:
        return flat_illustration(round(size * 0.625 / 8) * 8, size)
    return resized(load_image(images / name).rgb, size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--images-list", nargs="+", default=["Elephants.jpg", DRAWN, "LadyBird.jpg", "Garden.jpg"])
    ap.add_argument("--target", default="Wood.jpg")
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--encoder", default="taef2")
    ap.add_argument("--size", type=int, default=1024, help="longer side, px")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--levels", type=int, nargs="+", default=[90, 75, 50], help="JPEG qualities")
    ap.add_argument("--lpips", nargs="+", default=list(LPIPS_INTENSITIES), choices=list(LPIPS_INTENSITIES),
                    help="today's LPIPS presets to scale back to each level (the best is reported)")
    ap.add_argument("--masking", type=float, default=None, help="masking strength of the visibility search")
    ap.add_argument("--views", choices=("off", "train"), default="train",
                    help="train: search at the training views (fixative.core.views); the ratio reported is then "
                         "the mean "
                         "over the evaluation views")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--save", type=Path, help="folder to save each image at the benchmark's size, its LPIPS "
                    "presets' results as saved and its q75 (default-preset) result in, as PNG (docs/make_flat_crop.py)")
    ap.add_argument("--check", action="store_true", help="print the issue's targets for the q75 level (the default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    protector = load_protector([args.encoder], models_dir=str(args.models_dir), device=args.device)
    dev = protector.device
    settings = OptimizerSettings(steps=args.steps, patience=0, views=args.views)

    def ratio_of(metrics) -> float:
        if args.views == "train" and metrics.view_ratio:
            return sum(metrics.view_ratio.values()) / len(metrics.view_ratio)
        return metrics.mean_ratio
    print(f"settings: encoder={args.encoder} size={args.size} px (longer side) steps={args.steps} device={dev} "
          f"threads={torch.get_num_threads()} target={args.target} views={args.views}"
          "; FLIP by flip-evaluator at 67 ppd; sec = wall-clock / CPU (process) seconds of each search")
    header = (f"{'image':14} {'level':>6} {'FLIP(jpeg)':>10} | {'lpips':>6} {'ratio':>6} {'FLIP':>6} | "
              f"{'vis ratio':>9} {'FLIP':>6} {'LPIPS':>6} {'sec':>9} | {'gain x':>6}")
    print(header)
    print("-" * len(header))
    gains, failures, checks = [], 0, []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for name in args.images_list:
        x = load(args.images, name, args.size).to(dev)
        tname = "Garden.jpg" if name == args.target else args.target
        t = resized(load_image(args.images / tname).rgb, args.size)
        t = F.interpolate(t, size=tuple(x.shape[-2:]), mode="bicubic", antialias=True, align_corners=False)
        t = t.clamp(0, 1).to(dev)
        stem = Path(name).stem
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            save_png(args.save / f"{stem}-original.png", x)
        lpips_runs = {}
        for preset in args.lpips:
            t0, c0 = time.perf_counter(), time.process_time()
            run = protector.protect(x, t, budget=LPIPS_INTENSITIES[preset],
                                    settings=OptimizerSettings(steps=args.steps, patience=0, views=args.views,
                                                               linf=LPIPS_INTENSITY_LINF[preset]))
            lpips_runs[preset] = run.image.to(dev) - x
            print(f"{stem:14} {'lpips ' + preset:>17}: ratio {ratio_of(run.metrics):.3f} as saved, FLIP "
                  f"{flip_of_file(x, run.image):.4f}, LPIPS {run.metrics.lpips:.3f}, "
                  f"{time.perf_counter() - t0:.0f} / {time.process_time() - c0:.0f} s", flush=True)
            if args.save is not None:
                save_png(args.save / f"{stem}-lpips-{preset}.png", run.image)
        flip = VisibilityModel()
        for q in args.levels:
            level = flip_of_file(x, jpeg_reference(x, q))
            best = None
            for preset, delta in lpips_runs.items():
                budget = VisibilityBudget(flip, x, level * 0.998)
                dq, _, _ = budget.scale_back(delta, levels=255)
                scaled = (x + dq).clamp(0, 1)
                ratio = ratio_of(protector.measure(x, scaled, t))
                if best is None or ratio < best[1]:
                    best = (preset, ratio, flip_of_file(x, scaled))
            limit = VisibilityLimit(like_jpeg=q) if args.masking is None else VisibilityLimit(q, masking=args.masking)
            t0, c0 = time.perf_counter(), time.process_time()
            ours = protector.protect(x, t, budget=limit, settings=settings)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            ours_flip = flip_of_file(x, ours.image)
            if ours_flip > level:
                failures += 1
            if args.save is not None and q == 75:
                save_png(args.save / f"{stem}-q75.png", ours.image)
            ours_ratio = ratio_of(ours.metrics)
            gain = (1 - ours_ratio) / max(1 - best[1], 1e-6)
            gains.append(gain)
            if q == 75:
                checks.append((stem, ours_flip, level, ours_ratio, gain))
            print(f"{stem:14} {'q' + str(q):>6} {level:10.4f} | "
                  f"{best[0]:>6} {best[1]:6.3f} {best[2]:6.4f} | "
                  f"{ours_ratio:9.3f} {ours_flip:6.4f} {ours.metrics.lpips:6.3f} {wall:4.0f}/{cpu:<4.0f} | "
                  f"{gain:6.2f}", flush=True)
    print(f"mean gain ratio (visibility / best LPIPS preset at equal FLIP): {sum(gains) / len(gains):.2f}; "
          f"FLIP over the JPEG's: {failures} of {len(gains)}")
    if args.check and checks:
        print("targets of the default preset (q75): FLIP <= its JPEG's, ratio <= 0.80 on each, mean gain >= 1.3x")
        for stem, f, level, ratio, _ in checks:
            print(f"  {stem:14} FLIP {f:.4f} <= {level:.4f}: {'yes' if f <= level else 'NO'}; "
                  f"ratio {ratio:.3f} <= 0.80: {'yes' if ratio <= 0.80 else 'NO'}")
        mean = sum(c[4] for c in checks) / len(checks)
        print(f"  mean gain x {mean:.2f} >= 1.3: {'yes' if mean >= 1.3 else 'NO'}")
    print(f"total: {time.perf_counter() - wall0:.0f} s wall-clock, {time.process_time() - cpu0:.0f} s CPU (process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
