"""A disk cache of made targets, so that re-protecting an image (another budget, another encoder,
more time) does not run the diffusion model again.

An entry is keyed by a SHA-256 over a canonical JSON of everything that decides the target: the
input's pixels (:func:`image_digest`) where the target depends on them, the generator model's
identity, the prompt, seed, strength, steps, guidance and size. It holds two files,
``<key>.png`` (the target, 8-bit RGB, lossless; open it to see what the image was moved towards)
and ``<key>.json`` (the recipe). Targets are quantised to 8 bits before first use, so a target
read back from the cache is bit-identical to the one the first run used.

Location: ``cache_dir`` when given, else ``$FIXATIVE_CACHE_DIR``, else
``$XDG_CACHE_HOME/fixative/targets``, else ``~/.cache/fixative/targets``. Entries are
small (one PNG each) and can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fixative.files.atomic import atomic_write_json
from fixative.files.images import atomic_save, to_uint8

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "FIXATIVE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$FIXATIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/fixative/targets``, else ``~/.cache/fixative/targets``."""
    if os.environ.get(ENV_CACHE_DIR, "").strip():
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "fixative" / "targets"


def image_digest(rgb: Tensor) -> str:
    """SHA-256 of an image's 8-bit pixels and size: the same picture gives the same digest,
    whichever file format or path it came from."""
    arr = to_uint8(rgb)
    digest = hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def cache_key(fields: dict) -> str:
    """SHA-256 of the canonical JSON of ``fields`` (sorted keys, no spaces)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def quantize8(rgb: Tensor) -> Tensor:
    """Round a (1,3,H,W) [0,1] image to the 8-bit grid (what the cache stores)."""
    return torch.from_numpy(to_uint8(rgb).astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


class TargetCache:
    """Targets on disk under ``root`` (see the module docs for the layout and the default place)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = (Path(root).expanduser() if root is not None else default_cache_dir()).absolute()

    def __repr__(self) -> str:
        return f"TargetCache({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """Where the entry ``key``'s PNG is (or would be)."""
        return self.root / key[:2] / f"{key}.png"

    def get(self, key: str) -> tuple[Tensor, dict] | None:
        """The cached (image, recipe) for ``key``, or None; a damaged entry is reported and ignored."""
        png = self.path(key)
        meta = png.with_suffix(".json")
        if not (png.is_file() and meta.is_file()):
            return None
        try:
            recipe = json.loads(meta.read_text(encoding="utf-8"))
            with Image.open(png) as img:
                arr = np.asarray(img.convert("RGB")).astype(np.float32) / 255.0
        except (OSError, ValueError) as exc:
            log.warning("ignoring a damaged target cache entry %s (%s); making it again", png, exc)
            return None
        return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous(), recipe

    def put(self, key: str, image: Tensor, recipe: dict) -> Path:
        """Store ``image`` (quantised to 8 bits) and ``recipe`` under ``key``; returns the PNG's path.

        Both files are written atomically; the JSON last, so an entry with a JSON is complete.
        """
        png = self.path(key)
        png.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(Image.fromarray(to_uint8(image), "RGB"), png, format="PNG")
        atomic_write_json(png.with_suffix(".json"), recipe, default=str)
        return png
