"""Speed and scale benchmark: step time per setup, and large artworks in bounded memory.

Prints, in one run:

1. the optimizer's step time for an SD-VAE-sized encoder (diffusers ``AutoencoderKL`` with the
   SD 1.x/2.x/SDXL architecture and random weights) at 512x512, in the naive fp32 eager setup
   and with each speed-up alone and together (channels_last, bf16 autocast), and the ratio
   ours / naive;
2. seconds per megapixel for taef2 at about 1 MP and on the full 5640x3172 artwork (17.9 MP,
   tiled), at a fixed number of steps per tile, with the peak resident memory (RSS) of the
   process.

    python benchmarks/speed.py --models-dir ../shared/models
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from protect.constraints import LpipsBudget
from protect.encoders import DiffusersKLEncoder
from protect.engine import Protector
from protect.images import load_image
from protect.objectives import TowardsTarget
from protect.optimizer import OptimizerSettings, search
from protect.perceptual import Perceptual
from protect.store import ModelStore

SHARED = Path(__file__).resolve().parents[2] / "shared"


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sd_vae_encoder() -> DiffusersKLEncoder:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    vae.decoder = None  # only the encoder takes part in the search
    return DiffusersKLEncoder(vae, "sd-vae (random weights)", "random")


def step_time(encoder, perceptual, x, t, precision: str, channels_last: bool, steps: int) -> float:
    """Seconds per optimizer step (after one warm-up step)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in (encoder, perceptual):
        m.to(memory_format=fmt)
    obj = TowardsTarget()
    obj.prepare([encoder], x, t)
    budget = LpipsBudget(perceptual, x, 0.07)
    settings = OptimizerSettings(steps=1, precision=precision, channels_last=channels_last, patience=0)
    search(x, [encoder], obj, budget, settings)  # warm-up: oneDNN primitive creation
    settings = OptimizerSettings(steps=steps, precision=precision, channels_last=channels_last, patience=0)
    t0 = time.perf_counter()
    out = search(x, [encoder], obj, budget, settings)
    return (time.perf_counter() - t0) / out.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--artwork", default="Elephants_5640x3172.jpg")
    ap.add_argument("--target", default="YellowFlower.jpg")
    ap.add_argument("--vae-steps", type=int, default=3, help="timed steps per setup for the SD-VAE encoder")
    ap.add_argument("--tile-steps", type=int, default=4, help="steps per tile for the large-image runs")
    ap.add_argument("--skip-vae", action="store_true", help="skip part 1 (run part 2 alone for a clean peak RSS)")
    ap.add_argument("--skip-large", action="store_true", help="skip part 2")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 native on this CPU: {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}")
    store = ModelStore(args.models_dir)
    perceptual = Perceptual.load("alex", store=store)

    if not args.skip_vae:
        print("\n1. optimizer step time, SD-VAE-sized encoder (random weights), 512x512, LPIPS alex")
        enc = sd_vae_encoder()
        g = torch.Generator().manual_seed(0)
        x, t = torch.rand(1, 3, 512, 512, generator=g), torch.rand(1, 3, 512, 512, generator=g)
        setups = [("naive: fp32, contiguous", "fp32", False), ("fp32 + channels_last", "fp32", True),
                  ("bf16 autocast, contiguous", "bf16", False), ("ours: bf16 + channels_last", "auto", True)]
        times = {}
        for label, precision, cl in setups:
            times[label] = step_time(enc, perceptual, x, t, precision, cl, args.vae_steps)
            print(f"   {label:28} {times[label]:7.2f} s/step", flush=True)
        naive, ours = times[setups[0][0]], times[setups[-1][0]]
        print(f"   ratio ours / naive = {ours / naive:.3f}  (speed-up {naive / ours:.2f}x)")
        del enc

    if args.skip_large:
        return
    print(f"\n2. taef2, {args.tile_steps} steps per tile, tile 1024 px, overlap 64 px, budget 0.07")
    protector = Protector.from_specs(["taef2"], models_dir=str(args.models_dir), device="cpu")
    art = load_image(args.images / args.artwork).rgb
    h, w = art.shape[-2:]
    side = (1_000_000 * h / w) ** 0.5
    small_size = (round(side / 8) * 8, round(side * w / h / 8) * 8)
    for label, image in [("~1 MP (resized artwork)", F.interpolate(art, size=small_size, mode="area")),
                         (f"full {w}x{h}", art)]:
        hh, ww = image.shape[-2:]
        target = load_image(args.images / args.target).rgb
        target = F.interpolate(target, size=(hh, ww), mode="bilinear", antialias=True).clamp(0, 1)
        settings = OptimizerSettings(steps=args.tile_steps, patience=0)
        t0 = time.perf_counter()
        result = protector.protect(image, target, budget=0.07, settings=settings)
        seconds = time.perf_counter() - t0
        mp = hh * ww / 1e6
        m = result.metrics
        print(f"   {label:24} {ww}x{hh} = {mp:5.2f} MP, {m.tiles:2d} tiles: {seconds:7.1f} s, "
              f"{seconds / mp:6.2f} s/MP, LPIPS {m.lpips:.4f}, ratio {m.mean_ratio:.3f}, "
              f"peak RSS so far {peak_rss_gib():.2f} GiB", flush=True)
        del target, result


if __name__ == "__main__":
    main()
