"""Benchmark: which code-made target protects best, for the default style cloak (no diffusion model).

Cloaks each photo towards each candidate of :data:`fixative.targets.patterns.RESTYLES` with the built-in taef2
encoder and LPIPS alex at the default intensity (budget 0.07, 8/255 cap), the same steps for all, and
measures what a trainer's encoder sees of the saved (8-bit) result, at the full size and at the
1024-px longer-side view that trainers' aspect buckets make:

- ``shift``: ||E(x') - E(x)|| / ||E(x)||, how far the protected image's latent moved from the original's;
- ``ratio``: ||E(x') - E(t)|| / ||E(x) - E(t)||, how much closer to the target it got (1 = not at all);
- ``seen``: LPIPS between the decoded views D(E(x')) and D(E(x)) at the 1024-px view: how different
  the picture a model learns from the protected file looks from the one it would learn from the original.

    python benchmarks/default_target.py --images Storm.jpg FreshFlower.jpg Elephants.jpg --steps 20
    python benchmarks/default_target.py --max-side 1536 --steps 8     # a quicker run on a small CPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fixative.core.constraints import quantize
from fixative.core.engine import Protector
from fixative.core.optimizer import OptimizerSettings
from fixative.files.images import load_image
from fixative.models.loading import load_protector
from fixative.targets.patterns import RESTYLES, restyle

SHARED = Path(__file__).resolve().parents[2] / "shared"


def view(x: torch.Tensor, longer: int) -> torch.Tensor:
    """The image resized (bicubic, antialiased) so its longer side is ``longer`` px."""
    h, w = x.shape[-2:]
    s = longer / max(h, w)
    size = (max(8, round(h * s)), max(8, round(w * s)))
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


@torch.no_grad()
def measure(protector: Protector, x: torch.Tensor, xp: torch.Tensor, t: torch.Tensor, longer: int | None) -> dict:
    enc = protector.encoders[0]
    if longer is not None:
        x, xp, t = view(x, longer), view(xp, longer), view(t, longer)
    ex, exp, et = enc(x), enc(xp), enc(t)
    out = {"shift": float((exp - ex).norm() / ex.norm()), "ratio": float((exp - et).norm() / (ex - et).norm())}
    if longer is not None and enc.can_decode:
        dx, dxp = enc.decode(ex, x.shape[-2:]).clamp(0, 1), enc.decode(exp, x.shape[-2:]).clamp(0, 1)
        out["seen"] = float(protector.perceptual.distance(dx, dxp).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=["Storm.jpg", "FreshFlower.jpg", "Elephants.jpg"])
    ap.add_argument("--images-dir", type=Path, default=SHARED / "images")
    ap.add_argument("--steps", type=int, default=20, help="search steps per tile, the same for every target")
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--linf", type=float, default=8 / 255)
    ap.add_argument("--candidates", nargs="+", default=list(RESTYLES), choices=RESTYLES)
    ap.add_argument("--max-side", type=int, help="first shrink each photo to this longer side (the 'full size' "
                    "then; default: the file's own size)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    protector = load_protector(["taef2"], device="cpu")  # the built-in weights
    print(f"models loaded in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {args.threads} threads")
    print(f"settings: encoder taef2 (built-in), LPIPS alex, budget {args.budget}, L-inf {args.linf:.4f}, "
          f"{args.steps} steps per tile, robust off, saved as 8-bit; views: full size and 1024-px longer side")
    header = (f"{'image':18} {'size':>10} {'target':14} {'make s':>6} {'search s':>8} {'cpu s':>7} {'LPIPS':>6} "
              f"{'shift full':>10} {'ratio full':>10} {'shift 1024':>10} {'ratio 1024':>10} {'seen 1024':>9}")
    print(header)
    print("-" * len(header))
    totals: dict[str, list[dict]] = {c: [] for c in args.candidates}
    for name in args.images:
        x = load_image(args.images_dir / name).rgb
        if args.max_side and max(x.shape[-2:]) > args.max_side:
            x = quantize(view(x, args.max_side), 255)
        size = f"{x.shape[-1]}x{x.shape[-2]}"
        for cand in args.candidates:
            t1 = time.perf_counter()
            t = restyle(x, cand)
            made = time.perf_counter() - t1
            c0, w0 = time.process_time(), time.perf_counter()
            result = protector.protect(x, t, budget=args.budget,
                                       settings=OptimizerSettings(steps=args.steps, linf=args.linf, robust=None))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            xp = quantize(result.image, 255)
            full, v1024 = measure(protector, x, xp, t, None), measure(protector, x, xp, t, 1024)
            row = {"shift_full": full["shift"], "ratio_full": full["ratio"], "shift_1024": v1024["shift"],
                   "ratio_1024": v1024["ratio"], "seen_1024": v1024.get("seen", float("nan"))}
            totals[cand].append(row)
            print(f"{name:18} {size:>10} {cand:14} {made:6.2f} {wall:8.1f} {cpu:7.1f} {result.metrics.lpips:6.4f} "
                  f"{row['shift_full']:10.4f} {row['ratio_full']:10.4f} {row['shift_1024']:10.4f} "
                  f"{row['ratio_1024']:10.4f} {row['seen_1024']:9.4f}", flush=True)
    print("\nmean over the images (higher shift and seen = stronger protection; ratio is per target, "
          "so it does not compare targets):")
    best = None
    for cand, rows in totals.items():
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(f"  {cand:14} shift full {mean['shift_full']:.4f}  shift 1024 {mean['shift_1024']:.4f}  "
              f"seen 1024 {mean['seen_1024']:.4f}  ratio 1024 {mean['ratio_1024']:.4f}")
        if best is None or mean["seen_1024"] > best[1]:
            best = (cand, mean["seen_1024"])
    print(f"protects best (largest change in what the encoder sees at the 1024-px view): {best[0]}")


if __name__ == "__main__":
    main()
