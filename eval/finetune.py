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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fixative.errors import ConfigError, FixativeError, InputImageError
from fixative.eval.captions import Example
from fixative.files.images import load_image
from fixative.models.store import ModelStore

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
STATE_LORA_FILE = "unet_lora.safetensors"
LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass
class FinetuneSettings:
    """How to fine-tune. Step counts are optimizer steps; one step sees
    ``batch_size x grad_accum x processes`` images.

    - ``model``: a hub id, a diffusers pipeline folder or a single checkpoint file (SD 1.x/2.x).
    - ``method``: ``"lora"`` (default) or ``"full"`` (every UNet weight trains).
    - ``rank``: LoRA rank (alpha = rank); ``lr``: AdamW learning rate; ``lr_scheduler``: a diffusers
      schedule name (``constant``, ``constant_with_warmup``, ``cosine``, ``linear``...), with ``warmup_steps``.
    - ``resolution``: training side in px (shorter side resized to it, centre crop); a multiple of 8.
    - ``mixed_precision``: ``auto`` (bf16 on GPUs that do it natively, else fp16; none on the CPU), ``no``,
      ``fp16``, ``bf16``; ``gradient_checkpointing`` trades compute for activation memory.
    - ``checkpoint_every``: save a resumable state every N steps (0 = only at the end); ``keep_checkpoints``: how
      many to keep (the newest).
    """

    model: str = ""
    method: str = "lora"
    rank: int = 4
    lr: float = 1e-4
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    resolution: int = 512
    batch_size: int = 1
    grad_accum: int = 1
    max_steps: int = 1000
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    models_dir: str | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` on values that cannot work."""
        if not self.model:
            raise ConfigError("--model is required")
        if self.method not in ("lora", "full"):
            raise ConfigError(f"--method must be 'lora' or 'full', got {self.method!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISIONS)}")
        for name in ("rank", "resolution", "batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.resolution % 8:
            raise ConfigError(f"--resolution must be a multiple of 8, got {self.resolution}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError("--checkpoint-every must be >= 0 and --keep-checkpoints >= 1")

    def training_key(self) -> dict:
        """The settings that change what is learned (``max_steps`` and checkpointing excluded:
        a run can be extended, and its checkpoints reused)."""
        skip = {"max_steps", "checkpoint_every", "keep_checkpoints", "device", "models_dir"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class FinetuneResult:
    """What a run produced: ``weights`` (the LoRA safetensors file, or the full UNet folder),
    ``steps`` done, ``resumed_from`` (the checkpoint step it continued from, or None), the loss per
    step, wall ``seconds`` of this invocation, and ``skipped`` when the run was already complete."""

    out: Path
    weights: Path
    method: str
    steps: int
    resumed_from: int | None
    losses: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False
    record: dict = field(default_factory=dict)


# --- small pieces ---------------------------------------------------------------------------------


def _atomic_json(dest: Path, data: dict) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, dest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(examples: Sequence[Example]) -> str:
    """SHA-256 over every image's bytes and caption: a run folder belongs to one data set."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.path.name}\0{_sha256(ex.path)}\0{ex.caption}\n".encode())
    return digest.hexdigest()


def settings_hash(settings: FinetuneSettings, fingerprint: str, model_identity: dict) -> str:
    text = json.dumps({"settings": settings.training_key(), "data": fingerprint, "model": model_identity},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_mixed_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs that do it natively, ``fp16`` on other GPUs, ``no`` on the CPU."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 or no on the CPU")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "no"


def preprocess(rgb: Tensor, resolution: int) -> Tensor:
    """(1,3,H,W) [0,1] -> (3,R,R) in [-1,1]: shorter side resized to R (bilinear, antialiased), centre crop."""
    h, w = rgb.shape[-2:]
    scale = resolution / min(h, w)
    nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    x = F.interpolate(rgb.float(), size=(nh, nw), mode="bilinear", antialias=scale < 1, align_corners=False)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    x = x[..., top : top + resolution, left : left + resolution].clamp(0, 1)
    return (x[0] * 2 - 1).contiguous()


def load_examples(examples: Sequence[Example], resolution: int) -> tuple[list[Example], list[Tensor], list[str]]:
    """Load and preprocess images; unreadable ones are skipped with a note naming the file."""
    kept, pixels, notes = [], [], []
    for ex in examples:
        try:
            img = load_image(ex.path)
        except (InputImageError, OSError, ValueError) as exc:
            notes.append(f"{ex.path}: skipped ({exc})")
            log.warning("%s: skipped (%s)", ex.path, exc)
            continue
        kept.append(ex)
        pixels.append(preprocess(img.rgb, resolution))
    if not kept:
        raise ConfigError("no readable training images (" + "; ".join(notes[:3]) + ")")
    return kept, pixels, notes


def _step_generator(seed: int, *parts: int) -> torch.Generator:
    key = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))


class StepSampler:
    """Which examples a micro-batch uses: epochs of seeded permutations over the data set, walked in
    order; position = ((step x accum + micro) x processes + rank) x batch_size + j. Independent of
    history, so resuming at step k draws what an uninterrupted run would."""

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int, processes: int, rank: int):
        self.n, self.seed, self.bs, self.accum, self.world, self.rank = n, seed, batch_size, grad_accum, processes, rank
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = torch.randperm(self.n, generator=_step_generator(self.seed, 7, epoch))
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> list[int]:
        start = ((step * self.accum + micro) * self.world + self.rank) * self.bs
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.bs)]


# --- model loading -----------------------------------------------------------------------------


def load_training_pipeline(spec: str, store: ModelStore) -> tuple[Any, dict]:
    """The pipeline named by ``spec`` in fp32 on the CPU, checked to be trainable here (UNet + one CLIP
    text encoder: SD 1.x/2.x), and its identity (for the run's settings hash)."""
    from fixative.targets.made import load_pipeline, resolve_pipeline

    source = resolve_pipeline(spec, store, option="--model")
    pipe = load_pipeline(source, "text2img", dtype=torch.float32, store=store, progress=False, option="--model")
    if getattr(pipe, "unet", None) is None or getattr(pipe, "text_encoder", None) is None \
            or getattr(pipe, "text_encoder_2", None) is not None:
        raise ConfigError(f"--model {spec}: {type(pipe).__name__} is not a Stable Diffusion 1.x/2.x pipeline "
                          "(one UNet, one CLIP text encoder); only those can be fine-tuned here")
    return pipe, {**source.identity(), "pipeline": type(pipe).__name__}


@torch.no_grad()
def encode_examples(pipe: Any, pixels: Sequence[Tensor], captions: Sequence[str], device: torch.device,
                    dtype: torch.dtype, batch: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Latent posterior (mean, std) x scaling factor and text embeddings, on the CPU in fp32."""
    vae, text_encoder, tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
    scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    means, stds, texts = [], [], []
    for i in range(0, len(pixels), batch):
        x = torch.stack(list(pixels[i : i + batch])).to(device, dtype)
        dist = vae.encode(x).latent_dist
        means.append((dist.mean * scale).float().cpu())
        stds.append((dist.std * scale).float().cpu())
        tok = tokenizer(list(captions[i : i + batch]), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt")
        texts.append(text_encoder(tok.input_ids.to(device))[0].float().cpu())
    return torch.cat(means), torch.cat(stds), torch.cat(texts)


# --- checkpoints ---------------------------------------------------------------------------------


def _checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    root = out / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("checkpoint-") and (p / "state.json").is_file():
                try:
                    found.append((int(p.name.removeprefix("checkpoint-")), p))
                except ValueError:
                    continue
    return sorted(found)


def last_checkpoint(out: str | Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint in a run folder, or None."""
    found = _checkpoint_dirs(Path(out))
    return found[-1] if found else None


def _read_losses(path: Path, upto: int | None = None) -> list[dict]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if isinstance(row, dict) and "step" in row and (upto is None or row["step"] <= upto):
                out.append(row)
    by_step = {r["step"]: r for r in out}
    return [by_step[s] for s in sorted(by_step)]


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
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from safetensors.torch import load_file, save_file

    settings.check()
    out = Path(out)
    examples = list(examples)
    if not examples:
        raise ConfigError("no training images")
    store = ModelStore(settings.models_dir)
    accelerator = accelerator or make_accelerator(settings)
    main = accelerator.is_main_process
    t0 = time.perf_counter()

    kept, pixels, notes = load_examples(examples, settings.resolution)
    fingerprint = data_fingerprint(kept)
    if pipe is None:
        pipe, model_identity = load_training_pipeline(settings.model, store)
    model_identity = model_identity or {"model": settings.model}
    shash = settings_hash(settings, fingerprint, model_identity)
    record_path = out / "run.json"
    previous = json.loads(record_path.read_text()) if record_path.is_file() else None
    if previous and previous.get("settings_hash") != shash:
        raise ConfigError(f"{out} holds a run with other data or training settings "
                          f"(hash {previous.get('settings_hash')} != {shash}); use another --out, or delete it")
    weights_path = out / ("lora" if settings.method == "lora" else "unet")
    if (previous and previous.get("status") == "done" and previous.get("steps") == settings.max_steps
            and weights_path.exists()):
        log.info("%s: already trained (%d steps); nothing to do", out, settings.max_steps)
        weights = weights_path / LORA_FILE if settings.method == "lora" else weights_path
        return FinetuneResult(out, weights, settings.method, settings.max_steps, None,
                              _read_losses(out / "loss.jsonl"), time.perf_counter() - t0, True, previous)

    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    _place(vae, device, weight_dtype)
    _place(text_encoder, device, weight_dtype)
    means, stds, texts = encode_examples(pipe, pixels, [e.caption for e in kept], device, weight_dtype)
    del pixels
    vae.to("cpu")
    text_encoder.to("cpu")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type

    if settings.method == "lora":
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

        unet.requires_grad_(False)
        _place(unet, device, weight_dtype)
        with torch.random.fork_rng(devices=[]):  # the adapter's random init follows --seed, not the global RNG
            torch.manual_seed(settings.seed)
            unet.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian",
                                        target_modules=list(LORA_TARGETS)))
        for p in unet.parameters():  # LoRA weights train in fp32 (the recipe's cast_training_params)
            if p.requires_grad:
                p.data = p.data.float()
    else:
        unet.requires_grad_(True)
        _place(unet, device, torch.float32)
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(settings.adam_beta1, settings.adam_beta2),
                                  weight_decay=settings.adam_weight_decay, eps=settings.adam_epsilon)
    world = accelerator.num_processes
    lr_scheduler = get_scheduler(settings.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=settings.warmup_steps * world,
                                 num_training_steps=settings.max_steps * world)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    hooks = []
    if settings.method == "lora":
        def save_hook(models, weights, output_dir):
            if accelerator.is_main_process:
                state = get_peft_model_state_dict(accelerator.unwrap_model(models[0]))
                save_file({k: v.detach().float().contiguous().cpu() for k, v in state.items()},
                          str(Path(output_dir) / STATE_LORA_FILE))
            weights.clear()  # accelerate must not also save the frozen base UNet

        def load_hook(models, input_dir):
            model = accelerator.unwrap_model(models.pop())
            state = load_file(str(Path(input_dir) / STATE_LORA_FILE))
            result = set_peft_model_state_dict(model, state, adapter_name="default")
            if getattr(result, "unexpected_keys", None):
                raise FixativeError(f"{input_dir}: LoRA keys do not fit this UNet: {result.unexpected_keys[:3]}")
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()

        hooks = [accelerator.register_save_state_pre_hook(save_hook),
                 accelerator.register_load_state_pre_hook(load_hook)]

    start, resumed_from = 0, None
    found = last_checkpoint(out)
    if found is not None:
        step_k, folder = found
        if step_k > settings.max_steps:
            raise ConfigError(f"{out}: its last checkpoint is at step {step_k}, beyond --max-steps "
                              f"{settings.max_steps}")
        accelerator.load_state(str(folder))
        start, resumed_from = step_k, step_k
        log.info("resuming from checkpoint %s: global step %d of %d", folder, step_k, settings.max_steps)
    losses = _read_losses(out / "loss.jsonl", upto=start)
    record = {
        "status": "training", "method": settings.method, "settings": asdict(settings), "settings_hash": shash,
        "model_identity": model_identity, "data_fingerprint": fingerprint, "processes": world,
        "mixed_precision": accelerator.mixed_precision, "device": str(device), "images": len(kept),
        "notes": notes, "prediction_type": prediction, "trainable_parameters": int(sum(p.numel() for p in params)),
        "steps": start, "started_from_step": start, "versions": _versions(),
        "examples": [{"file": str(e.path), "caption": e.caption} for e in kept],
    }
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        _write_losses(out / "loss.jsonl", losses)
        _atomic_json(record_path, record)
        if world != (previous or {}).get("processes", world):
            log.warning("%s was trained with %s process(es) before, now %d: later steps see a different batch",
                        out, previous.get("processes"), world)
    accelerator.wait_for_everyone()

    sampler = StepSampler(len(kept), settings.seed, settings.batch_size, settings.grad_accum, world,
                          accelerator.process_index)
    n_train = noise_scheduler.config.num_train_timesteps
    end = settings.max_steps if stop_after is None else min(settings.max_steps, start + stop_after)
    if main:
        log.info("training %s on %d image(s): steps %d-%d, %d x %d x %d images a step, %s, %s",
                 settings.method, len(kept), start + 1, settings.max_steps, settings.batch_size, settings.grad_accum,
                 world, device, accelerator.mixed_precision)
    loss_file = (out / "loss.jsonl").open("a", encoding="utf-8") if main else None
    try:
        for step in range(start, end):
            step_loss = torch.zeros((), device=device)
            for micro in range(settings.grad_accum):
                idx = sampler.indices(step, micro)
                g = _step_generator(settings.seed, 11, step, micro, accelerator.process_index)
                mean, std = means[idx], stds[idx]
                latents = (mean + std * torch.randn(mean.shape, generator=g)).to(device, weight_dtype)
                noise = torch.randn(mean.shape, generator=g).to(device, weight_dtype)
                timesteps = torch.randint(0, n_train, (len(idx),), generator=g).to(device)
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
                cond = texts[idx].to(device, weight_dtype)
                with accelerator.accumulate(unet):
                    with accelerator.autocast():
                        pred = unet(noisy, timesteps, cond, return_dict=False)[0]
                    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach() / settings.grad_accum
            mean_loss = float(accelerator.reduce(step_loss, reduction="mean"))
            if not math.isfinite(mean_loss):
                raise FixativeError(f"the loss became {mean_loss} at step {step + 1}; lower --lr or use fp32")
            done = step + 1
            if main:
                row = {"step": done, "loss": mean_loss, "lr": float(lr_scheduler.get_last_lr()[0]),
                       "seconds": round(time.perf_counter() - t0, 3)}
                losses.append(row)
                loss_file.write(json.dumps(row) + "\n")
                loss_file.flush()
                if on_step is not None:
                    on_step(done, mean_loss)
            if (settings.checkpoint_every and done % settings.checkpoint_every == 0) or done == end:
                _save_checkpoint(accelerator, out, done, settings.keep_checkpoints)
                if main:
                    log.info("step %d/%d: loss %.4f; checkpoint saved", done, settings.max_steps, mean_loss)
    finally:
        if loss_file is not None:
            loss_file.close()

    weights = weights_path / LORA_FILE if settings.method == "lora" else weights_path
    final = end == settings.max_steps
    if final and main:
        _save_weights(accelerator, unet, settings.method, weights_path)
        record.update(status="done", steps=end, seconds_this_run=round(time.perf_counter() - t0, 3),
                      final_loss=losses[-1]["loss"] if losses else None, weights=str(weights),
                      weights_sha256=_sha256(weights) if weights.is_file() else None)
        _atomic_json(record_path, record)
    elif main:
        record.update(status="stopped", steps=end)
        _atomic_json(record_path, record)
    accelerator.wait_for_everyone()
    for h in hooks:
        h.remove()
    accelerator.free_memory()
    return FinetuneResult(out, weights, settings.method, end, resumed_from, losses, time.perf_counter() - t0,
                          False, record)


def _place(module: Any, device: torch.device, dtype: torch.dtype) -> None:
    module.to(device)
    if dtype != torch.float32:  # (diffusers warns about any dtype cast, even to fp32)
        module.to(dtype=dtype)


def _write_losses(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _save_checkpoint(accelerator: Any, out: Path, step: int, keep: int) -> None:
    root = out / "checkpoints"
    partial = root / f"checkpoint-{step}.partial"
    final = root / f"checkpoint-{step}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _atomic_json(partial / "state.json", {"step": step, "time": time.time()})
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for _, old in _checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("checkpoint-*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_weights(accelerator: Any, unet: Any, method: str, dest: Path) -> None:
    """LoRA: diffusers' format (``pytorch_lora_weights.safetensors``); full: the UNet with save_pretrained."""
    model = accelerator.unwrap_model(unet)
    tmp = dest.with_name(f"{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    if method == "lora":
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        state = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
        StableDiffusionPipeline.save_lora_weights(save_directory=str(tmp), unet_lora_layers=state,
                                                  safe_serialization=True)
    else:
        model.save_pretrained(str(tmp), safe_serialization=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _versions() -> dict:
    import accelerate
    import diffusers

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "accelerate": accelerate.__version__}
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    return out
