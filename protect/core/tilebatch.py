"""How many tiles of a large image to search together in one batched pass on a GPU."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from fixative.core.tiling import Tile
from fixative.errors import ConfigError

log = logging.getLogger(__name__)


def tile_batch_size(free_bytes: int, per_tile_bytes: int, tiles: int, use: float = 0.7) -> int:
    """Tiles per batched pass: as many as ``use`` of the free memory holds, at least 1, at most ``tiles``.

    ``per_tile_bytes`` is the peak memory of one tile's optimisation step (bytes), measured by a probe.
    """
    if per_tile_bytes <= 0:
        return tiles
    return max(1, min(tiles, int(free_bytes * use // per_tile_bytes)))


def plan_tile_batch(requested: int | None, tiles: Sequence[Tile], device: torch.device,
                    probe: Callable[[Tile], None]) -> int:
    """How many tiles to search per pass: ``requested``, else 1 on the CPU/MPS or for one tile, else as many
    as the free CUDA memory holds, measured with ``probe`` (one optimisation step on the tile it is given)."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"tile_batch must be at least 1, got {requested}")
        return min(requested, len(tiles))
    if len(tiles) == 1 or device.type != "cuda":
        return 1
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe(tiles[0])
    per_tile = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    size = tile_batch_size(free, per_tile, len(tiles))
    log.info("tile batch: %d tiles per pass (%.2f GiB per tile, %.1f GiB free)", size, per_tile / 2**30,
             free / 2**30)
    return size
