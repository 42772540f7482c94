"""Running a target model: how targets are generated (settings), at what size, and one call of a pipeline.

- :class:`GenerationSettings`: strength, guidance, steps, seeds, candidates (defaults from Glaze and
  Nightshade, see :mod:`fixative.targets.made`); :class:`MadeTarget`: a target and its recipe.
- :func:`generation_size`: the artwork's aspect ratio at the model's native area.
- :func:`call_pipeline`: one call, images back as (N,3,H,W) [0,1] on the CPU, each denoising step
  reported to a :data:`TargetStepCallback` (which may raise to stop the generation at once).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fixative.errors import ConfigError, FixativeError
from fixative.targets.modes import TargetStepCallback

#: Nightshade's prompt for anchor images
ANCHOR_PROMPT = "a photo of a {anchor}"

#: ``on_step(done, total)``: called after each denoising step of a target's generation; it may raise to stop it


@dataclass(frozen=True)
class GenerationSettings:
    """How targets are generated (defaults from Glaze/Nightshade, see :mod:`fixative.targets.made`).

    - ``strength``: img2img strength for style targets (0 = the artwork unchanged, 1 = ignore it).
    - ``guidance``: classifier-free guidance scale; ``steps``: scheduler steps.
    - ``seed``: the style target's seed, and the first anchor candidate's (then seed+1, ...).
    - ``candidates``: anchor images made per anchor; ``anchor_prompt``: with ``{anchor}``.
    - ``resolution``: side of the square whose area targets are generated at (aspect ratio
      kept); None = the model's native size (512 for SD 1.5, 1024 for SDXL).
    - ``negative_prompt``: passed where the pipeline takes one; None = none.
    """

    strength: float = 0.45
    guidance: float = 7.5
    steps: int = 50
    seed: int = 0
    candidates: int = 4
    anchor_prompt: str = ANCHOR_PROMPT
    resolution: int | None = None
    negative_prompt: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.strength <= 1:
            raise ConfigError(f"img2img strength must be in (0, 1], not {self.strength}")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, not {self.steps}")
        if self.candidates < 1:
            raise ConfigError(f"candidates must be at least 1, not {self.candidates}")
        if "{anchor}" not in self.anchor_prompt:
            raise ConfigError(f"anchor_prompt must contain '{{anchor}}': {self.anchor_prompt!r}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"resolution must be at least 8 px, not {self.resolution}")
        if self.steps * self.strength < 1:
            raise ConfigError(f"steps x strength must be at least 1 (got {self.steps} x {self.strength})")


class MadeTarget(NamedTuple):
    """A made target: ``image`` (1,3,H,W) float32 in [0,1] at the artwork's size, on the 8-bit grid,
    on the CPU; ``recipe``, JSON-ready, for the protected image's record. Unpacks as a pair."""

    image: Tensor
    recipe: dict


def generation_size(pipe: Any, height: int, width: int, resolution: int | None = None) -> tuple[int, int]:
    """(h, w) at which ``pipe`` generates a target for a ``height`` x ``width`` artwork.

    The area of a ``resolution``-sided square (default: the model's native size), the artwork's
    aspect ratio, each side a multiple of what the model needs (64 px for SD: 8 for the VAE x 8
    for the UNet's downsampling).
    """
    vsf = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    cfg = getattr(denoiser, "config", None)
    if resolution is None:
        sample = getattr(pipe, "default_sample_size", None) or getattr(cfg, "sample_size", None)
        if isinstance(sample, (list, tuple)):
            sample = sample[0]
        resolution = int(sample) * vsf if sample else 512
    if getattr(pipe, "unet", None) is not None:
        multiple = vsf * 2 ** (len(cfg.block_out_channels) - 1)
    else:
        multiple = vsf * int(getattr(cfg, "patch_size", 2) or 2)
    multiple = math.lcm(multiple, 8)  # pipelines check that sides are multiples of 8
    scale = resolution / math.sqrt(height * width)
    gh = max(multiple, round(height * scale / multiple) * multiple)
    gw = max(multiple, round(width * scale / multiple) * multiple)
    return gh, gw


class StepCounter:
    """Counts the denoising steps of one target over its generator calls and reports them as (done, total).

    Passed to diffusers as ``callback_on_step_end``, so an exception raised by ``on_step`` (a cancel)
    leaves the pipeline at once, mid-generation.
    """

    def __init__(self, on_step: TargetStepCallback | None, total: int) -> None:
        self.on_step, self.total, self.done = on_step, max(1, total), 0

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more steps done (at most up to the total) and report them."""
        if steps <= 0:
            return
        self.done = min(self.total, self.done + steps)
        if self.on_step is not None:
            self.on_step(self.done, self.total)

    def advance_to(self, done: int) -> None:
        """Report every step up to ``done`` (after a call whose pipeline ran fewer steps or reported none)."""
        self.advance(done - self.done)

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        self.advance()
        return callback_kwargs


def call_pipeline(pipe: Any, counter: StepCounter | None = None, **kwargs: Any) -> Tensor:
    """Call ``pipe`` with the keyword arguments it accepts; return images as (N,3,H,W) float32 CPU [0,1].

    ``counter`` is called after every denoising step (where the pipeline takes ``callback_on_step_end``).
    """
    if counter is not None:
        kwargs["callback_on_step_end"] = counter
    params = inspect.signature(pipe.__call__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params and v is not None}
    out = pipe(output_type="pt", **kwargs)
    images = out.images if hasattr(out, "images") else out[0]
    images = torch.as_tensor(images).float().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.shape[-1] == 3 and images.shape[1] != 3:  # NHWC
        images = images.permute(0, 3, 1, 2)
    if not torch.isfinite(images).all():
        raise FixativeError(
            f"{type(pipe).__name__} produced NaN/inf pixels (a known fp16 overflow of some VAEs); "
            "rerun with the precision fp32 (or bf16)"
        )
    return images.clamp(0, 1).contiguous()
