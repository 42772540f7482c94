"""Fine-tuning a Stable Diffusion UNet on a folder of captioned images (LoRA or full), with ``accelerate``.

The training objective is the standard one of diffusers' ``train_text_to_image(_lora).py``: encode
each image with the pipeline's VAE (latent = sample of the posterior x ``scaling_factor``), add noise
at a uniformly drawn timestep with a DDPM noise scheduler made from the pipeline's scheduler config,
and regress the UNet's prediction (epsilon or v, as the scheduler says) on it with a mean-squared
error, conditioned on the caption's CLIP text embedding. The VAE and the text encoder are frozen:
latent posteriors (mean, std) and text embeddings are computed once and kept (the posterior is still
*sampled* at every step, exactly as without the cache).

Defaults (:class:`FinetuneSettings`) follow diffusers' ``examples/text_to_image/train_text_to_image_lora.py``:
LoRA rank 4 (alpha = rank) on the UNet attention projections ``to_q/to_k/to_v/to_out.0``, Gaussian
init, AdamW lr 1e-4 (betas 0.9/0.999, weight decay 1e-2, eps 1e-8), ``constant`` learning-rate
schedule, gradient clipping at norm 1, resolution 512 (shorter side resized, centre crop), batch 1
per process. Our own choices where the recipe has none for this use: 1000 steps, a checkpoint every
250 steps, the last 2 kept, seed 0.

``accelerate`` does device placement, mixed precision (frozen parts in the half dtype; LoRA weights
kept in fp32 as the recipe does), gradient accumulation (``accelerator.accumulate``), multi-process
data parallelism (``accelerate launch``; every process draws its own share of each step's batch),
and checkpoints (``accelerator.save_state``/``load_state``; for LoRA only the adapter weights are
saved, through state hooks). Which samples, timesteps and noise a step uses is a pure function of
(seed, step, process, micro-batch), so a resumed run draws exactly what an uninterrupted one would.

A run folder holds: ``run.json`` (settings, status, figures), ``loss.jsonl`` (one line per
optimizer step), ``checkpoints/checkpoint-STEP/`` (complete ones only: written under a ``.partial``
name and renamed), and at the end ``lora/pytorch_lora_weights.safetensors`` (diffusers' LoRA format,
loadable with ``pipe.load_lora_weights``) or ``unet/`` (full fine-tuning, safetensors).

This module holds the settings, the result and :func:`train`, which runs the pieces:
:mod:`fixative.eval.training_data` (images, fingerprint, per-step sampling, the frozen encoders' pass),
:mod:`fixative.eval.unet_training` (the trainable UNet, optimizer and steps) and
:mod:`fixative.eval.run_folder` (``run.json``, ``loss.jsonl``, checkpoints, final weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fixative.errors import ConfigError
from fixative.eval.captions import Example
from fixative.eval.finetune_settings import (
    ACCELERATE_PRECISION,
    FINETUNE_MODEL,
    MIXED_PRECISIONS,
    FinetuneResult,
    FinetuneSettings,
    TrainMethod,
    precision_of,
)
from fixative.eval.run_folder import (
    LORA_FILE,
    atomic_json,
    last_checkpoint,
    read_losses,
    register_lora_hooks,
    save_weights,
    versions,
    write_losses,
)
from fixative.eval.training_data import data_fingerprint, file_sha256, load_examples
from fixative.eval.unet_training import TrainingLoop, encode_frozen, weight_dtype_of
from fixative.models.store import ModelStore
from fixative.options import Precision

log = logging.getLogger(__name__)

__all__ = ["LORA_FILE", "MIXED_PRECISIONS", "FinetuneResult", "FinetuneSettings", "TrainMethod", "last_checkpoint",
           "load_training_pipeline", "make_accelerator", "precision_of", "resolve_mixed_precision", "settings_hash",
           "train"]

# --- loading ----------------------------------------------------------------------------------


def settings_hash(settings: FinetuneSettings, fingerprint: str, model_identity: dict) -> str:
    text = json.dumps({"settings": settings.training_key(), "data": fingerprint, "model": model_identity},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_mixed_precision(precision: str | Precision, device: torch.device) -> str:
    """accelerate's ``mixed_precision`` word for ``precision`` on ``device``: ``auto`` -> ``bf16`` on GPUs
    that do it natively, ``fp16`` on other GPUs, ``no`` on the CPU; fp32 -> ``no``."""
    precision = precision_of(precision)
    if precision != Precision.AUTO:
        if precision == Precision.FP16 and device.type == "cpu":
            raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return ACCELERATE_PRECISION[precision]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "no"


def load_training_pipeline(spec: str, store: ModelStore) -> tuple[Any, dict]:
    """The pipeline named by ``spec`` in fp32 on the CPU, checked to be trainable here (UNet + one CLIP
    text encoder: SD 1.x/2.x), and its identity (for the run's settings hash)."""
    from fixative.targets.made import load_pipeline, resolve_pipeline

    source = resolve_pipeline(spec, store, FINETUNE_MODEL)
    pipe = load_pipeline(source, "text2img", dtype=torch.float32, store=store, progress=False)
    if getattr(pipe, "unet", None) is None or getattr(pipe, "text_encoder", None) is None \
            or getattr(pipe, "text_encoder_2", None) is not None:
        raise ConfigError(f"--model {spec}: {type(pipe).__name__} is not a Stable Diffusion 1.x/2.x pipeline "
                          "(one UNet, one CLIP text encoder); only those can be fine-tuned here")
    return pipe, {**source.identity(), "pipeline": type(pipe).__name__}


# --- training -----------------------------------------------------------------------------------


def make_accelerator(settings: FinetuneSettings):
    """An ``accelerate.Accelerator`` for ``settings`` (mixed precision, gradient accumulation, CPU when asked)."""
    from accelerate import Accelerator

    from fixative.core.devices import resolve_device

    want = resolve_device(settings.device) if settings.device != "auto" else None
    cpu = want is not None and want.type == "cpu"
    probe = want or resolve_device("auto")
    mixed = resolve_mixed_precision(settings.mixed_precision, probe)
    return Accelerator(gradient_accumulation_steps=settings.grad_accum, mixed_precision=mixed, cpu=cpu)


def train(settings: FinetuneSettings, examples: Sequence[Example], out: str | Path, *, accelerator: Any = None,
          pipe: Any = None, model_identity: dict | None = None,
          stop_after: int | None = None, on_step: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune ``settings.model`` on ``examples``; everything goes into run folder ``out``.

    Resumes from the newest complete checkpoint in ``out`` (same data and training settings, else a
    :class:`ConfigError`); a run already finished with the same settings is not redone. ``accelerator``:
    an existing one to reuse (its state is freed at the end); ``pipe``: an already loaded pipeline
    (fp32, CPU; it is moved and modified: pass a fresh one per run). ``stop_after``: stop (with a
    checkpoint) after that many steps of this invocation, for tests. ``on_step(step, loss)`` is called
    on the main process after each optimizer step.
    """
    settings.check()
    out = Path(out)
    examples = list(examples)
    if not examples:
        raise ConfigError("no training images")
    store = ModelStore(settings.models_dir)
    accelerator = accelerator or make_accelerator(settings)
    t0 = time.perf_counter()

    kept, pixels, notes = load_examples(examples, settings.resolution)
    fingerprint = data_fingerprint(kept)
    if pipe is None:
        pipe, model_identity = load_training_pipeline(settings.model, store)
    model_identity = model_identity or {"model": settings.model}
    shash = settings_hash(settings, fingerprint, model_identity)
    previous = _previous_record(out, shash)
    weights_path = out / ("lora" if settings.method == TrainMethod.LORA else "unet")
    weights = weights_path / LORA_FILE if settings.method == TrainMethod.LORA else weights_path
    if _already_done(previous, settings, weights_path):
        log.info("%s: already trained (%d steps); nothing to do", out, settings.max_steps)
        return FinetuneResult(out, weights, settings.method, settings.max_steps, None,
                              read_losses(out / "loss.jsonl"), time.perf_counter() - t0, True, previous)

    weight_dtype = weight_dtype_of(accelerator)
    data = encode_frozen(pipe, pixels, [e.caption for e in kept], accelerator.device, weight_dtype)
    del pixels
    loop = TrainingLoop.build(pipe, settings, data, accelerator, weight_dtype)
    hooks = register_lora_hooks(accelerator) if settings.method == TrainMethod.LORA else []
    start, resumed_from = _resume(accelerator, out, settings)
    losses = read_losses(out / "loss.jsonl", upto=start)
    record = _start_record(settings, loop, kept, notes, start, shash, model_identity, fingerprint)
    if accelerator.is_main_process:
        _open_run_folder(out, losses, record, previous)
    accelerator.wait_for_everyone()

    end = settings.max_steps if stop_after is None else min(settings.max_steps, start + stop_after)
    if accelerator.is_main_process:
        log.info("training %s on %d image(s): steps %d-%d, %d x %d x %d images a step, %s, %s",
                 settings.method, len(kept), start + 1, settings.max_steps, settings.batch_size, settings.grad_accum,
                 accelerator.num_processes, accelerator.device, accelerator.mixed_precision)
    loop.run(out, start, end, losses, t0, on_step)
    if accelerator.is_main_process:
        _finish_record(loop, record, out, end, losses, weights_path, weights, t0)
    accelerator.wait_for_everyone()
    for h in hooks:
        h.remove()
    accelerator.free_memory()
    return FinetuneResult(out, weights, settings.method, end, resumed_from, losses, time.perf_counter() - t0,
                          False, record)


def _previous_record(out: Path, shash: str) -> dict | None:
    """The run folder's ``run.json``, or None; a :class:`ConfigError` when it belongs to other settings."""
    record_path = out / "run.json"
    previous = json.loads(record_path.read_text()) if record_path.is_file() else None
    if previous and previous.get("settings_hash") != shash:
        raise ConfigError(f"{out} holds a run with other data or training settings "
                          f"(hash {previous.get('settings_hash')} != {shash}); use another --out, or delete it")
    return previous


def _already_done(previous: dict | None, settings: FinetuneSettings, weights_path: Path) -> bool:
    return bool(previous and previous.get("status") == "done" and previous.get("steps") == settings.max_steps
                and weights_path.exists())


def _resume(accelerator: Any, out: Path, settings: FinetuneSettings) -> tuple[int, int | None]:
    """Load the newest complete checkpoint into ``accelerator``: (start step, resumed-from step or None)."""
    found = last_checkpoint(out)
    if found is None:
        return 0, None
    step_k, folder = found
    if step_k > settings.max_steps:
        raise ConfigError(f"{out}: its last checkpoint is at step {step_k}, beyond --max-steps "
                          f"{settings.max_steps}")
    accelerator.load_state(str(folder))
    log.info("resuming from checkpoint %s: global step %d of %d", folder, step_k, settings.max_steps)
    return step_k, step_k


def _start_record(settings: FinetuneSettings, loop: TrainingLoop, kept: Sequence[Example], notes: list[str],
                  start: int, shash: str, model_identity: dict, fingerprint: str) -> dict:
    """The ``run.json`` of a run in progress."""
    acc = loop.accelerator
    return {
        "status": "training", "method": settings.method, "settings": asdict(settings), "settings_hash": shash,
        "model_identity": model_identity, "data_fingerprint": fingerprint, "processes": acc.num_processes,
        "mixed_precision": acc.mixed_precision, "device": str(acc.device), "images": len(kept),
        "notes": notes, "prediction_type": loop.prediction,
        "trainable_parameters": int(sum(p.numel() for p in loop.params)),
        "steps": start, "started_from_step": start, "versions": versions(),
        "examples": [{"file": str(e.path), "caption": e.caption} for e in kept],
    }


def _open_run_folder(out: Path, losses: list[dict], record: dict, previous: dict | None) -> None:
    """(Main process.) Make the folders, rewrite ``loss.jsonl`` up to the start, write ``run.json``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    write_losses(out / "loss.jsonl", losses)
    atomic_json(out / "run.json", record)
    world = record["processes"]
    if world != (previous or {}).get("processes", world):
        log.warning("%s was trained with %s process(es) before, now %d: later steps see a different batch",
                    out, previous.get("processes"), world)


def _finish_record(loop: TrainingLoop, record: dict, out: Path, end: int, losses: list[dict], weights_path: Path,
                   weights: Path, t0: float) -> None:
    """(Main process.) At ``max_steps``: save the weights and mark the run done; earlier: stopped."""
    if end == loop.settings.max_steps:
        save_weights(loop.accelerator, loop.unet, loop.settings.method, weights_path)
        record.update(status="done", steps=end, seconds_this_run=round(time.perf_counter() - t0, 3),
                      final_loss=losses[-1]["loss"] if losses else None, weights=str(weights),
                      weights_sha256=file_sha256(weights) if weights.is_file() else None)
    else:
        record.update(status="stopped", steps=end)
    atomic_json(out / "run.json", record)
