"""The training data of a fine-tune: images loaded and cropped, the data set's fingerprint, the
seeded choice of examples per micro-batch, and the frozen VAE/text-encoder pass done once.

Which samples a step uses is a pure function of (seed, step, process, micro-batch)
(:class:`StepSampler`, :func:`step_generator`), so a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.errors import ConfigError, InputImageError
from fixative.eval.captions import Example
from fixative.files.images import load_image

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(examples: Sequence[Example]) -> str:
    """SHA-256 over every image's bytes and caption: a run folder belongs to one data set."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.path.name}\0{file_sha256(ex.path)}\0{ex.caption}\n".encode())
    return digest.hexdigest()


def preprocess(rgb: Tensor, resolution: int) -> Tensor:
    """(1,3,H,W) [0,1] -> (3,R,R) in [-1,1]: shorter side resized to R (bilinear, antialiased), centre crop."""
    h, w = rgb.shape[-2:]
    scale = resolution / min(h, w)
    nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    x = F.interpolate(rgb.float(), size=(nh, nw), mode="bilinear", antialias=scale < 1, align_corners=False)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    x = x[..., top : top + resolution, left : left + resolution].clamp(0, 1)
    return (x[0] * 2 - 1).contiguous()


def load_examples(examples: Sequence[Example], resolution: int) -> tuple[list[Example], list[Tensor], list[str]]:
    """Load and preprocess images; unreadable ones are skipped with a note naming the file."""
    kept, pixels, notes = [], [], []
    for ex in examples:
        try:
            img = load_image(ex.path)
        except (InputImageError, OSError, ValueError) as exc:
            notes.append(f"{ex.path}: skipped ({exc})")
            log.warning("%s: skipped (%s)", ex.path, exc)
            continue
        kept.append(ex)
        pixels.append(preprocess(img.rgb, resolution))
    if not kept:
        raise ConfigError("no readable training images (" + "; ".join(notes[:3]) + ")")
    return kept, pixels, notes


def step_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded from (seed, *parts) through SHA-256: the same parts draw the same numbers."""
    key = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


class StepSampler:
    """Which examples a micro-batch uses: epochs of seeded permutations over the data set, walked in
    order; position = ((step x accum + micro) x processes + rank) x batch_size + j. Independent of
    history, so resuming at step k draws what an uninterrupted run would."""

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int, processes: int, rank: int):
        self.n, self.seed, self.bs, self.accum, self.world, self.rank = n, seed, batch_size, grad_accum, processes, rank
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = torch.randperm(self.n, generator=step_generator(self.seed, 7, epoch))
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> list[int]:
        """The data-set indices of micro-batch ``micro`` of optimizer step ``step`` on this process."""
        start = ((step * self.accum + micro) * self.world + self.rank) * self.bs
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.bs)]


@torch.no_grad()
def encode_examples(pipe: Any, pixels: Sequence[Tensor], captions: Sequence[str], device: torch.device,
                    dtype: torch.dtype, batch: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Latent posterior (mean, std) x scaling factor and text embeddings, on the CPU in fp32."""
    vae, text_encoder, tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
    scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    means, stds, texts = [], [], []
    for i in range(0, len(pixels), batch):
        x = torch.stack(list(pixels[i : i + batch])).to(device, dtype)
        dist = vae.encode(x).latent_dist
        means.append((dist.mean * scale).float().cpu())
        stds.append((dist.std * scale).float().cpu())
        tok = tokenizer(list(captions[i : i + batch]), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt")
        texts.append(text_encoder(tok.input_ids.to(device))[0].float().cpu())
    return torch.cat(means), torch.cat(stds), torch.cat(texts)
