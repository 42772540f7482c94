"""What a fine-tune is asked to do (:class:`FinetuneSettings`, defaults from diffusers' LoRA recipe) and
what it produced (:class:`FinetuneResult`); the vocabularies it speaks. Importable without torch
(``fixative eval finetune --help`` reads the defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from fixative import defaults as d
from fixative.errors import ConfigError
from fixative.options import Precision
from fixative.targets.sources import ModelRole

#: the Stable Diffusion pipeline that ``fixative eval finetune``/``mimicry`` trains and samples from, in the
#: words of errors about it (``fixative eval`` names its flag, ``--model``, for the field)
FINETUNE_MODEL = ModelRole("the model", "finetune.model")


class TrainMethod(StrEnum):
    """What trains: a LoRA adapter on the UNet's attention, or every UNet weight."""

    LORA = "lora"
    FULL = "full"


#: accelerate's ``mixed_precision`` word for each of the library's precisions (``no`` = none = fp32)
ACCELERATE_PRECISION = {Precision.FP32: "no", Precision.FP16: "fp16", Precision.BF16: "bf16"}
#: the words ``--mixed-precision`` accepts: the library's :class:`~fixative.options.Precision`, and
#: accelerate's ``no`` for fp32
MIXED_PRECISIONS = tuple(p.value for p in Precision) + ("no",)


def precision_of(word: str | Precision) -> Precision:
    """A mixed-precision word as the library's :class:`~fixative.options.Precision` (accelerate's ``no``
    is fp32); a :class:`ConfigError` naming ``--mixed-precision`` for anything else."""
    if word == "no":
        return Precision.FP32
    try:
        return Precision(word)
    except ValueError:
        raise ConfigError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISIONS)}, got {word!r}",
                          field="mixed_precision") from None




@dataclass
class FinetuneSettings:
    """How to fine-tune. Step counts are optimizer steps; one step sees
    ``batch_size x grad_accum x processes`` images.

    - ``model``: a hub id, a diffusers pipeline folder or a single checkpoint file (SD 1.x/2.x).
    - ``method``: ``"lora"`` (default) or ``"full"`` (every UNet weight trains).
    - ``rank``: LoRA rank (alpha = rank); ``lr``: AdamW learning rate; ``lr_scheduler``: a diffusers
      schedule name (``constant``, ``constant_with_warmup``, ``cosine``, ``linear``...), with ``warmup_steps``.
    - ``resolution``: training side in px (shorter side resized to it, centre crop); a multiple of 8.
    - ``mixed_precision``: a :class:`~fixative.options.Precision`: ``auto`` (bf16 on GPUs that do it natively,
      else fp16; none on the CPU), ``fp32`` (none; accelerate's ``no`` is accepted for it), ``fp16``, ``bf16``;
      ``gradient_checkpointing`` trades compute for activation memory.
    - ``checkpoint_every``: save a resumable state every N steps (0 = only at the end); ``keep_checkpoints``: how
      many to keep (the newest).
    """

    model: str = ""
    method: TrainMethod = TrainMethod.LORA
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
    mixed_precision: Precision = Precision(d.DEFAULT_PRECISION)
    gradient_checkpointing: bool = False
    seed: int = 0
    device: str = d.DEFAULT_DEVICE
    models_dir: str | None = None

    def __post_init__(self) -> None:
        """Words given for the vocabularies become their enums (unknown ones are left for :meth:`check`)."""
        if self.method in tuple(TrainMethod):
            self.method = TrainMethod(self.method)
        if self.mixed_precision in MIXED_PRECISIONS:
            self.mixed_precision = precision_of(self.mixed_precision)

    def check(self) -> None:
        """Raise :class:`ConfigError` on values that cannot work."""
        if not self.model:
            raise ConfigError("--model is required")
        if self.method not in tuple(TrainMethod):
            raise ConfigError(f"--method must be 'lora' or 'full', got {self.method!r}")
        self.method = TrainMethod(self.method)
        self.mixed_precision = precision_of(self.mixed_precision)
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
        key = {k: v for k, v in asdict(self).items() if k not in skip}
        # in accelerate's words, as run folders made before the library's vocabulary were hashed
        precision = key["mixed_precision"]
        key["mixed_precision"] = ACCELERATE_PRECISION.get(precision, str(precision))
        return key


@dataclass
class FinetuneResult:
    """What a run produced: ``weights`` (the LoRA safetensors file, or the full UNet folder),
    ``steps`` done, ``resumed_from`` (the checkpoint step it continued from, or None), the loss per
    step, wall ``seconds`` of this invocation, and ``skipped`` when the run was already complete."""

    out: Path
    weights: Path
    method: TrainMethod
    steps: int
    resumed_from: int | None
    losses: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False
    record: dict = field(default_factory=dict)
