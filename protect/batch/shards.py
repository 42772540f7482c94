"""This process's share of a portfolio: ``shard=(i, n)``, or the processes of ``accelerate launch``.

The planned list is split round-robin: image ``k`` belongs to shard ``k mod n``, so every image is done
exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fixative.errors import ConfigError
from fixative.options import ProtectOptions


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I, N); a :class:`ConfigError` about ``output.shard`` otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as exc:
        raise ConfigError(f"output.shard {text!r}: expected I/N, e.g. 1/2", field="output.shard") from exc
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"output.shard {text!r}: I must be between 1 and N", field="output.shard")
    return index, count


@dataclass
class Process:
    """This process's place among the shards."""

    index: int = 0  # from 0
    count: int = 1
    state: Any = None  # accelerate's PartialState when launched by accelerate
    device: str | None = None

    @property
    def main(self) -> bool:
        return self.state is None or self.state.is_main_process

    @property
    def label(self) -> str | None:
        return f"{self.index + 1}/{self.count}" if self.count > 1 else None


def this_process(opts: ProtectOptions) -> Process:
    """The share of this process: the options' shard, or accelerate's place (``WORLD_SIZE`` > 1)."""
    if opts.output.shard is not None:
        return Process(opts.output.shard[0] - 1, opts.output.shard[1])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        try:
            from accelerate import PartialState
        except ImportError as exc:
            raise ConfigError("started as one of several processes, but 'accelerate' is not installed; "
                              "pip install 'fixative[multi]', or give output.shard", field="output.shard") from exc
        device = opts.models.device
        cpu = device == "cpu" or not torch.cuda.is_available()
        state = PartialState(cpu=cpu, timeout=timedelta(days=7))
        return Process(state.process_index, state.num_processes, state,
                       str(state.device) if device == "auto" else device)
    return Process()
