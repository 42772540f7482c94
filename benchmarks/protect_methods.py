"""Benchmark: our search method against the two baselines, on real photos, in one run.

Concept-poisons each image towards a target image with the real taef2 encoder and LPIPS alex
from ../shared/models (or --models-dir), all methods with the same time limit and the same
final quantise-and-scale-back. For each it saves the PNG, re-reads it from disk and prints the
LPIPS of the saved file and the distance ratio ||E(x') - E(t)|| / ||E(x) - E(t)||.

    python benchmarks/protect_methods.py --seconds 120
    python benchmarks/protect_methods.py --pairs LadyBird.jpg:YellowFlower.jpg Garden.jpg:Storm.jpg
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fixative.core.optimizer import METHODS, OptimizerSettings
from fixative.files.images import load_image, save_png
from fixative.models.loading import load_protector

SHARED = Path(__file__).resolve().parents[2] / "shared"


def load_square(path: Path, size: int) -> torch.Tensor:
    rgb = load_image(path).rgb
    return F.interpolate(rgb, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["LadyBird.jpg:YellowFlower.jpg"], help="IMAGE:TARGET names")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--encoder", default="taef2")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    protector = load_protector([args.encoder], models_dir=str(args.models_dir), device="cpu")
    print(f"models loaded in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"settings: encoder={args.encoder} size={args.size}x{args.size} budget={args.budget} "
          f"seconds={args.seconds} (same final 8-bit quantise + LPIPS scale-back for all methods)")
    header = f"{'image':28} {'method':9} {'steps':>6} {'seconds':>8} {'stopped':>10} {'scale':>6} " \
             f"{'LPIPS(saved)':>12} {'PSNR':>6} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs:
            name, target_name = pair.split(":")
            x = load_square(args.images / name, args.size)
            t = load_square(args.images / target_name, args.size)
            enc = protector.encoders[0]
            with torch.no_grad():
                base = float((enc(x) - enc(t)).norm())
            for method in args.methods:
                settings = OptimizerSettings(method=method, steps=100_000, seconds=args.seconds, patience=0)
                result = protector.protect(x, t, budget=args.budget, settings=settings)
                dest = save_png(Path(tmp) / f"{Path(name).stem}-{method}.png", result.image)
                saved = load_image(dest).rgb
                with torch.no_grad():
                    lp = float(protector.perceptual.distance(saved, x))
                    ratio = float((enc(saved) - enc(t)).norm()) / base
                    psnr = float(-10 * torch.log10(((saved - x) ** 2).mean()))
                m = result.metrics
                print(f"{name + '->' + target_name:28} {method:9} {m.steps:6d} {m.seconds:8.1f} {m.stopped:>10} "
                      f"{m.scale:6.3f} {lp:12.4f} {psnr:6.1f} {ratio:7.4f}", flush=True)


if __name__ == "__main__":
    main()
