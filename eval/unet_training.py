"""The UNet side of a fine-tune: the frozen VAE/text-encoder pass, the UNet made trainable (a LoRA
adapter or every weight), AdamW with a diffusers learning-rate schedule, and the optimizer steps.

The objective is diffusers' ``train_text_to_image(_lora).py``: the latent posterior is sampled, noised
at a uniformly drawn timestep by a DDPM scheduler, and the UNet's prediction (epsilon or v, as the
scheduler says) regressed on it with a mean-squared error, conditioned on the caption's embedding.
Samples, timesteps and noise come from :func:`~fixative.eval.training_data.step_generator`, so a
resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.errors import FixativeError
from fixative.eval.finetune_settings import FinetuneSettings, TrainMethod
from fixative.eval.run_folder import save_checkpoint
from fixative.eval.training_data import StepSampler, encode_examples, step_generator

log = logging.getLogger(__name__)

LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")


@dataclass
class EncodedData:
    """The frozen encoders' outputs, on the CPU in fp32: latent posterior ``means`` and ``stds``
    (x the VAE's scaling factor), (N,4,h,w), and caption embeddings ``texts``, (N,77,D)."""

    means: Tensor
    stds: Tensor
    texts: Tensor


def weight_dtype_of(accelerator: Any) -> torch.dtype:
    """The dtype of the frozen parts under the accelerator's mixed precision (fp32 when none)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def place(module: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Move ``module`` to ``device``, cast to ``dtype`` only when it is not fp32."""
    module.to(device)
    if dtype != torch.float32:  # (diffusers warns about any dtype cast, even to fp32)
        module.to(dtype=dtype)


def encode_frozen(pipe: Any, pixels: Sequence[Tensor], captions: Sequence[str], device: torch.device,
                  dtype: torch.dtype) -> EncodedData:
    """Freeze the pipeline's VAE and text encoder, encode every example once on ``device``, and move
    both back to the CPU."""
    vae, text_encoder = pipe.vae, pipe.text_encoder
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    place(vae, device, dtype)
    place(text_encoder, device, dtype)
    data = EncodedData(*encode_examples(pipe, pixels, captions, device, dtype))
    vae.to("cpu")
    text_encoder.to("cpu")
    return data


def prepare_unet(unet: Any, settings: FinetuneSettings, device: torch.device, dtype: torch.dtype) -> list[Any]:
    """Make ``unet`` trainable as ``settings.method`` says and return its trainable parameters.

    LoRA: the base frozen in ``dtype``, a Gaussian-initialised adapter of rank = alpha =
    ``settings.rank`` on :data:`LORA_TARGETS` (its init follows ``settings.seed``), trained in fp32.
    Full: every weight, in fp32."""
    if settings.method == TrainMethod.LORA:
        from peft import LoraConfig

        unet.requires_grad_(False)
        place(unet, device, dtype)
        with torch.random.fork_rng(devices=[]):  # the adapter's random init follows --seed, not the global RNG
            torch.manual_seed(settings.seed)
            unet.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian",
                                        target_modules=list(LORA_TARGETS)))
        for p in unet.parameters():  # LoRA weights train in fp32 (the recipe's cast_training_params)
            if p.requires_grad:
                p.data = p.data.float()
    else:
        unet.requires_grad_(True)
        place(unet, device, torch.float32)
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return [p for p in unet.parameters() if p.requires_grad]


def make_optimizer(params: list[Any], settings: FinetuneSettings, processes: int) -> tuple[Any, Any]:
    """AdamW over ``params`` and its learning-rate schedule (warm-up and length in scheduler calls:
    accelerate steps the schedule once per process)."""
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(settings.adam_beta1, settings.adam_beta2),
                                  weight_decay=settings.adam_weight_decay, eps=settings.adam_epsilon)
    lr_scheduler = get_scheduler(settings.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=settings.warmup_steps * processes,
                                 num_training_steps=settings.max_steps * processes)
    return optimizer, lr_scheduler


@dataclass
class TrainingLoop:
    """Everything an optimizer step needs; :meth:`build` makes it from a pipeline."""

    settings: FinetuneSettings
    accelerator: Any
    unet: Any
    optimizer: Any
    lr_scheduler: Any
    params: list[Any]
    noise_scheduler: Any
    data: EncodedData
    sampler: StepSampler
    weight_dtype: torch.dtype

    @classmethod
    def build(cls, pipe: Any, settings: FinetuneSettings, data: EncodedData, accelerator: Any,
              weight_dtype: torch.dtype) -> TrainingLoop:
        """The trainable UNet, its optimizer and schedule prepared by ``accelerator``, and the sampler."""
        from diffusers import DDPMScheduler

        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        params = prepare_unet(pipe.unet, settings, accelerator.device, weight_dtype)
        optimizer, lr_scheduler = make_optimizer(params, settings, accelerator.num_processes)
        unet, optimizer, lr_scheduler = accelerator.prepare(pipe.unet, optimizer, lr_scheduler)
        sampler = StepSampler(len(data.means), settings.seed, settings.batch_size, settings.grad_accum,
                              accelerator.num_processes, accelerator.process_index)
        return cls(settings, accelerator, unet, optimizer, lr_scheduler, params, noise_scheduler, data, sampler,
                   weight_dtype)

    @property
    def prediction(self) -> str:
        """What the UNet predicts: ``epsilon`` or ``v_prediction`` (the scheduler's config)."""
        return self.noise_scheduler.config.prediction_type

    def micro_batch(self, step: int, micro: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(noisy latents, timesteps, text embeddings, regression target) of one micro-batch, drawn
        from (seed, step, micro, process) only."""
        acc, device, dtype = self.accelerator, self.accelerator.device, self.weight_dtype
        idx = self.sampler.indices(step, micro)
        g = step_generator(self.settings.seed, 11, step, micro, acc.process_index)
        mean, std = self.data.means[idx], self.data.stds[idx]
        latents = (mean + std * torch.randn(mean.shape, generator=g)).to(device, dtype)
        noise = torch.randn(mean.shape, generator=g).to(device, dtype)
        n_train = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, n_train, (len(idx),), generator=g).to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        sched = self.noise_scheduler
        target = noise if self.prediction == "epsilon" else sched.get_velocity(latents, noise, timesteps)
        return noisy, timesteps, self.data.texts[idx].to(device, dtype), target

    def step(self, step: int) -> float:
        """One optimizer step (``grad_accum`` micro-batches); the loss averaged over processes."""
        acc, s = self.accelerator, self.settings
        step_loss = torch.zeros((), device=acc.device)
        for micro in range(s.grad_accum):
            noisy, timesteps, cond, target = self.micro_batch(step, micro)
            with acc.accumulate(self.unet):
                with acc.autocast():
                    pred = self.unet(noisy, timesteps, cond, return_dict=False)[0]
                loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(self.params, s.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / s.grad_accum
        mean_loss = float(acc.reduce(step_loss, reduction="mean"))
        if not math.isfinite(mean_loss):
            raise FixativeError(f"the loss became {mean_loss} at step {step + 1}; lower --lr or use fp32")
        return mean_loss

    def run(self, out: Path, start: int, end: int, losses: list[dict], t0: float,
            on_step: Callable[[int, float], None] | None = None) -> None:
        """Steps ``start+1 .. end``: each appended to ``losses`` and ``loss.jsonl`` (main process), a
        checkpoint every ``checkpoint_every`` steps and at ``end``."""
        acc, s = self.accelerator, self.settings
        main = acc.is_main_process
        loss_file = (out / "loss.jsonl").open("a", encoding="utf-8") if main else None
        try:
            for step in range(start, end):
                mean_loss = self.step(step)
                done = step + 1
                if main:
                    row = {"step": done, "loss": mean_loss, "lr": float(self.lr_scheduler.get_last_lr()[0]),
                           "seconds": round(time.perf_counter() - t0, 3)}
                    losses.append(row)
                    loss_file.write(json.dumps(row) + "\n")
                    loss_file.flush()
                    if on_step is not None:
                        on_step(done, mean_loss)
                if (s.checkpoint_every and done % s.checkpoint_every == 0) or done == end:
                    save_checkpoint(acc, out, done, s.keep_checkpoints)
                    if main:
                        log.info("step %d/%d: loss %.4f; checkpoint saved", done, s.max_steps, mean_loss)
        finally:
            if loss_file is not None:
                loss_file.close()
