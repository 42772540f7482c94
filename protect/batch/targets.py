"""The target of a portfolio run: the request from the options' :class:`~fixative.options.TargetSpec`,
and for a made target (a style re-render, a concept anchor, a pattern) its factories.

One :class:`~fixative.targets.made.TargetMaker` serves the whole run (the spec's ``maker`` when an app
keeps one, else a new one), so the generator loads once. ``style="auto"`` over several images picks one
style for the whole portfolio, as Glaze does for an artist: every image is cloaked towards the same
wrong style, which is what misleads a fine-tune on the portfolio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fixative.errors import FixativeError
from fixative.options import MadeKind, ProtectOptions
from fixative.targets.modes import TargetFactory, made_target_factories

log = logging.getLogger("fixative")


@dataclass
class MadeTargets:
    """A run's made-target ``options`` (the request's, JSON-ready; ``{}`` when none is asked for) and the
    ``factories`` that make them, by kind."""

    options: dict = field(default_factory=dict)
    factories: dict[str, TargetFactory] = field(default_factory=dict)


def portfolio_style(maker: Any, inputs: list[str], recursive: bool, max_pixels: int | None = None) -> str:
    """Resolve ``style="auto"`` once for all ``inputs`` (files, folders, globs); returns the style's name."""
    from fixative.batch.inputs import collect_inputs
    from fixative.files.images import load_image

    items, _, _ = collect_inputs(inputs, recursive)
    images = []
    for item in items:
        try:
            kw = {"max_pixels": max_pixels} if max_pixels else {}
            images.append(load_image(item.path, **kw).rgb)
        except FixativeError:
            continue  # reported by the batch itself
    if not images:
        return "auto"
    choice = maker.choose_style(images)
    log.info("target.style auto: chose %s for all %d image(s); give target.style %s to keep it when adding images "
             "later",
             choice.describe(), len(images), choice.name)
    return choice.name


def made_targets(opts: ProtectOptions) -> MadeTargets:
    """The made-target options and factories of a run (nothing when it asks for no made target)."""
    spec = opts.target
    kind = spec.made
    if kind is None:
        return MadeTargets()
    from fixative.targets.made import GenerationSettings, TargetMaker
    from fixative.targets.names import DEFAULT_TARGET_MODELS

    maker = spec.maker
    settings = maker.settings if maker else GenerationSettings()  # fixed seeds: the seed varies the search only
    maker = maker or TargetMaker(
        spec.model, device=opts.models.device, precision=opts.search.precision.value,
        models_dir=opts.models.models_dir, cache_dir=spec.cache, clip_model=spec.clip_model, settings=settings,
        progress=not opts.quiet,
    )
    factories = made_target_factories(maker)
    if kind is MadeKind.PATTERN:
        return MadeTargets({"kind": kind.value, "pattern": spec.pattern.value}, factories)
    model = spec.model or DEFAULT_TARGET_MODELS[spec.mode.value]
    generation = {"guidance": settings.guidance, "steps": settings.steps, "seed": settings.seed}
    if kind is MadeKind.STYLE:
        style = spec.style
        if style.strip().lower() == "auto":
            style = portfolio_style(maker, list(opts.inputs), opts.output.recursive, opts.output.max_pixels)
        return MadeTargets({"kind": kind.value, "style": style, "target_model": model,
                            "generation": {**generation, "strength": settings.strength}}, factories)
    return MadeTargets({"kind": kind.value, "anchor": spec.anchor, "concept": spec.concept, "target_model": model,
                        "generation": {**generation, "candidates": settings.candidates,
                                       "prompt": settings.anchor_prompt}}, factories)
