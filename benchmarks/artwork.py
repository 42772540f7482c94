"""Artwork benchmark: protection at the views a model trains on, and its cost at every image size.

Prints, in one run:

1. **Sizes**: the artwork ``Elephants_5640x3172.jpg`` towards ``Wood.jpg`` (and one photo pair,
   ``Garden.jpg`` towards ``Wood.jpg``) at 1, 4, 12 and 17.9 megapixels and at 512 x 512, each protected
   by ``fixative protect IN --target T`` with the default preset (nothing else but the model store), as a
   separate process: its wall-clock and CPU seconds and peak memory (RSS), LPIPS and PSNR of the saved
   file, and the distance ratio (1 = no effect, lower is stronger) at each training view (shorter side
   512 px with a centre crop; longer side 1024 px) and at full size (measured afterwards, outside the
   timing).
2. **Equal time** (``--compare``): at the chosen sizes, today's full-resolution search (``--views off``,
   tiles) and the two baselines (``--method glaze`` and ``--method pgd``, full resolution as those tools
   work) with the same search time as the default run took, side by side with it.
3. **Steps** (``--curve``): at 512 x 512, the gain (1 - ratio) after 1, 2, 4, ... steps, with the default
   robust mix and without it: the curve the presets' step counts and time limits were chosen from.
4. **Presets** (``--presets``): ``Garden.jpg`` (2560 x 1600) towards ``Wood.jpg`` with ``--quality fast`` and the
   artwork at 512 x 512 with ``--quality preview``: their search time against the preset's limit.
5. **Limits** (``--limits``): the artwork at the chosen sizes with the default preset but other LPIPS budgets and
   L-inf caps (``--budget B --linf L``, a fixed number of steps): how much protection at the training views the
   budget on the full-size file allows. LPIPS (alex) is not scale-invariant: the same low-frequency change, the
   only kind a downscale to a training view keeps, costs more LPIPS on a larger (locally smoother) file.

Wall-clock figures on a machine shared with other work carry contention; the CPU seconds (user + system
of the protecting process) are the steadier figure.

    python benchmarks/artwork.py --models-dir ../shared/models
    python benchmarks/artwork.py --sizes 17.9 --pairs artwork --compare      # one size, with the comparison
    python benchmarks/artwork.py --curve --presets --sizes --no-square         # the curve and the presets alone
    python benchmarks/artwork.py --limits --limit-sizes 1 17.9 --sizes --no-square   # budget and cap against size
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fixative.core.engine import Protector
from fixative.core.optimizer import OptimizerSettings
from fixative.files.formats import encode_image
from fixative.files.images import load_image
from fixative.models.loading import load_protector
from fixative.presets import LPIPS_INTENSITIES, LPIPS_INTENSITY_LINF

SHARED = Path(__file__).resolve().parents[2] / "shared"
PAIRS = {"artwork": ("Elephants_5640x3172.jpg", "Wood.jpg"), "photo": ("Garden.jpg", "Wood.jpg")}
VIEWS = ("512 crop", "1024 px")


def resized(path: Path, megapixels: float | None, out: Path) -> Path:
    """``path`` resized (antialiased bicubic, aspect kept) to about ``megapixels``, or to 512 x 512 when None,
    saved as PNG in ``out`` (made once)."""
    label = "512x512" if megapixels is None else f"{megapixels:g}MP"
    dest = out / f"{path.stem}_{label}.png"
    if dest.exists():
        return dest
    rgb = load_image(path).rgb
    h, w = rgb.shape[-2:]
    if megapixels is None:
        size = (512, 512)
    else:
        f = math.sqrt(megapixels * 1e6 / (h * w))
        size = (round(h * f), round(w * f))
    img = F.interpolate(rgb, size=size, mode="bicubic", antialias=size[0] < h, align_corners=False).clamp(0, 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(encode_image(img, None, fmt="png", bits=8, info={}))
    return dest


def run_protect(image: Path, target: Path, out: Path, models_dir: Path, extra: list[str]) -> dict:
    """``fixative protect IMAGE --target TARGET --out OUT --models-dir M [extra]`` as its own process:
    wall and CPU seconds, peak RSS (GiB) and the record it wrote."""
    cmd = [sys.executable, "-m", "fixative", "protect", str(image), "--target", str(target), "--out", str(out),
           "--models-dir", str(models_dir), "-q", *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"fixative protect failed ({proc.returncode}): {stderr[-2000:]}")
    record = json.loads((out / f"{image.stem}.json").read_text())
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 2**20, "record": record,
            "output": out / f"{image.stem}.png"}


def full_size_ratio(protector: Protector, image: Path, output: Path, target: Path) -> float:
    """The distance ratio of the saved file at full size (cells of 1024 px), the target resized to the image."""
    x, xp = load_image(image).rgb, load_image(output).rgb
    t = load_image(target).rgb
    t = F.interpolate(t, size=x.shape[-2:], mode="bicubic", antialias=t.shape[-2] > x.shape[-2],
                      align_corners=False).clamp(0, 1)
    return protector.measure(x, xp, t).mean_ratio


def row(label: str, res: dict, full: float | None) -> str:
    m, s = res["record"]["metrics"], res["record"]["settings"]
    views = m.get("view_ratio") or {}
    cells = [label, f"{res['wall']:.1f}", f"{res['cpu']:.1f}", f"{res['rss']:.2f}", f"{m['lpips']:.4f}",
             f"{m['psnr']:.1f}", *(f"{views.get(v, float('nan')):.3f}" for v in VIEWS),
             f"{full:.3f}" if full is not None else "-", str(m["steps"]),
             f"{s.get('seconds') or 0:g}", m["stopped"]]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| run | wall s | CPU s | peak RSS GiB | LPIPS | PSNR dB | ratio 512 crop | ratio 1024 px | ratio full size "
          "| steps | time limit s | ended by |\n" + "| --- " * 12 + "|")


def sizes_part(args, protector: Protector) -> dict[tuple[str, str], dict]:
    print("\n1. default preset (fixative protect IN --target T --models-dir M), one process per run")
    print(HEADER)
    results = {}
    for pair in args.pairs:
        art, tgt = (args.images / n for n in PAIRS[pair])
        for mp in [*args.sizes, None] if args.square else args.sizes:
            image = resized(art, mp, args.workdir / "inputs")
            label = f"{pair} {'512x512' if mp is None else f'{mp:g} MP'}"
            res = run_protect(image, tgt, args.workdir / "out" / label.replace(" ", "_"), args.models_dir, [])
            full = full_size_ratio(protector, image, res["output"], tgt)
            results[(pair, label)] = res
            print(row(label, res, full), flush=True)
    return results


def compare_part(args, protector: Protector, sized: dict) -> None:
    print("\n2. equal search time: the default (training views) beside today's full-resolution search and the "
          "baselines")
    print(HEADER)
    for (pair, label), res in sized.items():
        if not any(label.endswith(f" {mp:g} MP") for mp in args.compare_sizes):
            continue
        art, tgt = (args.images / n for n in PAIRS[pair])
        image = Path(res["record"]["input"]["path"])
        seconds = f"{res['record']['metrics']['seconds']:.1f}"
        full = full_size_ratio(protector, image, res["output"], tgt)
        print(row(f"{label}: default (views train)", res, full), flush=True)
        for name, extra in (("full resolution (views off)", ["--views", "off"]),
                            ("glaze baseline", ["--views", "off", "--method", "glaze"]),
                            ("pgd baseline", ["--views", "off", "--method", "pgd"])):
            out = args.workdir / "compare" / f"{label}_{name}".replace(" ", "_").replace("(", "").replace(")", "")
            other = run_protect(image, tgt, out, args.models_dir, ["--seconds", seconds, "--steps", "100000", *extra])
            print(row(f"{label}: {name}", other, full_size_ratio(protector, image, other["output"], tgt)), flush=True)


def curve_part(args, protector: Protector) -> None:
    art, tgt = (args.images / n for n in PAIRS["artwork"])
    x = load_image(resized(art, None, args.workdir / "inputs")).rgb
    t = F.interpolate(load_image(tgt).rgb, size=(512, 512), mode="bicubic", antialias=True).clamp(0, 1)
    print("\n3. gain (1 - distance ratio at 512x512) against steps, medium intensity (LPIPS 0.07, 8/255 cap), "
          "views train")
    print("| steps | robust web: gain | search s | CPU s | robust off: gain | search s | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for steps in args.curve_steps:
        cells = [str(steps)]
        for robust in ("web", "off"):
            c0 = time.process_time()
            r = protector.protect(x, t, budget=LPIPS_INTENSITIES["medium"], settings=OptimizerSettings(
                steps=steps, linf=LPIPS_INTENSITY_LINF["medium"], robust=robust, views="train"))
            cells += [f"{1 - r.metrics.mean_ratio:.3f}", f"{r.metrics.seconds:.1f}", f"{time.process_time() - c0:.1f}"]
        print("| " + " | ".join(cells) + " |", flush=True)


def presets_part(args, protector: Protector) -> None:
    print("\n4. presets at their time limits")
    print(HEADER)
    garden, wood = args.images / "Garden.jpg", args.images / "Wood.jpg"
    art = resized(args.images / PAIRS["artwork"][0], None, args.workdir / "inputs")
    for label, image, quality in (("Garden 2560x1600, --quality fast", garden, "fast"),
                                  ("artwork 512x512, --quality preview", art, "preview")):
        res = run_protect(image, wood, args.workdir / "presets" / quality, args.models_dir, ["--quality", quality])
        m = res["record"]["metrics"]
        print(row(label, res, full_size_ratio(protector, image, res["output"], wood))
              + f" search {m['search_seconds']:.1f} s", flush=True)


#: (LPIPS budget, L-inf cap in 1/255 or None) of the limits part; the first is the default preset's
LIMITS = ((0.07, 8), (0.15, 8), (0.15, 16), (0.5, None))


def limits_part(args, protector: Protector) -> None:
    print("\n5. limits: the default preset with other LPIPS budgets and caps on the saved full-size file "
          f"(--budget B [--linf L]), {args.limit_steps} steps and no time limit, so that rows compare under contention")
    print(HEADER.replace("| run |", "| run | budget | cap |").replace("| --- ", "| --- | --- | --- ", 1))
    art, tgt = (args.images / n for n in PAIRS["artwork"])
    for mp in args.limit_sizes:
        image = resized(art, mp, args.workdir / "inputs")
        for budget, cap in LIMITS:
            extra = ["--budget", f"{budget:g}", *(["--linf", f"{cap / 255:.6f}"] if cap else []),
                     "--steps", str(args.limit_steps), "--seconds", "100000"]
            out = args.workdir / "limits" / f"{mp:g}MP_b{budget:g}_c{cap}"
            res = run_protect(image, tgt, out, args.models_dir, extra)
            label, rest = row(f"artwork {mp:g} MP", res, None).split(" | ", 1)
            print(f"{label} | {budget:g} | {f'{cap}/255' if cap else 'none'} | {rest}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", type=float, default=[1, 4, 12, 17.9], help="megapixels (default 1 4 12 17.9)")
    ap.add_argument("--no-square", dest="square", action="store_false", help="leave out the 512x512 run")
    ap.add_argument("--pairs", nargs="*", choices=tuple(PAIRS), default=list(PAIRS))
    ap.add_argument("--compare", action="store_true", help="part 2: the equal-time comparison")
    ap.add_argument("--compare-sizes", nargs="+", type=float, default=[1, 17.9],
                    help="sizes (MP) of the comparison (default 1 17.9)")
    ap.add_argument("--curve", action="store_true", help="part 3: gain against steps at 512x512")
    ap.add_argument("--curve-steps", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--presets", action="store_true", help="part 4: the fast and preview presets")
    ap.add_argument("--limits", action="store_true", help="part 5: other LPIPS budgets and caps")
    ap.add_argument("--limit-sizes", nargs="+", type=float, default=[1, 17.9], help="sizes (MP) of part 5")
    ap.add_argument("--limit-steps", type=int, default=150,
                    help="steps of each part-5 run (default 150: what the default preset makes in its 200 s here)")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/artwork"))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"taef2 from {args.models_dir}; defaults: --quality standard, --intensity medium, --robust web, "
          "--views train")
    protector = load_protector(["taef2"], models_dir=str(args.models_dir), device="cpu")
    sized = sizes_part(args, protector) if args.sizes or args.square else {}
    if args.compare:
        compare_part(args, protector, sized)
    if args.curve:
        curve_part(args, protector)
    if args.presets:
        presets_part(args, protector)
    if args.limits:
        limits_part(args, protector)


if __name__ == "__main__":
    main()
