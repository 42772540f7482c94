"""Generating images from a Stable Diffusion pipeline, with a fine-tuned LoRA loaded or not.

The pipeline comes through diffusers from a hub id, a local pipeline folder or a single checkpoint
file (``fixative.targets.made.resolve_pipeline``/``load_pipeline``). Every image has its own seeded CPU
generator, so image (prompt, seed) is the same whatever the batch and whichever model variant draws
it: the clean- and the protected-trained models start from identical noise.

LoRA weights (``pytorch_lora_weights.safetensors`` in diffusers' format) are loaded with
``pipe.load_lora_weights`` for one call and unloaded after it (``unload_lora_weights``), so the
same pipeline serves the base model and every fine-tune. A full fine-tune (a ``unet/`` folder)
replaces the UNet for the call and is swapped back after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fixative.core.devices import resolve_device
from fixative.errors import ConfigError, FixativeError
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)


@dataclass
class SampleSettings:
    """``steps`` denoising steps of the pipeline's own scheduler, classifier-free ``guidance``,
    ``size`` px (square; None = the model's native size)."""

    steps: int = 30
    guidance: float = 7.5
    size: int | None = None

    def check(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--sample-steps must be at least 1, got {self.steps}")
        if self.size is not None and (self.size < 8 or self.size % 8):
            raise ConfigError(f"--sample-size must be a multiple of 8, got {self.size}")


class Sampler:
    """A loaded text-to-image pipeline that draws seeded images with an optional fine-tune applied."""

    def __init__(self, pipe: Any, device: torch.device, name: str = ""):
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device
        self.name = name

    @classmethod
    def load(cls, spec: str, *, store: ModelStore | None = None, device: str | torch.device = "auto",
             precision: str = "auto") -> Sampler:
        """Load ``spec`` (hub id, folder or file) for generation on ``device`` (fp32 on the CPU; bf16/fp16 on GPUs)."""
        from fixative.eval.finetune_settings import FINETUNE_MODEL
        from fixative.targets.made import load_pipeline, pipeline_dtype, resolve_pipeline

        store = store or ModelStore()
        dev = resolve_device(device)
        source = resolve_pipeline(spec, store, FINETUNE_MODEL)
        pipe = load_pipeline(source, "text2img", dtype=pipeline_dtype(dev, precision), store=store, progress=False)
        return cls(pipe, dev, spec)

    def native_size(self) -> int:
        unet = getattr(self.pipe, "unet", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", None) or 64
        return int(sample) * int(getattr(self.pipe, "vae_scale_factor", 8) or 8)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], settings: SampleSettings | None = None, *,
                 weights: str | Path | None = None) -> Tensor:
        """Images for every (prompt, seed): float32 [len(prompts), len(seeds), 3, S, S] in [0, 1], on the CPU.

        ``weights``: a LoRA safetensors file (or a folder holding ``pytorch_lora_weights.safetensors``),
        a full fine-tune's ``unet/`` folder, or None for the base model. The fine-tune is removed again
        before returning.
        """
        settings = settings or SampleSettings()
        settings.check()
        size = settings.size or self.native_size()
        restore = self._apply(weights) if weights is not None else None
        try:
            rows = []
            for prompt in prompts:
                gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
                out = self.pipe(prompt=[prompt] * len(seeds), num_inference_steps=settings.steps,
                                guidance_scale=settings.guidance, height=size, width=size, generator=gens,
                                output_type="pt").images
                out = out if isinstance(out, Tensor) else torch.as_tensor(out)
                rows.append(out.float().clamp(0, 1).cpu())
            return torch.stack(rows)
        finally:
            if restore is not None:
                restore()

    def _apply(self, weights: str | Path):
        path = Path(weights)
        if path.is_dir() and (path / "config.json").is_file():  # a full UNet fine-tune
            from diffusers import UNet2DConditionModel

            original = self.pipe.unet
            try:
                kwargs = {"torch_dtype": original.dtype} if original.dtype != torch.float32 else {}
                unet = UNet2DConditionModel.from_pretrained(str(path), **kwargs)
            except Exception as exc:
                raise FixativeError(f"{path}: cannot load the fine-tuned UNet ({exc})") from exc
            self.pipe.unet = unet.to(self.device)

            def restore_unet() -> None:
                self.pipe.unet = original

            return restore_unet
        if path.is_dir():
            from fixative.eval.run_folder import LORA_FILE

            path = path / LORA_FILE
        if not path.is_file():
            raise ConfigError(f"{weights}: no LoRA weights or UNet folder there")
        from diffusers.utils import logging as dlog

        level = dlog.get_verbosity()
        dlog.set_verbosity_error()  # "no LoRA keys for the text encoder": expected, only the UNet is tuned
        try:
            self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="finetune")
        except Exception as exc:
            raise FixativeError(f"{path}: cannot load these LoRA weights into the pipeline ({exc})") from exc
        finally:
            dlog.set_verbosity(level)
        return self.pipe.unload_lora_weights
