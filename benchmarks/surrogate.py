"""Crafting against a tiny surrogate encoder and checking on others: how well does it transfer?

Protects real photos with taef2 only (the tiny FLUX.2 encoder, fast on a CPU) and measures the
distance ratio (after / before; 1 = no effect) on:

- taef2, the encoder crafted against;
- taesana (real weights, a different latent space: Sana's 32x DC-AE), the one real transfer figure
  available offline;
- the full-size FLUX.2 VAE architecture (``AutoencoderKLFlux2``) with *random* weights: only a
  mechanical check that the ``--check-encoder`` path runs on a full VAE. The real FLUX.2 VAE
  weights cannot be downloaded here, so the transfer from taef2 to the real full VAE is not
  measured by this script; run it with ``--full-vae DIR`` pointing at the real weights for that.

Beside each protected image, random noise scaled to the same LPIPS is measured the same way, so a
transfer figure can be told apart from what any change of that size does.

    python benchmarks/surrogate.py --seconds 60 --models-dir ../shared/models
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from fixative.core.constraints import LpipsBudget
from fixative.core.optimizer import OptimizerSettings
from fixative.files.images import load_image
from fixative.models.loading import load_protector

SHARED = Path(__file__).resolve().parents[2] / "shared"
PAIRS = [("LadyBird.jpg", "YellowFlower.jpg"), ("Garden.jpg", "Storm.jpg"), ("Wood.jpg", "FreshFlower.jpg")]


def random_flux2_vae(folder: Path) -> Path:
    """Save the FLUX.2 VAE architecture (diffusers' default config) with seeded random weights."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    AutoencoderKLFlux2().save_pretrained(folder)
    return folder


def _load(path: Path, size: int) -> torch.Tensor:
    return F.interpolate(load_image(path).rgb, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=60.0, help="search time per image")
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--count", type=int, default=len(PAIRS), help="how many photo pairs (up to 3)")
    ap.add_argument("--full-vae", type=Path, help="a real full VAE folder to check on (default: random FLUX.2)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        full = args.full_vae or random_flux2_vae(Path(tmp) / "flux2-random")
        label = "full VAE" if args.full_vae else "FLUX.2 arch., random weights"
        protector = load_protector(["taef2"], models_dir=str(args.models_dir), device="cpu",
                                         check_encoders=["taesana", str(full)])
        print(f"crafted on taef2 only, {args.size}x{args.size}, LPIPS alex budget {args.budget}, "
              f"{args.seconds:.0f} s per image; distance ratio (1 = no effect, lower = stronger)")
        print(f"| image | LPIPS | taef2 (crafted) | taesana (transfer) | {label} | "
              f"noise: taef2 | noise: taesana | noise: {label} |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        sums = [0.0] * 6
        for src_name, tgt_name in PAIRS[: args.count]:
            x, t = _load(args.images / src_name, args.size), _load(args.images / tgt_name, args.size)
            result = protector.protect(x, t, budget=args.budget, settings=OptimizerSettings(seconds=args.seconds))
            m = result.metrics
            protected = [m.ratio[n] for n in m.encoders + m.checked]
            # the control: uniform noise scaled to the protection's LPIPS
            noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
            delta, _, _ = LpipsBudget(protector.perceptual, x, m.lpips).scale_back(noise * 0.2, levels=255)
            encoders = protector.encoders + protector.check_encoders
            control = []
            with torch.no_grad():
                for enc in encoders:
                    zt = enc(t)
                    control.append(float((enc(x + delta) - zt).norm() / (enc(x) - zt).norm()))
            row = protected + control
            sums = [a + b for a, b in zip(sums, row, strict=True)]
            print(f"| {src_name} -> {tgt_name} | {m.lpips:.4f} | " + " | ".join(f"{v:.3f}" for v in row) + " |",
                  flush=True)
        n = min(args.count, len(PAIRS))
        print("| mean |  | " + " | ".join(f"{v / n:.3f}" for v in sums) + " |")


if __name__ == "__main__":
    main()
