"""Shared pytest fixtures.

--- encoders / model store / TAESD fixtures (keep at the top) -------------------------------------
``HF_HUB_OFFLINE`` is set before anything imports diffusers or huggingface_hub (they read it once,
at import), so no test ever reaches for the network. ``shared_dir`` points at the read-only
``../shared`` folder of real weights and images; tests using it skip where it is absent.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared(*relpaths: str) -> Path:
    """Return ``../shared``; skip the calling test when it (or any of ``relpaths`` in it) is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"real-weight test: {SHARED_DIR} is absent on this machine")
    for rel in relpaths:
        if not (SHARED_DIR / rel).exists():
            pytest.skip(f"real-weight test: {SHARED_DIR / rel} is absent on this machine")
    return SHARED_DIR


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder (real weights in ``models/``, photos in ``images/``), or skip."""
    return require_shared()


@pytest.fixture(scope="session")
def shared_models_dir(shared_dir: Path) -> Path:
    """``../shared/models`` (TAESD and LPIPS weights), or skip."""
    return require_shared("models") / "models"


FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_snapshot(cache_dir: Path, repo_id: str) -> Path:
    """Create an offline Hugging Face cache entry for model repo ``repo_id`` under ``cache_dir``.

    Returns the snapshot folder: write the repo's files (``config.json``, ``vae/...``) into it and
    ``hf_hub_download(..., cache_dir=cache_dir, local_files_only=True)`` finds them.
    """
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


# --- end of encoders / model store / TAESD fixtures ----------------------------------------------
