"""Shared pytest fixtures.

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


# --- made-target fixtures: tiny offline diffusers pipelines and CLIP (tests/test_targets*.py) ------

TINY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.'-"


def write_tiny_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """A character-level CLIP BPE vocabulary (``vocab.json``, ``merges.txt``) in ``folder``: no hub needed."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in TINY_CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def tiny_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab, merges = write_tiny_clip_vocab(folder)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=77)


def build_tiny_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion pipeline to ``folder`` with ``save_pretrained``.

    UNet (block_out_channels=(4, 8)), AutoencoderKL (2x downsampling), a CLIP text model of hidden
    size 8, a tokenizer from a written vocabulary, a DDIM scheduler: about 30k parameters, native
    size 32 px (sample_size 16 x VAE factor 2). Loadable with ``from_pretrained(folder)`` offline.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(folder.parent / f"{folder.name}-vocab")
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2, attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=16, num_attention_heads=2,
        num_hidden_layers=2, vocab_size=len(tokenizer), projection_dim=8,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random transformers ``CLIPModel`` (32 px images, width 8) and its tokenizer to ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(folder.parent / f"{folder.name}-vocab")
    config = CLIPConfig(
        text_config=CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8,
                                   intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
                                   vocab_size=len(tokenizer)).to_dict(),
        vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=8, intermediate_size=16,
                                       num_attention_heads=2, num_hidden_layers=1).to_dict(),
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
