"""Speed and scale benchmark: step time per setup, and large artworks in bounded memory.

Prints, in one run:

1. the optimizer's step time for an SD-VAE-sized encoder (diffusers ``AutoencoderKL`` with the
   SD 1.x/2.x/SDXL architecture and random weights) at 512x512, in the naive fp32 eager setup
   and with each speed-up alone and together (channels_last, bf16 autocast), and the ratio
   ours / naive;
2. seconds per megapixel for taef2 at about 1 MP and on the full 5640x3172 artwork (17.9 MP,
   tiled), at a fixed number of steps per tile, with the peak resident memory (RSS) of the
   process, and how visible the tile seams are (the perturbation's column-to-column change at the
   tile boundaries against its usual change; 1.0 = no seam);
3. with ``--compile``, the step time of the taef2 search at 512x512 eager and under ``torch.compile``.

Times are wall-clock seconds and, beside them, the process's CPU seconds (all threads): on a machine
shared with other work the CPU seconds are the steadier figure.

    python benchmarks/speed.py --models-dir ../shared/models
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fixative.core.constraints import LpipsBudget
from fixative.core.objectives import TowardsTarget
from fixative.core.optimizer import OptimizerSettings, search
from fixative.core.tiling import plan_tiles
from fixative.files.images import load_image
from fixative.models.encoders import DiffusersKLEncoder
from fixative.models.loading import load_protector
from fixative.models.perceptual import Perceptual, load_perceptual
from fixative.models.store import ModelStore

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


def step_time(encoder, perceptual, x, t, precision: str, channels_last: bool, steps: int,
              warmup: int = 1) -> tuple[float, float]:
    """Wall and CPU seconds per optimizer step (after ``warmup`` warm-up steps)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in (encoder, perceptual):
        m.to(memory_format=fmt)
    obj = TowardsTarget()
    obj.prepare([encoder], x, t)
    budget = LpipsBudget(perceptual, x, 0.07)
    settings = OptimizerSettings(steps=warmup, precision=precision, channels_last=channels_last, patience=0)
    search(x, [encoder], obj, budget, settings)  # warm-up: oneDNN primitive creation, compilation
    settings = OptimizerSettings(steps=steps, precision=precision, channels_last=channels_last, patience=0)
    t0, c0 = time.perf_counter(), time.process_time()
    out = search(x, [encoder], obj, budget, settings)
    return (time.perf_counter() - t0) / out.steps, (time.process_time() - c0) / out.steps


def seam_visibility(protected: torch.Tensor, original: torch.Tensor, tile: int, overlap: int, align: int,
                    save: Path | None = None) -> float:
    """Largest column-to-column change of the perturbation near a vertical tile boundary, over its
    median change everywhere (1.0 = the boundaries look like anywhere else). With ``save``, writes a
    512x512 crop across the first boundary: the perturbation amplified 10x around mid-grey, and the
    protected pixels beside it."""
    d = (protected - original)[0].float()
    step = (d[:, :, 1:] - d[:, :, :-1]).abs().mean(dim=(0, 1))  # one value per column gap
    h, w = d.shape[-2:]
    tiles = plan_tiles(h, w, tile, overlap, align)
    starts = sorted({t.left for t in tiles} - {0})
    ends = sorted({t.right for t in tiles} - {w})
    edges = [x for x in starts + ends if 0 < x < w - 1]
    near = torch.stack([step[max(0, x - 2) : x + 2].max() for x in edges]).max() if edges else step.max()
    ratio = float(near / step.median())
    if save is not None and starts:
        x0 = max(0, min(w - 512, starts[0] + overlap // 2 - 256))
        y0 = max(0, h // 2 - 256)
        crop = d[:, y0 : y0 + 512, x0 : x0 + 512]
        amp = (crop * 10 + 0.5).clamp(0, 1)
        pix = protected[0, :, y0 : y0 + 512, x0 : x0 + 512].clamp(0, 1)
        both = torch.cat([amp, torch.ones(3, amp.shape[1], 8), pix], dim=2)
        Image.fromarray((both.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(save)
        print(f"   seam crop (x {x0}-{x0 + 512}, y {y0}-{y0 + 512}; tile edges at x = "
              f"{[e for e in edges if x0 <= e < x0 + 512]}): {save}")
    return ratio


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
    ap.add_argument("--compile", action="store_true", help="part 3: torch.compile against eager (slow to compile)")
    ap.add_argument("--seam-crop", type=Path, help="save a crop across a tile boundary of the full artwork here")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 native on this CPU: {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}")
    store = ModelStore(args.models_dir)
    perceptual = load_perceptual("alex", store=store)

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
            print(f"   {label:28} {times[label][0]:7.2f} s/step  ({times[label][1]:6.2f} CPU s/step)", flush=True)
        naive, ours = times[setups[0][0]], times[setups[-1][0]]
        print(f"   ratio ours / naive = {ours[0] / naive[0]:.3f}  (speed-up {naive[0] / ours[0]:.2f}x); "
              f"in CPU seconds {ours[1] / naive[1]:.3f}")
        del enc

    if not args.skip_large:
        large(args, perceptual)
    if args.compile:
        compiled(args, store, perceptual)


def compiled(args, store: ModelStore, perceptual: Perceptual) -> None:
    """Part 3: taef2 at 512x512, eager against torch.compile of the encoder and LPIPS backbone."""
    from fixative.models.encoders import load_encoder

    print("\n3. torch.compile, taef2 encoder + LPIPS alex, 512x512, bf16 where native")
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(1, 3, 512, 512, generator=g), torch.rand(1, 3, 512, 512, generator=g)
    enc = load_encoder("taef2", store=store)
    eager = step_time(enc, perceptual, x, t, "auto", True, 10)
    print(f"   eager                        {eager[0]:7.3f} s/step  ({eager[1]:6.3f} CPU s/step)", flush=True)
    t0 = time.perf_counter()
    enc.compile()
    perceptual.model.net.compile()
    fast = step_time(enc, perceptual, x, t, "auto", True, 10, warmup=3)
    print(f"   torch.compile                {fast[0]:7.3f} s/step  ({fast[1]:6.3f} CPU s/step); "
          f"compile + warm-up {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"   ratio compiled / eager = {fast[0] / eager[0]:.3f}; in CPU seconds {fast[1] / eager[1]:.3f}")


def large(args, perceptual: Perceptual) -> None:
    """Part 2: seconds per megapixel at ~1 MP and 17.9 MP, peak RSS, seams."""
    per_mp: list[tuple[float, float]] = []
    print(f"\n2. taef2, {args.tile_steps} steps per tile, tile 1024 px, overlap 64 px, budget 0.07")
    protector = load_protector(["taef2"], models_dir=str(args.models_dir), device="cpu")
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
        t0, c0 = time.perf_counter(), time.process_time()
        result = protector.protect(image, target, budget=0.07, settings=settings)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        mp = hh * ww / 1e6
        m = result.metrics
        print(f"   {label:24} {ww}x{hh} = {mp:5.2f} MP, {m.tiles:2d} tiles: {seconds:7.1f} s, "
              f"{seconds / mp:6.2f} s/MP ({cpu / mp:6.2f} CPU s/MP), LPIPS {m.lpips:.4f}, "
              f"ratio {m.mean_ratio:.3f}, peak RSS so far {peak_rss_gib():.2f} GiB", flush=True)
        per_mp.append((seconds / mp, cpu / mp))
        if m.tiles > 1:
            seams = seam_visibility(result.image, image, 1024, 64, protector.align, args.seam_crop)
            print(f"   seam visibility (boundary change / median change): {seams:.2f}")
        del target, result
    print(f"   s/MP at 17.9 MP / at 1 MP = {per_mp[1][0] / per_mp[0][0]:.2f} (wall), "
          f"{per_mp[1][1] / per_mp[0][1]:.2f} (CPU)")


if __name__ == "__main__":
    main()
