"""Resolving an encoder spec (a path, a short name, a store-relative path or a hub id) to where its weights are.

Nothing is loaded here; see :mod:`fixative.models.encoders` for the order in which specs are tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fixative.errors import ModelNotFoundError
from fixative.models.hub import is_hub_id
from fixative.models.registry import SHORT_NAMES, ShortName
from fixative.models.store import ModelStore


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec's weights are: a local path, or a hub repo (and subfolder)."""

    spec: str
    kind: Literal["path", "hub"]
    location: str  # absolute path, or hub repo id
    subfolder: str = ""  # hub only: "vae" for pipeline repos, "" for VAE repos

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the weights (two specs with the same key load the same model)."""
        return (self.kind, self.location, self.subfolder)


def _resolve_short(spec: str, short: ShortName, store: ModelStore) -> ResolvedSpec:
    """A short name: its files in the model store, else its hub repo (the cache only, offline)."""
    local = store.find_any(short.local)
    if local is not None:
        return ResolvedSpec(spec, "path", str(local.resolve()))
    detail = None
    if short.hub_repo is not None:
        cfg = store.hub_file(short.hub_repo, "config.json", subfolder=short.hub_subfolder or None)
        if cfg is not None:
            return ResolvedSpec(spec, "hub", short.hub_repo, short.hub_subfolder)
        detail = store.last_hub_error
    how = short.get.replace("<models dir>", str(store.suggested_dir()))
    raise store.not_found(
        f"{spec} ({short.description})",
        looked_for=short.local,
        hub_repo=short.hub_repo,
        how=how,
        detail=detail,
    )


def _resolve_hub(spec: str, store: ModelStore) -> ResolvedSpec:
    """A hub repo id: a VAE repo, or a pipeline repo whose ``vae/`` folder holds the VAE."""
    hit = store.hub_model_folder(spec, ("vae", ""))
    if hit is not None:
        return ResolvedSpec(spec, "hub", spec, hit[0])
    raise store.not_found(
        spec,
        looked_for=(spec,),
        hub_repo=spec,
        how=(
            f"`hf download {spec}` (a diffusers VAE repo, or a pipeline repo with a vae/ folder), or "
            f"put the VAE folder/file in {store.suggested_dir()} and pass its path"
        ),
        detail=store.last_hub_error,
    )


def resolve_spec(spec: str, store: ModelStore | None = None) -> ResolvedSpec:
    """Find where ``spec``'s weights are, without loading them (see :mod:`fixative.models.encoders` for the order).

    Raises :class:`ModelNotFoundError` naming what is missing, every place searched and how to
    get it.
    """
    store = store or ModelStore()
    spec = spec.strip()
    if not spec:
        raise ModelNotFoundError("an empty encoder name was given")
    short = SHORT_NAMES.get(spec.lower())
    path = Path(spec).expanduser()
    # short names are reserved words: a folder called "taesd" in the working directory is "./taesd"
    if path.exists() and short is None:
        return ResolvedSpec(spec, "path", str(path.resolve()))
    if short is not None:
        return _resolve_short(spec, short, store)
    found = store.find(spec)
    if found is not None:
        return ResolvedSpec(spec, "path", str(found.resolve()))
    if is_hub_id(spec):
        return _resolve_hub(spec, store)
    names = ", ".join(SHORT_NAMES)
    raise store.not_found(
        spec,
        looked_for=(spec,),
        how=(f"pass an existing file or folder, a Hugging Face repo id (org/name), or a short name: {names}"),
    )
