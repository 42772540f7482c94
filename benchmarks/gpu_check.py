"""The CUDA path, checked and timed in one short run (for a lent GPU; see the README).

Checks, on the GPU:

1. the budget holds: LPIPS of the saved (8-bit) pixels, re-measured in float32, is within the
   budget, for fp32 and bf16 (and fp16) search precision;
2. the protection works: the distance ratio is well below 1, and close to the CPU's for the same
   settings (the CPU run is a small image, so it stays short);
3. batched tiles: a 2048-px image (4 tiles) searched with automatic tile batching gives the same
   kind of result as one tile at a time;

then prints images per minute at 512x512 and 2048x2048 with bf16 and the peak GPU memory.

    python benchmarks/gpu_check.py --models-dir models            # on a machine with CUDA
    python benchmarks/gpu_check.py --device cpu --steps 6 --count 1 --large 640 --tile-size 336  # CPU smoke run

Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fixative.core.optimizer import OptimizerSettings
from fixative.files.images import load_image
from fixative.models.loading import load_protector

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _pair(images: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    def one(name: str) -> torch.Tensor:
        rgb = load_image(images / name).rgb
        return F.interpolate(rgb, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)

    return one("LadyBird.jpg"), one("YellowFlower.jpg")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=300, help="steps per image (the 'standard' quality preset: 300)")
    ap.add_argument("--count", type=int, default=4, help="images per throughput measurement")
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--large", type=int, default=2048, help="side of the large, tiled image (px)")
    ap.add_argument("--tile-size", type=int, default=1024, help="tile size for the large image (px)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU (or --device cpu for a smoke run)")
        return 2
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"   [{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            failures.append(what)

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, device {dev} ({name})")
    protector = load_protector(["taef2"], models_dir=str(args.models_dir), device=args.device)
    cpu = load_protector(["taef2"], models_dir=str(args.models_dir), device="cpu")
    budget = args.budget

    print("\n1-2. budget and strength at 256x256 (CPU reference in fp32)")
    x, t = _pair(args.images, 256)
    ref = cpu.protect(x, t, budget=budget, settings=OptimizerSettings(steps=args.steps // 3, precision="fp32"))
    precisions = ["fp32", "bf16"] + (["fp16"] if dev.type == "cuda" else [])
    for precision in precisions:
        r = protector.protect(x, t, budget=budget,
                              settings=OptimizerSettings(steps=args.steps // 3, precision=precision))
        lp = float(cpu.perceptual.distance(r.image, x))
        check(lp <= budget + 1e-5, f"{precision}: LPIPS of the saved pixels {lp:.4f} <= {budget} (fp32 re-measure)")
        check(r.metrics.mean_ratio < 0.9, f"{precision}: distance ratio {r.metrics.mean_ratio:.3f} < 0.9")
        check(abs(r.metrics.mean_ratio - ref.metrics.mean_ratio) < 0.15,
              f"{precision}: ratio {r.metrics.mean_ratio:.3f} close to the CPU's {ref.metrics.mean_ratio:.3f}")

    print(f"\n3. {args.large}x{args.large}, tiles of {args.tile_size}: automatic tile batch against one at a time")
    x2, t2 = _pair(args.images, args.large)
    few = OptimizerSettings(steps=max(2, args.steps // 10), precision="bf16", patience=0)
    tiled = {"budget": budget, "settings": few, "tile_size": args.tile_size}
    one = protector.protect(x2, t2, tile_batch=1, **tiled)
    auto = protector.protect(x2, t2, tile_batch=None if dev.type == "cuda" else 2, **tiled)
    diff = float((one.image - auto.image).abs().max())
    print(f"   tile batch chosen: {auto.settings['tile_batch']} of {auto.metrics.tiles} tiles; "
          f"max pixel difference {diff * 255:.1f}/255")
    check(auto.metrics.lpips <= budget and one.metrics.lpips <= budget, "budget held, batched and one by one")
    check(abs(auto.metrics.mean_ratio - one.metrics.mean_ratio) < 0.05,
          f"batched ratio {auto.metrics.mean_ratio:.3f} ~ one-by-one {one.metrics.mean_ratio:.3f}")

    print(f"\n4. throughput, bf16, {args.steps} steps per image (patience off), taef2 + LPIPS alex")
    for size in (512, args.large):
        x, t = _pair(args.images, size)
        settings = OptimizerSettings(steps=args.steps, precision="bf16", patience=0)
        protector.protect(x, t, budget=budget, tile_size=args.tile_size,
                          settings=OptimizerSettings(steps=2, precision="bf16"))  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for _ in range(args.count):
            r = protector.protect(x, t, budget=budget, settings=settings, tile_size=args.tile_size)
        seconds = (time.perf_counter() - t0) / args.count
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
        print(f"   {size}x{size}: {60 / seconds:6.2f} images/min ({seconds:.1f} s/image, {r.metrics.tiles} tiles, "
              f"tile batch {r.settings['tile_batch']}), ratio {r.metrics.mean_ratio:.3f}, "
              f"LPIPS {r.metrics.lpips:.4f}, peak GPU memory {peak:.2f} GiB", flush=True)

    print("\nall checks passed" if not failures else f"\n{len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
