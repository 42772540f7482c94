"""The model store: where Fixative looks for weights, in a fixed and reported order.

Search order for a model (first hit wins):

1. an explicit path given to the lookup (``--encoder /path/to/vae.safetensors``);
2. ``models_dir`` given to :class:`ModelStore` (the ``--models-dir`` flag);
3. the directories in the environment variable ``FIXATIVE_MODELS_DIR`` (``os.pathsep``-separated);
4. the checkout's ``models/`` folder (next to the ``protect`` package), when it exists;
5. the per-user models folder (:func:`fixative.userdirs.user_models_dir`, where ``fixative models
   fetch`` downloads to: ``~/.local/share/fixative/models`` on Linux);
6. the weights built into the package (:mod:`fixative.models.builtin`: taef2 and the LPIPS AlexNet
   backbone), each used only when its SHA-256 matches the pinned one;
7. the Hugging Face cache, then the Hugging Face hub (the hub only when not offline).

Offline mode (``HF_HUB_OFFLINE=1``, or ``TRANSFORMERS_OFFLINE=1``) is honoured: every hub call is
made with ``local_files_only=True``, so only the local cache is consulted.

In each local directory a file is accepted at the given relative path, directly in the
directory, or one level down in a known subfolder (``taesd/``, ``lpips/``, ``vae/``, ...), so
``taef2_encoder.pth`` is found as ``<dir>/taef2_encoder.pth`` or ``<dir>/taesd/taef2_encoder.pth``.

Nothing here loads weights; :mod:`fixative.models.encoders` and the perceptual module do that.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import fixative
from fixative.errors import ModelNotFoundError
from fixative.models.builtin import BUILTIN_DIR, verified
from fixative.models.hub import hub_error_detail
from fixative.userdirs import user_models_dir

ENV_MODELS_DIR = "FIXATIVE_MODELS_DIR"
"""Environment variable naming one or more model directories (``os.pathsep``-separated)."""

KNOWN_SUBFOLDERS: tuple[str, ...] = ("taesd", "lpips", "vae", "encoders", "vaes")
"""Subfolders of a model directory that are searched one level down."""

_TRUE = {"1", "true", "yes", "on", "y", "t"}


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    Read from the environment at call time, and also from ``huggingface_hub`` (which reads the
    variable once, when first imported) if that is already imported.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    import sys

    hub = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(hub, "HF_HUB_OFFLINE", False))


def checkout_models_dir() -> Path | None:
    """The ``models/`` folder of a source checkout (beside the ``protect`` package), or None if absent."""
    path = Path(fixative.__file__).resolve().parent.parent / "models"
    return path if path.is_dir() else None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache directory in use (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class SearchPlace:
    """One local directory in the search order, with the setting it came from (for messages)."""

    path: Path
    origin: str  # "--models-dir", "$FIXATIVE_MODELS_DIR", "checkout models/", "per-user models folder", "built-in"

    def describe(self) -> str:
        """``"/abs/path (--models-dir)"``, marked when the directory does not exist."""
        missing = "" if self.path.is_dir() else ", does not exist"
        return f"{self.path} ({self.origin}{missing})"

    @property
    def builtin(self) -> bool:
        """True for the package's own weights folder (files there count only with a matching SHA-256)."""
        return self.origin == BUILTIN_ORIGIN


BUILTIN_ORIGIN = "built-in"
USER_ORIGIN = "per-user models folder"


class ModelStore:
    """Finds model files and hub snapshots in the order documented in this module.

    ``models_dir``: the directory given by ``--models-dir`` (str or Path), or None. ``hub_cache``:
    a Hugging Face cache directory to use instead of the default (``HF_HUB_CACHE`` / ``HF_HOME``).
    ``builtin``: whether the package's own weights are searched (after every user folder).
    The environment is read each time a lookup runs, so the store reflects the current
    ``FIXATIVE_MODELS_DIR``, the per-user folder and ``HF_HUB_OFFLINE``.
    """

    def __init__(self, models_dir: str | Path | None = None, *, hub_cache: str | Path | None = None,
                 builtin: bool = True) -> None:
        self.models_dir: Path | None = Path(models_dir).expanduser() if models_dir else None
        self._hub_cache: Path | None = Path(hub_cache).expanduser() if hub_cache else None
        self.builtin = builtin
        self.last_hub_error: str | None = None

    def __repr__(self) -> str:
        return f"ModelStore(models_dir={str(self.models_dir) if self.models_dir else None!r})"

    # --- where to look -------------------------------------------------------------------------

    @property
    def hub_cache(self) -> Path:
        """The Hugging Face cache directory this store reads (and, online, fills)."""
        return self._hub_cache if self._hub_cache is not None else hub_cache_dir()

    @property
    def offline(self) -> bool:
        """True when the hub must not be contacted (see :func:`hub_offline`)."""
        return hub_offline()

    def places(self) -> list[SearchPlace]:
        """The local directories in search order, with their origin, duplicates removed.

        ``--models-dir``, ``FIXATIVE_MODELS_DIR`` entries and the per-user folder are listed even when
        missing (so that error messages can say so); the checkout's ``models/`` only when it exists;
        the built-in weights last, unless the store was made with ``builtin=False``.
        """
        found: list[SearchPlace] = []
        if self.models_dir is not None:
            found.append(SearchPlace(self.models_dir, "--models-dir"))
        for part in os.environ.get(ENV_MODELS_DIR, "").split(os.pathsep):
            if part.strip():
                found.append(SearchPlace(Path(part.strip()).expanduser(), f"${ENV_MODELS_DIR}"))
        checkout = checkout_models_dir()
        if checkout is not None:
            found.append(SearchPlace(checkout, "checkout models/"))
        found.append(SearchPlace(user_models_dir(), USER_ORIGIN))
        if self.builtin and BUILTIN_DIR.is_dir():
            found.append(SearchPlace(BUILTIN_DIR, BUILTIN_ORIGIN))
        unique: list[SearchPlace] = []
        seen: set[Path] = set()
        for place in found:
            key = place.path.resolve()
            if key not in seen:
                seen.add(key)
                unique.append(place)
        return unique

    def search_dirs(self) -> list[Path]:
        """The local directories in search order (see :meth:`places`)."""
        return [place.path for place in self.places()]

    @staticmethod
    def _usable(place: SearchPlace, cand: Path) -> bool:
        """Whether ``cand`` (a path in ``place``) exists and may be used: built-in files only when verified."""
        return verified(cand) if place.builtin else cand.exists()

    # --- local files ---------------------------------------------------------------------------

    @staticmethod
    def _candidates(directory: Path, relpath: str) -> list[Path]:
        rel = Path(relpath)
        cands = [directory / rel]
        if len(rel.parts) > 1:
            cands.append(directory / rel.name)
        cands += [directory / sub / rel.name for sub in KNOWN_SUBFOLDERS if sub != rel.parent.name]
        return cands

    def find(self, relpath: str | Path) -> Path | None:
        """Return the first existing file or folder for ``relpath``, or None.

        An absolute path (or one starting with ``~``) is an explicit path: returned if it exists,
        and no directory is searched. Otherwise each search directory is tried in order, accepting
        ``<dir>/<relpath>``, ``<dir>/<name>`` and ``<dir>/<known subfolder>/<name>``.
        """
        rel = Path(relpath).expanduser()
        if rel.is_absolute():
            return rel if rel.exists() else None
        return self.find_any([rel])

    def find_any(self, names: Iterable[str | Path]) -> Path | None:
        """First hit for any of ``names``; directory order wins over name order."""
        names = list(names)
        for name in names:
            path = Path(name).expanduser()
            if path.is_absolute() and path.exists():
                return path
        for place in self.places():
            if not place.path.is_dir():
                continue
            for name in names:
                if Path(name).expanduser().is_absolute():
                    continue
                for cand in self._candidates(place.path, str(name)):
                    if self._usable(place, cand):
                        return cand
        return None

    # --- the Hugging Face hub ------------------------------------------------------------------

    def hub_file(self, repo_id: str, filename: str, *, subfolder: str | None = None) -> Path | None:
        """Path of ``filename`` (in ``subfolder``) of hub repo ``repo_id``, from the cache or the hub.

        Offline, only the cache is consulted. Returns None when the file cannot be had (missing
        from the repo or the cache, repo unknown or gated, no network); the reason is kept in
        :attr:`last_hub_error` for messages.
        """
        from huggingface_hub import hf_hub_download

        self.last_hub_error = None
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    subfolder=subfolder or None,
                    cache_dir=self.hub_cache,
                    local_files_only=self.offline,
                )
            )
        except Exception as exc:  # network, 404, gated, offline cache miss, bad repo id ...
            self.last_hub_error = hub_error_detail(exc)
            return None

    def hub_model_folder(self, repo_id: str, subfolders: Sequence[str] = ("vae", "")) -> tuple[str, Path] | None:
        """Find which of ``subfolders`` of ``repo_id`` holds a diffusers model (a ``config.json``).

        Returns ``(subfolder, path_to_config_json)`` for the first that exists ("" = repo root), or
        None. Only ``config.json`` is fetched here; weights are fetched by ``from_pretrained``.
        """
        for sub in subfolders:
            cfg = self.hub_file(repo_id, "config.json", subfolder=sub or None)
            if cfg is not None:
                return sub, cfg
        return None

    # --- reporting ----------------------------------------------------------------------------

    def describe_places(self, hub_repo: str | None = None) -> list[str]:
        """One line per place searched, in order, for error messages."""
        lines = [place.describe() for place in self.places()]
        if not lines:
            lines.append(f"(no model directory configured: no --models-dir, no ${ENV_MODELS_DIR}, no checkout models/)")
        if hub_repo is not None:
            mode = "offline (HF_HUB_OFFLINE is set), cache only" if self.offline else "cache, then hub"
            try:
                cache = str(self.hub_cache)
            except Exception:  # pragma: no cover - huggingface_hub missing
                cache = "?"
            lines.append(f"Hugging Face {hub_repo!r}: {mode}; cache {cache}")
        return lines

    def suggested_dir(self) -> Path:
        """Where a user should put a downloaded model: ``--models-dir`` when given, else the per-user folder."""
        return self.models_dir if self.models_dir is not None else user_models_dir()

    def not_found(
        self,
        what: str,
        *,
        looked_for: Sequence[str] = (),
        hub_repo: str | None = None,
        how: str = "",
        detail: str | None = None,
    ) -> ModelNotFoundError:
        """Build the single error raised for a missing model.

        ``what``: the model asked for; ``looked_for``: file/folder names searched in each local
        directory; ``hub_repo``: the hub repo tried (None if none); ``how``: how to get it;
        ``detail``: the hub's own reason, if any.
        """
        parts = [f"model {what!r} was not found."]
        if looked_for:
            parts.append("Looked for " + ", ".join(repr(n) for n in looked_for) + " in:")
        else:
            parts.append("Looked in:")
        parts += [f"  - {line}" for line in self.describe_places(hub_repo)]
        if detail:
            parts.append(f"  (hub: {detail})")
        if how:
            parts.append("To get it: " + how)
        parts.append(f"Downloads go to the per-user models folder {user_models_dir()}: `fixative models fetch NAME` "
                     "fills it; `fixative models list` shows every model and where it is.")
        return ModelNotFoundError("\n".join(parts))
