"""What a fine-tuning run folder holds, and how each part is written.

- ``run.json``: settings, status and figures (written atomically: :func:`atomic_json`);
- ``loss.jsonl``: one line per optimizer step (:func:`read_losses`, :func:`write_losses`);
- ``checkpoints/checkpoint-STEP/``: ``accelerator.save_state``, complete ones only (written under a
  ``.partial`` name and renamed; for LoRA only the adapter weights, through :func:`register_lora_hooks`);
- ``lora/pytorch_lora_weights.safetensors`` (diffusers' LoRA format) or ``unet/`` (full fine-tuning),
  at the end (:func:`save_weights`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fixative.errors import FixativeError
from fixative.eval.finetune_settings import TrainMethod
from fixative.files.atomic import atomic_write_json, atomic_write_text

LORA_FILE = "pytorch_lora_weights.safetensors"
STATE_LORA_FILE = "unet_lora.safetensors"


def atomic_json(dest: Path, data: dict) -> None:
    """Write ``data`` as indented JSON to ``dest``, atomically (:mod:`fixative.files.atomic`)."""
    atomic_write_json(dest, data, allow_nan=False, default=str)


def read_losses(path: Path, upto: int | None = None) -> list[dict]:
    """The rows of ``loss.jsonl`` in step order (one per step, the last written wins), up to step ``upto``."""
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


def write_losses(path: Path, rows: list[dict]) -> None:
    """Rewrite ``loss.jsonl`` with ``rows`` (atomically)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint in run folder ``out``, oldest first."""
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
    found = checkpoint_dirs(Path(out))
    return found[-1] if found else None


def save_checkpoint(accelerator: Any, out: Path, step: int, keep: int) -> None:
    """Save the accelerator's state as ``checkpoints/checkpoint-STEP`` (every process takes part);
    only the newest ``keep`` complete checkpoints stay."""
    root = out / "checkpoints"
    partial = root / f"checkpoint-{step}.partial"
    final = root / f"checkpoint-{step}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_json(partial / "state.json", {"step": step, "time": time.time()})
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for _, old in checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob("checkpoint-*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def register_lora_hooks(accelerator: Any) -> list[Any]:
    """State hooks so that ``save_state``/``load_state`` keep only the LoRA adapter's weights (fp32),
    not the frozen base UNet. Returns the hook handles (``.remove()`` each at the end)."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

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

    return [accelerator.register_save_state_pre_hook(save_hook),
            accelerator.register_load_state_pre_hook(load_hook)]


def save_weights(accelerator: Any, unet: Any, method: TrainMethod, dest: Path) -> None:
    """LoRA: diffusers' format (``pytorch_lora_weights.safetensors``); full: the UNet with save_pretrained."""
    model = accelerator.unwrap_model(unet)
    tmp = dest.with_name(f"{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    if method == TrainMethod.LORA:
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


def versions() -> dict:
    """The versions of torch, diffusers, accelerate and (where installed) peft, for ``run.json``."""
    import accelerate
    import diffusers

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "accelerate": accelerate.__version__}
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    return out
