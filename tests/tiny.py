"""Tiny offline models and images for the engine's logic tests (no downloads, no real weights)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

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
