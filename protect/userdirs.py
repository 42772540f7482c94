"""Per-user folders: where downloaded models go and where measured speeds are cached.

- models: ``$FIXATIVE_DATA_DIR/models`` when that variable is set, else ``<user data dir>/models``
  (platformdirs: ``~/.local/share/fixative/models`` on Linux, ``~/Library/Application
  Support/fixative/models`` on macOS, ``%LOCALAPPDATA%\\fixative\\models`` on Windows). The model
  store searches it; ``fixative models fetch`` writes into it.
- cache: ``<user cache dir>`` (``~/.cache/fixative`` on Linux), for the speed probe's result.
- config: ``$FIXATIVE_CONFIG_DIR`` when set, else ``<user config dir>`` (``~/.config/fixative`` on
  Linux), where ``fixative identity create`` keeps the signing identity (:mod:`fixative.provenance.identity`).

Read at call time, so a changed environment is seen. Nothing is created here.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "fixative"
ENV_DATA_DIR = "FIXATIVE_DATA_DIR"
"""Environment variable replacing the per-user data folder (the models folder is ``models/`` in it)."""
ENV_CONFIG_DIR = "FIXATIVE_CONFIG_DIR"
"""Environment variable replacing the per-user config folder (the signing identity is ``identity/`` in it)."""


def user_data_dir() -> Path:
    """The per-user data folder (``$FIXATIVE_DATA_DIR``, else platformdirs' user data dir)."""
    override = os.environ.get(ENV_DATA_DIR, "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_models_dir() -> Path:
    """The per-user models folder that the store searches and ``fixative models fetch`` fills."""
    return user_data_dir() / "models"


def user_cache_dir() -> Path:
    """The per-user cache folder (platformdirs' user cache dir; ``$XDG_CACHE_HOME`` is honoured)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def user_config_dir() -> Path:
    """The per-user config folder (``$FIXATIVE_CONFIG_DIR``, else platformdirs' user config dir)."""
    override = os.environ.get(ENV_CONFIG_DIR, "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
