"""Where a target model (the generator of made targets) is: a pipeline folder, a checkpoint file or a hub repo.

:func:`resolve_pipeline` finds it without loading anything; :class:`PipelineSource` says what it found
and what identifies its weights (for the target cache's keys).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fixative.errors import ConfigError
from fixative.models.hub import is_hub_id
from fixative.models.store import ModelStore

#: the target model's short names: a folder of that name in the model store, else the hub repo
PIPELINE_SHORT_NAMES: dict[str, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
#: endings of single checkpoint files that diffusers' ``from_single_file`` reads
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
#: the field of the options that names the target model (errors about it carry it)
TARGET_MODEL_FIELD = "target.model"


@dataclass(frozen=True)
class ModelRole:
    """What a pipeline is for, in the words of errors about it: ``name`` (as in "the target model sd15:
    ...") and ``field``, the option that names it (the ``field`` of the :class:`ConfigError`)."""

    name: str = "the target model"
    field: str = TARGET_MODEL_FIELD


#: the generator of made targets (the default role)
TARGET_MODEL = ModelRole()


@dataclass(frozen=True)
class PipelineSource:
    """Where a target model is: a diffusers pipeline folder, a single checkpoint file, or a hub repo."""

    spec: str
    kind: Literal["folder", "file", "hub"]
    location: str
    role: ModelRole = field(default=TARGET_MODEL, compare=False)

    def identity(self) -> dict:
        """What identifies the weights, for cache keys, without reading them.

        A folder or file: its absolute path plus the size and modification time of its files
        (a replaced model makes new targets); a hub repo: its id.
        """
        if self.kind == "hub":
            return {"hub": self.location}
        path = Path(self.location)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in files:
            st = p.stat()
            digest.update(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {self.kind: str(path), "files": digest.hexdigest()[:16]}

    @property
    def short(self) -> bool:
        """True when the spec was one of :data:`PIPELINE_SHORT_NAMES`."""
        return self.spec.lower() in PIPELINE_SHORT_NAMES


def _source_for_path(spec: str, path: Path, role: ModelRole) -> PipelineSource:
    path = path.resolve()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ConfigError(
                f"{role.name} {spec}: {path} is not a diffusers pipeline folder (no model_index.json); "
                "save one with pipeline.save_pretrained(DIR), or give a hub id or a single checkpoint file",
                field=role.field,
            )
        return PipelineSource(spec, "folder", str(path), role)
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        kinds = ", ".join(SINGLE_FILE_SUFFIXES)
        raise ConfigError(f"{role.name} {spec}: {path} is not a checkpoint file ({kinds})", field=role.field)
    return PipelineSource(spec, "file", str(path), role)


def resolve_pipeline(spec: str, store: ModelStore | None = None, role: ModelRole = TARGET_MODEL) -> PipelineSource:
    """Where ``spec``'s pipeline is, without loading it.

    Order: a short name (``sd15``, ``sd21``, ``sdxl``: a pipeline folder of that name in the model
    store, else its hub repo); an existing folder or file; a folder or file in the model store;
    a hub id (``org/name``). Raises :class:`ConfigError` (field ``target.model``) for a folder or
    file that is no pipeline, :class:`~fixative.errors.ModelNotFoundError` for one found nowhere.
    ``role``: what the pipeline is for, in the words of those errors (the target model by default).
    """
    store = store or ModelStore()
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"{role.name} was given as an empty name", field=role.field)
    short = PIPELINE_SHORT_NAMES.get(spec.lower())
    if short is not None:
        local = store.find(spec.lower())
        if local is not None and (local / "model_index.json").is_file():
            return PipelineSource(spec, "folder", str(local.resolve()), role)
        return PipelineSource(spec, "hub", short, role)
    path = Path(spec).expanduser()
    if path.exists():
        return _source_for_path(spec, path, role)
    found = store.find(spec)
    if found is not None:
        return _source_for_path(spec, found, role)
    if is_hub_id(spec):
        return PipelineSource(spec, "hub", spec, role)
    raise store.not_found(
        spec,
        looked_for=(spec,),
        how=(f"give {role.name} as a diffusers pipeline folder (saved with save_pretrained), a single checkpoint "
             f"file, a Hugging Face repo id (org/name), or a short name: {', '.join(PIPELINE_SHORT_NAMES)}"),
    )
