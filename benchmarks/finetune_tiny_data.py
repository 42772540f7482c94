"""Data for the tiny end-to-end fine-tuning experiment (``fixative eval mimicry`` on the CPU).

Makes, under WORKDIR:

- ``tiny-sd/``: the tiny random Stable Diffusion pipeline of the tests (``tests/conftest.py``);
- ``artist/``: 8 crops of two photos (Wood, Storm) at SIZE px, named ``wood_N``/``storm_N``
  (the "artist's" clean works; ``--captions auto`` captions them "wood"/"storm");
- ``artist-protected/``: those protected with ``fixative protect`` (taef2, towards Elephants.jpg,
  intensity high, quality fast);
- ``flowers/``: 8 crops of the two flower photos, protected towards LadyBird.jpg (the poison:
  concept "flower", anchor "ladybug", an ImageNet class), and ``other/``: 8 crops of Elephants
  and Garden (clean images of other concepts).

Then prints the ``fixative eval mimicry`` command to run. Files that exist are kept.

    python benchmarks/finetune_tiny_data.py --workdir /tmp/finetune-tiny --models-dir ../shared/models
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from PIL import Image

from fixative.cli.main import main as fixative

REPO = Path(__file__).resolve().parents[1]


def crops(src: Path, dest: Path, stem: str, size: int, n: int = 4) -> None:
    """``n`` square crops along the photo's longer side, resized to ``size`` px."""
    dest.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    w, h = img.size
    side = min(w, h)
    for i in range(n):
        out = dest / f"{stem}_{i}.png"
        if out.exists():
            continue
        left = round((w - side) * i / max(1, n - 1))
        img.crop((left, 0, left + side, side)).resize((size, size), Image.LANCZOS).save(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-tiny"))
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "images")
    ap.add_argument("--models-dir", default=str(REPO.parent / "shared" / "models"))
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    if not (w / "tiny-sd" / "model_index.json").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import build_tiny_sd_pipeline

        build_tiny_sd_pipeline(w / "tiny-sd")
    artist = w / "artist"
    for name, stem in (("Wood", "wood"), ("Storm", "storm")):
        crops(a.images / f"{name}.jpg", artist, stem, a.size)
    for name, stem in (("FreshFlower", "flower"), ("YellowFlower", "yellowflower")):
        crops(a.images / f"{name}.jpg", w / "flowers-clean", stem, a.size)
    for name, stem in (("Elephants", "elephant"), ("Garden", "garden")):
        crops(a.images / f"{name}.jpg", w / "other", stem, a.size)
    common = ["--encoder", "taef2", "--models-dir", a.models_dir, "--intensity", "high", "--quality", "fast",
              "--device", "cpu", "-q"]
    if not (w / "artist-protected" / "fixative-index.json").exists():
        fixative(["protect", str(artist), "--target", str(a.images / "Elephants.jpg"), "--out",
                  str(w / "artist-protected"), *common])
    if not (w / "flowers" / "fixative-index.json").exists():
        fixative(["protect", str(w / "flowers-clean"), "--mode", "poison", "--target", str(a.images / "LadyBird.jpg"),
                  "--out", str(w / "flowers"), *common])
    cmd = ["fixative", "eval", "mimicry", "--model", str(w / "tiny-sd"), "--clean", str(artist), "--protected",
           str(w / "artist-protected"), "--holdout", "2", "--purify", "jpeg75", "--purify", "impress",
           "--poisoned", str(w / "flowers"), "--concept", "flower", "--anchor", "ladybug", "--other", str(w / "other"),
           "--poison-counts", "0", "4", "8", "--resolution", str(a.size), "--max-steps", "40",
           "--checkpoint-every", "10", "--lr", "1e-3", "--seeds", "0", "1", "2", "--sample-steps", "10",
           "--models-dir", a.models_dir, "--device", "cpu", "--out", str(w / "experiment")]
    print(shlex.join(cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
