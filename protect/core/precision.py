"""Mixed precision for the search: which autocast dtype a precision setting means on a device.

The encoders and LPIPS run under ``torch.autocast`` (bf16) when the settings ask for it; the engine's
final budget check always runs in float32.
"""

from __future__ import annotations

import contextlib

import torch

from fixative.errors import ConfigError


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain float32."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type == "cpu":
            raise ConfigError("fp16 is for GPUs; use bf16 or fp32 on the CPU")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 where it is native (Ampere+ GPUs, CPUs with AVX512-BF16/AMX), else fp32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def precision_context(dtype: torch.dtype | None, device: torch.device):
    """Autocast for the encoders and LPIPS forwards, or a no-op for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


