"""Benchmark: robust (EOT) against non-robust protection, after JPEG, resizing, noise and a platform pipeline.

1. Resizes photos from ../shared/images to SIZE x SIZE (``WORKDIR/original``) and one target
   photo (``WORKDIR/target.png``).
2. Protects each twice with the same encoder, LPIPS budget, steps and seed: once plain
   (``--robust off``, ``WORKDIR/plain-STEPS``) and once robust (``WORKDIR/LEVEL-STEPS``), through the
   library as the CLI does, with a ``NAME.json`` record beside each output.
3. Runs ``fixative eval strength`` on both sets side by side (same countermeasures, same noise
   draws: JPEG 95/85/75/50, down-up x0.5, noise, blur, noise 0.05 then down-up x0.5, the platform
   pipeline of 2048 px + JPEG 85, noisy upscaling) and prints the table, then checks the issue's
   targets: robust retains >= 70% of its gain after JPEG 75 and >= 50% after noise 0.05 + 2x down-up.

    python benchmarks/robust.py --steps 100
    python benchmarks/robust.py --steps 150 --robust strong --photos LadyBird Storm

Protections that already exist in WORKDIR are reused (delete a folder to redo it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from eval_strength import add_photo_arguments, load_square  # same folder: benchmarks/

from fixative.batch.platforms import get_platform, robust_for
from fixative.cli.main import main as fixative
from fixative.core.optimizer import OptimizerSettings
from fixative.core.robust import ROBUST_LEVELS, settings_for
from fixative.files.images import load_image, save_png
from fixative.models.loading import load_protector


def protect_sets(args: argparse.Namespace) -> tuple[Path, dict[str, Path], Path]:
    work = args.workdir
    orig = work / "original"
    orig.mkdir(parents=True, exist_ok=True)
    target_path = work / "target.png"
    if not target_path.exists():
        save_png(target_path, load_square(args.images / f"{args.target}.jpg", args.size))
    target = load_image(target_path).rgb
    sets = {"plain": work / f"plain-{args.steps}", robust_label(args): work / f"{robust_label(args)}-{args.steps}"}
    protector = None
    for name in args.photos:
        src = orig / f"{name}.png"
        if not src.exists():
            save_png(src, load_square(args.images / f"{name}.jpg", args.size))
        x = load_image(src).rgb
        for label, folder in sets.items():
            folder.mkdir(parents=True, exist_ok=True)
            if (folder / f"{name}.png").exists():
                continue
            if protector is None:
                protector = load_protector([args.encoder], models_dir=str(args.models_dir), device=args.device)
            level = "off" if label == "plain" else label
            robust = None
            if label != "plain":
                robust = (robust_for(get_platform(args.platform), tuple(x.shape[-2:]), args.robust) if args.platform
                          else settings_for(args.robust))
            settings = OptimizerSettings(steps=args.steps, seed=args.seed, robust=robust)
            t0 = time.perf_counter()
            result = protector.protect(x, target, budget=args.budget, settings=settings)
            save_png(folder / f"{name}.png", result.image)
            record = {"encoders": [args.encoder], "target": {"path": str(target_path.resolve())},
                      "robust": level, **result.record()}
            (folder / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
            m = result.metrics
            print(f"{label:>6} {name}: LPIPS {m.lpips:.4f}, PSNR {m.psnr:.1f} dB, ratio {m.mean_ratio:.3f}, "
                  f"{m.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return orig, sets, target_path


def robust_label(args: argparse.Namespace) -> str:
    return f"{args.robust}+{args.platform}" if args.platform else args.robust


def check_targets(out: Path, robust: str) -> int:
    data = json.loads((out / "comparison.json").read_text())
    enc = next(iter(data[robust]["efficacy"]["none"]))
    failed = 0
    print("\nissue 9 targets (retention of the distance-ratio gain):")
    for cond, need in (("jpeg75", 0.70), ("noise0.05_downup0.5", 0.50), ("platform2048q85", None)):
        row = []
        for label in ("plain", robust):
            e = data[label]["efficacy"].get(cond, {}).get(enc)
            row.append(f"{label} gain {e['gain']:.3f} retained {e['retention']:.0%}" if e and e["retention"] is not None
                       else f"{label} -")
        got = data[robust]["efficacy"].get(cond, {}).get(enc, {}).get("retention")
        verdict = ""
        if need is not None:
            verdict = (" PASS" if got is not None and got >= need else " FAIL") + f" (>= {need:.0%})"
        failed += verdict.startswith(" FAIL")
        print(f"  {cond}: " + "; ".join(row) + verdict)
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photo_arguments(ap, "bench-out/robust")
    ap.add_argument("--encoder", default="taef2")
    ap.add_argument("--robust", choices=[lvl for lvl in ROBUST_LEVELS if lvl != "off"], default="web")
    ap.add_argument("--for", dest="platform", metavar="PLATFORM",
                    help="tune the robust mix to a platform (fixative.batch.platforms), as 'fixative protect --for' "
                         "does")
    ap.add_argument("--only-robust", action="store_true",
                    help="evaluate only the robust set (the plain set's figures are those of an earlier run)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--steps", type=int, default=100, help="search steps per image, both ways (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-eval", action="store_true",
                    help="only protect (e.g. several processes sharing --photos), evaluate in a later run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"settings: photos={args.photos} target={args.target} size={args.size}x{args.size} encoder={args.encoder} "
          f"budget={args.budget} (no L-inf cap) steps={args.steps} seed={args.seed} robust={robust_label(args)} "
          f"{settings_for(args.robust).describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}", flush=True)
    t0 = time.perf_counter()
    orig, sets, target = protect_sets(args)
    print(f"protected in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.no_eval:
        return 0
    out = args.workdir / f"report-{robust_label(args)}-{args.steps}"
    cmd = ["eval", "strength", "--original", str(orig), "--target", str(target), "--out", str(out),
           "--encoder", args.encoder, "--models-dir", str(args.models_dir), "--device", args.device,
           "--classifier", "none", "--no-style", "--no-impress", "--no-detectors", "--seed", str(args.seed)]
    for label, folder in sets.items():
        if label != "plain" or not args.only_robust:
            cmd += ["--protected", f"{label}={folder}"]
    print(f"\n=== fixative {shlex.join(cmd)}", flush=True)
    code = fixative(cmd)
    if code:
        return code
    if args.only_robust:
        return 0
    return 1 if check_targets(out, robust_label(args)) else 0


if __name__ == "__main__":
    sys.exit(main())
