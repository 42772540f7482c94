"""Pairing original, protected and target images by file name, and loading them for measurement.

``--original DIR`` and ``--protected DIR`` are matched by file stem (``art.jpg`` <-> ``art.png``).
The target is optional: a folder (matched by stem too), one image used for every pair, or, when
neither is given, the ``target.path`` recorded in Fixative's ``<stem>.json`` beside a protected
file. Pairs without a target are measured in "away" mode (how far the protection moved the
latent from the original's own), as for immunizing protections.

Loading brings each protected image, its original and target to one size: the protected file's
(another tool may have resized), optionally capped by ``max_side``; every change of size is
recorded so that the report can say so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from fixative.errors import ConfigError
from fixative.files.images import load_image, resize_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@dataclass
class ImagePair:
    """One protected image with its original and (optional) target, by path.

    ``protected_with``: the encoders the protecting tool says it used (from a Fixative JSON
    record), or an empty list when unknown.
    """

    name: str
    original: Path
    protected: Path
    target: Path | None = None
    protected_with: list[str] = field(default_factory=list)


@dataclass
class LoadedPair:
    """The three images of a pair as 1x3xHxW float tensors in [0, 1], all the same size."""

    name: str
    original: Tensor
    protected: Tensor
    target: Tensor | None
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.protected.shape[-2]), int(self.protected.shape[-1])


def _images_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in found:
                log.warning("%s: two images named %r; using %s", folder, path.stem, found[path.stem].name)
                continue
            found[path.stem] = path
    return found


def _sidecar(protected: Path) -> dict:
    """Fixative's JSON record beside a protected file, or {} (missing or unreadable)."""
    path = protected.with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_pairs(
    original_dir: str | Path,
    protected_dir: str | Path,
    target: str | Path | None = None,
) -> tuple[list[ImagePair], list[str]]:
    """Match files of ``original_dir`` and ``protected_dir`` by stem.

    ``target``: a folder (matched by stem), one image for all pairs, or None (use the target path
    from a Fixative record beside the protected file, where there is one). Returns the pairs, in
    name order, and a list of human-readable notes about files left out.
    """
    originals = _images_in(Path(original_dir))
    protected = _images_in(Path(protected_dir))
    targets: dict[str, Path] | None = None
    single_target: Path | None = None
    if target is not None:
        target = Path(target)
        if target.is_dir():
            targets = _images_in(target)
        elif target.is_file():
            single_target = target
        else:
            raise ConfigError(f"--target {target}: no such file or folder")
    pairs: list[ImagePair] = []
    notes: list[str] = []
    for stem, prot in protected.items():
        if stem not in originals:
            notes.append(f"{prot.name}: no original named {stem}.* in {original_dir}; left out")
            continue
        record = _sidecar(prot)
        tgt = single_target
        if targets is not None:
            tgt = targets.get(stem)
            if tgt is None:
                notes.append(f"{prot.name}: no target named {stem}.* in {target}; measured without a target")
        elif tgt is None and isinstance(record.get("target"), dict) and record["target"].get("path"):
            recorded = Path(record["target"]["path"])
            if not recorded.is_absolute():
                recorded = (prot.parent / recorded).resolve()  # records hold paths relative to their folder
            if recorded.is_file():
                tgt = recorded
            else:
                notes.append(f"{prot.name}: its record names target {recorded}, which is not there")
        used = record.get("encoders") or record.get("settings", {}).get("encoders") or []
        pairs.append(ImagePair(stem, originals[stem], prot, tgt, [str(u) for u in used]))
    for stem, orig in originals.items():
        if stem not in protected:
            notes.append(f"{orig.name}: no protected image named {stem}.* in {protected_dir}; left out")
    if not pairs:
        raise ConfigError(
            f"no image in {protected_dir} has an original of the same name in {original_dir} "
            "(files are paired by name without extension)"
        )
    return pairs, notes


def capped_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(H, W) scaled down so that the longer side is at most ``max_side`` (unchanged if None or smaller)."""
    h, w = size
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def load_pair(pair: ImagePair, max_side: int | None = None) -> LoadedPair:
    """Read a pair's images and bring them to one size (the protected file's, capped by ``max_side``)."""
    protected = load_image(pair.protected).rgb
    original = load_image(pair.original).rgb
    notes: list[str] = []
    size = tuple(protected.shape[-2:])
    if tuple(original.shape[-2:]) != size:
        notes.append(
            f"original is {tuple(original.shape[-2:])}, protected {size}: original resized to the protected size"
        )
    final = capped_size(size, max_side)
    if final != size:
        notes.append(f"measured at {final[0]}x{final[1]} (capped from {size[0]}x{size[1]} by max_side={max_side})")
        protected = resize_rgb(protected, final)
    original = resize_rgb(original, final)
    target = resize_rgb(load_image(pair.target).rgb, final) if pair.target is not None else None
    return LoadedPair(pair.name, original, protected, target, notes)


def stack(images: list[Tensor]) -> Tensor:
    """Concatenate 1x3xHxW tensors of one size into a batch."""
    return torch.cat(images, dim=0)
