"""Shared pytest fixtures (the helpers they use, and that tests import, are in tiny.py).

--- encoders / model store / TAESD fixtures (keep at the top) -------------------------------------
``HF_HUB_OFFLINE`` is set before anything imports diffusers or huggingface_hub (they read it once,
at import), so no test ever reaches for the network. ``shared_dir`` points at the read-only
``../shared`` folder of real weights and images; tests using it skip where it is absent.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the per-user models folder (and speed cache) of the machine running the tests are never read or written
import tempfile  # noqa: E402

os.environ.setdefault("FIXATIVE_DATA_DIR", tempfile.mkdtemp(prefix="fixative-test-data-"))
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="fixative-test-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tiny import (  # noqa: E402
    build_tiny_clip,
    build_tiny_sd_pipeline,
    require_shared,
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder (real weights in ``models/``, photos in ``images/``), or skip."""
    return require_shared()


@pytest.fixture(scope="session")
def shared_models_dir(shared_dir: Path) -> Path:
    """``../shared/models`` (TAESD and LPIPS weights), or skip."""
    return require_shared("models") / "models"


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion pipeline folder saved with ``save_pretrained`` (see :func:`build_tiny_sd_pipeline`)."""
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny CLIP model folder (vision + text + tokenizer), see :func:`build_tiny_clip`."""
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


# --- end of made-target fixtures ------------------------------------------------------------------


# --- a tiny offline models folder, for the CLI and batch tests ----------------------------------


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A models folder: a tiny random TAESD-format encoder and a random LPIPS alex backbone.

    ``tiny.tiny_protect_args(it)`` gives the flags that make ``fixative protect`` use it.
    """
    import torch
    import torchvision
    from safetensors.torch import save_file

    from fixative.models.taesd import TAESDEncoder

    root = tmp_path_factory.mktemp("models")
    (root / "taesd").mkdir()
    (root / "lpips").mkdir()
    torch.manual_seed(0)
    torch.save(TAESDEncoder(4, width=8).half().state_dict(), root / "taesd" / "tiny_encoder.pth")
    features = torchvision.models.alexnet(weights=None).features
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()},
              str(root / "lpips" / "alexnet_features.safetensors"))
    return root



# --- the desktop app (tests/test_gui_*.py) ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_taef2_models(tmp_path_factory) -> Path:
    """A models folder where the short name ``taef2`` finds a tiny random encoder *and decoder*
    (``taesd/taef2_encoder.pth``, ``taesd/taef2_decoder.pth``, width 8), plus a random LPIPS alex
    backbone: the app's defaults run on it, and "what the model sees" can be decoded."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    from fixative.models.taesd import TAESDDecoder, TAESDEncoder

    root = tmp_path_factory.mktemp("taef2-models")
    (root / "taesd").mkdir()
    (root / "lpips").mkdir()
    torch.manual_seed(0)
    torch.save(TAESDEncoder(32, width=8, midblock_gn=True).half().state_dict(), root / "taesd" / "taef2_encoder.pth")
    torch.save(TAESDDecoder(32, width=8, midblock_gn=True).half().state_dict(), root / "taesd" / "taef2_decoder.pth")
    features = torchvision.models.alexnet(weights=None).features
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()},
              str(root / "lpips" / "alexnet_features.safetensors"))
    return root


# --- Content Credentials: no test ever uses (or makes) the real user's signing identity ------------


@pytest.fixture(autouse=True)
def private_config_dir(tmp_path_factory, monkeypatch) -> Path:
    """``FIXATIVE_CONFIG_DIR`` is an empty temp folder: no identity unless a test makes one there."""
    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("FIXATIVE_CONFIG_DIR", str(folder))
    return folder


# --- the batch, hardening and credentials tests (test_batch.py, test_hardening.py, test_credentials.py) ------


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a shared 2-core machine, OpenMP spin-waiting makes tiny convolutions 5x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def target(tmp_path) -> Path:
    """A target image (40x32 px, ``corpus.rgb8(99)``) in its own folder."""
    import corpus
    from PIL import Image

    path = tmp_path / "target" / "target.png"
    path.parent.mkdir()
    Image.fromarray(corpus.rgb8(99), "RGB").save(path)
    return path
