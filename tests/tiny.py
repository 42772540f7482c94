"""Tiny offline models and images for the engine's logic tests (no downloads, no real weights)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixative.core.perceptual import Perceptual


class TinyEncoder(nn.Module):
    """A small random conv encoder with the :class:`fixative.models.encoders.Encoder` interface.

    [0,1] images of any size -> latents at 1/``downsample`` size; frozen; output scaled by
    ``scale`` (to test that ensemble terms are normalised).
    """

    def __init__(self, seed: int = 0, channels: int = 4, downsample: int = 8, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, c = [], 3
        for _ in range(int(math.log2(downsample))):
            conv = nn.Conv2d(c, 8, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.4)
                conv.bias.zero_()
            layers += [conv, nn.ReLU()]
            c = 8
        out = nn.Conv2d(c, channels, 1)
        with torch.no_grad():
            out.weight.copy_(torch.randn(out.weight.shape, generator=g) * 0.4)
            out.bias.zero_()
        self.net = nn.Sequential(*layers, out)
        self.name = f"tiny{seed}"
        self.downsample = downsample
        self.latent_channels = channels
        self.scale = scale
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        ph, pw = (-h) % self.downsample, (-w) % self.downsample
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph), mode="replicate")
        return self.net(images * 2 - 1).float() * self.scale


def tiny_perceptual() -> Perceptual:
    """LPIPS alex with a random (seeded) backbone and the package's calibrated linear layers."""
    import lpips

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    return Perceptual(model, "alex")


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A 1x3xHxW image in [0,1] with smooth structure and some texture."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    img = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    img = img + 0.05 * torch.randn(1, 3, h, w, generator=g)
    return img.clamp(0, 1)


def tiny_protect_args(models: Path, steps: int = 3) -> list[str]:
    """Flags that make ``fixative protect`` run on the ``tiny_models`` fixture's folder, quickly and quietly."""
    return ["--encoder", str(models / "taesd" / "tiny_encoder.pth"), "--models-dir", str(models),
            "--steps", str(steps), "--precision", "fp32", "--device", "cpu", "-q"]


REPO = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """Environment for a test's child Python process: offline, one thread, this checkout importable."""
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def two_process_launch(*module_args: str) -> list[str]:
    """``accelerate launch`` of ``python -m MODULE_ARGS...`` as 2 CPU processes (gloo) on a free local port."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", *module_args]


def launch_failure(stderr: str, tail: int = 3000) -> str:
    """What to show when a launched run failed: its error lines (progress bars of the other process interleave
    with them), else the end of stderr."""
    errors = [line for line in stderr.splitlines() if "Error" in line or "Traceback" in line or "error:" in line]
    return "\n".join(errors)[-tail:] or stderr[-tail:]


# --- the real weights and images of ../shared ----------------------------------------------------

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared(*relpaths: str) -> Path:
    """Return ``../shared``; skip the calling test when it (or any of ``relpaths`` in it) is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"real-weight test: {SHARED_DIR} is absent on this machine")
    for rel in relpaths:
        if not (SHARED_DIR / rel).exists():
            pytest.skip(f"real-weight test: {SHARED_DIR / rel} is absent on this machine")
    return SHARED_DIR


# --- an offline Hugging Face cache --------------------------------------------------------------

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


# --- made targets: tiny offline diffusers pipelines and CLIP (tests/test_targets*.py) ---------------

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
