"""What a portfolio run did: one :class:`Outcome` per input, the :class:`BatchSummary`, and their lines."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from fixative import __version__
from fixative.provenance.manifest import INDEX_NAME


@dataclass
class Outcome:
    """What happened to one input: ``done``, ``skipped`` (already done), ``failed`` (with ``reason``) or
    ``cancelled`` (a :class:`BatchHooks` hook stopped the run before it was done)."""

    input: str
    status: str
    output: str | None = None
    record: str | None = None
    reason: str | None = None
    lpips: float | None = None
    mean_ratio: float | None = None
    seconds: float | None = None
    compressed: dict | None = None
    checked: dict | None = None  # distance ratio on each check encoder (transfer from the crafting ones)
    view_ratio: dict | None = None  # distance ratio at each evaluation training view (fixative.core.views)


@dataclass
class BatchSummary:
    out: Path
    outcomes: list[Outcome]
    ignored: int = 0
    shard: str | None = None
    settings_hash: str | None = None
    report: bool = True  # False on the non-main processes of an accelerate run

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_json(self) -> dict:
        return {
            "fixative": __version__,
            "out": str(self.out),
            "index": str(self.out / INDEX_NAME),
            "shard": self.shard,
            "settings_hash": self.settings_hash,
            "counts": {s: self.count(s) for s in ("done", "skipped", "failed")} | {"ignored": self.ignored},
            "images": [{k: v for k, v in asdict(o).items() if v is not None} for o in self.outcomes],
            "failures": [{"input": o.input, "reason": o.reason} for o in self.failures],
            "exit_code": self.exit_code,
        }


def describe(outcome: Outcome) -> str:
    """The log line of a protected image: where it went, its measurements and time."""
    parts = [f"{outcome.input} -> {outcome.output}"]
    if outcome.lpips is not None:
        parts.append(f"LPIPS {outcome.lpips:.4f}")
    if outcome.mean_ratio is not None:
        parts.append(f"distance ratio {outcome.mean_ratio:.3f}")
    if outcome.view_ratio:
        parts.append("at training views: " + ", ".join(f"{n} {r:.3f}" for n, r in outcome.view_ratio.items()))
    if outcome.checked:
        parts.append("on check encoders: " + ", ".join(f"{n} {r:.3f}" for n, r in outcome.checked.items()))
    if outcome.seconds is not None:
        parts.append(f"{outcome.seconds:.1f} s")
    text = ", ".join(parts)
    if outcome.compressed:
        c = outcome.compressed
        ratio = f", distance ratio {c['mean_ratio']:.3f}" if c.get("mean_ratio") is not None else ""
        text += f"; after JPEG q{c['quality']}: LPIPS {c['lpips']:.4f}{ratio} (compression weakens protection)"
    return text
