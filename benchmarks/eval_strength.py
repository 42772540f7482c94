"""Benchmark: protection strength of Fixative on real photos, against LPIPS-matched random noise.

1. Resizes photos from ../shared/images to SIZE x SIZE (``WORKDIR/original``) and one target
   photo (``WORKDIR/target.png``: a concept anchor, YellowFlower = 'daisy' for ImageNet).
2. Protects each with Fixative (taef2, LPIPS budget 0.07) through the library, writing
   ``WORKDIR/protected/NAME.png`` and a ``NAME.json`` record (encoders, target), as the CLI does.
3. Makes a plain random-noise "protection" of each image with the *same* LPIPS as its protected
   version (Gaussian noise scaled by bisection): ``WORKDIR/noise/``.
4. Runs the same ``fixative eval strength`` command on both sets and prints each headline table
   (efficacy before/after every countermeasure, detector AUCs). Reports are in
   ``WORKDIR/report-fixative`` and ``WORKDIR/report-noise`` (open ``report.html``).

    python benchmarks/eval_strength.py --size 256 --steps 40 --impress-steps 10
    python benchmarks/eval_strength.py --size 512 --steps 100 --workdir /tmp/strength-512

Steps 1-3 are skipped for files that already exist (rerun to refresh only the evaluation).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fixative.cli.main import main as fixative
from fixative.core.constraints import LpipsBudget, quantize
from fixative.core.optimizer import OptimizerSettings
from fixative.files.images import load_image, save_png
from fixative.models.loading import load_protector

SHARED = Path(__file__).resolve().parents[2] / "shared"
PHOTOS = ["LadyBird", "Storm", "Wood", "Elephants"]


def add_photo_arguments(ap: argparse.ArgumentParser, workdir: str) -> None:
    """The options every photo benchmark shares: which photos and target, where images/models are, the work folder."""
    ap.add_argument("--photos", nargs="+", default=PHOTOS, help="names in ../shared/images (without .jpg)")
    ap.add_argument("--target", default="YellowFlower", help="target photo name (default YellowFlower)")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--workdir", type=Path, default=Path(workdir))


def load_square(path: Path, size: int) -> torch.Tensor:
    rgb = load_image(path).rgb
    return F.interpolate(rgb, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def make_sets(args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    work = args.workdir
    orig, prot, noise = work / "original", work / "protected", work / "noise"
    for d in (orig, prot, noise):
        d.mkdir(parents=True, exist_ok=True)
    target_path = work / "target.png"
    if not target_path.exists():
        save_png(target_path, load_square(args.images / f"{args.target}.jpg", args.size))
    target = load_image(target_path).rgb
    protector = None
    for name in args.photos:
        if (prot / f"{name}.png").exists() and (noise / f"{name}.png").exists():
            continue
        if protector is None:
            protector = load_protector([args.encoder], models_dir=str(args.models_dir), device=args.device)
        x = load_image(save_png(orig / f"{name}.png", load_square(args.images / f"{name}.jpg", args.size))).rgb
        settings = OptimizerSettings(steps=args.steps, seconds=args.seconds, seed=0)
        t0 = time.perf_counter()
        result = protector.protect(x, target, budget=args.budget, settings=settings)
        save_png(prot / f"{name}.png", result.image)
        record = {"encoders": [args.encoder], "target": {"path": str(target_path.resolve())},
                  **result.record()}
        (prot / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
        m = result.metrics
        print(f"protected {name}: LPIPS {m.lpips:.4f}, PSNR {m.psnr:.1f} dB, ratio {m.mean_ratio:.3f}, "
              f"{m.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        # the noise control: Gaussian noise scaled to the same LPIPS (alex) as the protected image
        g = torch.Generator().manual_seed(0)
        delta = torch.randn(x.shape, generator=g) * 0.01
        budget = LpipsBudget(protector.perceptual, x.to(protector.device), max(m.lpips, 1e-4))
        with torch.no_grad():
            delta, lp, _ = budget.scale_back(delta.to(protector.device), levels=255, max_scale=64.0)
        save_png(noise / f"{name}.png", quantize(x + delta.cpu()))
        print(f"noise   {name}: LPIPS {lp:.4f}", flush=True)
    return orig, prot, noise, target_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photo_arguments(ap, "bench-out/eval-strength")
    ap.add_argument("--encoder", default="taef2", help="encoder to protect against (default taef2)")
    ap.add_argument("--eval-encoders", nargs="+", default=["taef2", "taesana"],
                    help="encoders to measure in (default taef2 and taesana: taesana measures transfer)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--steps", type=int, default=40, help="search steps per image (default 40)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="optional time limit per image (default none: a step limit is reproducible on a shared CPU)")
    ap.add_argument("--impress-steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"settings: photos={args.photos} target={args.target} size={args.size}x{args.size} "
          f"protect: encoder={args.encoder} budget={args.budget} steps<={args.steps} seconds<={args.seconds}; "
          f"eval encoders={args.eval_encoders} impress-steps={args.impress_steps}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}", flush=True)
    t0 = time.perf_counter()
    orig, prot, noise, target = make_sets(args)
    print(f"sets ready in {time.perf_counter() - t0:.0f} s", flush=True)
    for label, folder in (("fixative", prot), ("noise", noise)):
        out = args.workdir / f"report-{label}"
        cmd = ["eval", "strength", "--original", str(orig), "--protected", str(folder), "--target", str(target),
               "--out", str(out), "--models-dir", str(args.models_dir), "--impress-steps", str(args.impress_steps),
               "--device", args.device]
        for enc in args.eval_encoders:
            cmd += ["--encoder", enc]
        print(f"\n=== {label}: fixative {shlex.join(cmd)}", flush=True)
        t1 = time.perf_counter()
        code = fixative(cmd)
        print(f"=== {label}: exit {code}, {time.perf_counter() - t1:.0f} s; report {out / 'report.html'}", flush=True)


if __name__ == "__main__":
    main()
