"""Loading diffusers VAEs with ``from_pretrained``: from a local VAE or pipeline folder, or from a hub repo."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from torch import nn

from fixative.core.encoder import Encoder
from fixative.errors import FixativeError
from fixative.models.adapters import read_config, vae_class, wrap_vae
from fixative.models.checkpoints import load_checkpoint
from fixative.models.specs import ResolvedSpec
from fixative.models.store import ModelStore


def from_pretrained(
    where: str, subfolder: str, config: dict[str, Any], *, local_only: bool, cache_dir: Path | None
) -> nn.Module:
    """The diffusers VAE that ``config`` names, loaded from folder or hub repo ``where`` (its ``subfolder``)."""
    cls = vae_class(config, where + (f"/{subfolder}" if subfolder else ""))
    try:
        return cls.from_pretrained(
            where,
            subfolder=subfolder or None,
            local_files_only=local_only,
            cache_dir=cache_dir,
            # without accelerate diffusers falls back anyway, with a long warning
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise FixativeError(
            f"cannot load {cls.__name__} from {where}{'/' + subfolder if subfolder else ''}: {exc}"
        ) from exc


def load_folder(path: Path, name: str) -> Encoder:
    """The encoder in a diffusers VAE folder, a pipeline folder (its ``vae/``) or a folder of one TAESD file."""
    if (path / "config.json").is_file():
        sub = ""
    elif (path / "vae" / "config.json").is_file():
        sub = "vae"
    else:
        taesd = sorted(path.glob("*_encoder.pth"))
        if len(taesd) == 1:
            return load_checkpoint(taesd[0], name)
        raise FixativeError(
            f"{path} is a folder without config.json or vae/config.json: not a diffusers VAE or pipeline folder"
        )
    config = read_config(path / sub / "config.json")
    vae = from_pretrained(str(path), sub, config, local_only=True, cache_dir=None)
    return wrap_vae(vae, name, str(path / sub) if sub else str(path))


def load_hub(resolved: ResolvedSpec, store: ModelStore) -> Encoder:
    """The encoder of a hub repo (its ``vae/`` subfolder for a pipeline repo), from the cache or the hub."""
    cfg = store.hub_file(resolved.location, "config.json", subfolder=resolved.subfolder or None)
    if cfg is None:
        raise store.not_found(resolved.spec, hub_repo=resolved.location, detail=store.last_hub_error)
    vae = from_pretrained(
        resolved.location,
        resolved.subfolder,
        read_config(cfg),
        local_only=store.offline,
        cache_dir=store.hub_cache,
    )
    source = resolved.location + (f"/{resolved.subfolder}" if resolved.subfolder else "")
    return wrap_vae(vae, resolved.spec, source)

