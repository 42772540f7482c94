"""The made-target options of ``fixative protect`` and their link to the batch.

``--style NAME|TEXT|auto`` (with ``--mode cloak``), ``--anchor WORD`` and ``--concept WORD``
(with ``--mode poison``), ``--pattern NAME`` (with ``--mode immunize``), ``--target-model
ID|DIR|FILE``, ``--target-cache DIR`` and ``--clip-model ID|DIR|none``. :func:`add_arguments` adds
them to the ``protect`` parser; :func:`batch_target_options` checks them, registers a maker with
:mod:`fixative.targets.modes` (one :class:`~fixative.targets.made.TargetMaker` for the run, so the generator is
loaded once) and returns the batch's ``target_options``.

``--style auto`` over several images picks one style for the whole portfolio, as Glaze does for
an artist: every image is cloaked towards the same wrong style, which is what misleads a
fine-tune on the portfolio.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fixative.errors import ConfigError, FixativeError
from fixative.targets.names import DEFAULT_TARGET_MODELS, STYLE_NAMES
from fixative.targets.patterns import PATTERNS

if TYPE_CHECKING:
    from fixative.targets.made import TargetMaker

log = logging.getLogger("fixative")

#: the kinds registered with fixative.targets.modes
KINDS = ("style", "anchor", "pattern")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the made-target options to the ``protect`` parser."""
    g = parser.add_argument_group(
        "made targets", "instead of --target IMAGE, let a diffusion model make the target (cached; recorded)")
    g.add_argument("--style", metavar="NAME|TEXT|auto",
                   help="--mode cloak: re-render each image in this style (img2img, strength 0.45) and cloak "
                        f"towards it; a built-in name ({', '.join(STYLE_NAMES)}), any description, or 'auto' "
                        "(a built-in style distant from the images, the same for all)")
    g.add_argument("--anchor", metavar="WORD",
                   help="--mode poison: make 'a photo of a WORD' (4 seeds, the best kept) and poison towards it")
    g.add_argument("--concept", metavar="WORD",
                   help="--mode poison: the concept the images show (recorded with the anchor)")
    g.add_argument("--pattern", choices=PATTERNS,
                   help="--mode immunize: move towards a built-in pattern instead of away from the image")
    g.add_argument("--target-model", metavar="ID|DIR|FILE",
                   help="diffusers pipeline making the targets: hub id, pipeline folder, single checkpoint file, "
                        f"or sd15/sd21/sdxl (default: {DEFAULT_TARGET_MODELS['cloak']})")
    g.add_argument("--target-cache", type=Path, metavar="DIR",
                   help="where made targets are cached (default $FIXATIVE_CACHE_DIR or ~/.cache/fixative/targets)")
    g.add_argument("--clip-model", metavar="ID|DIR|none",
                   help="CLIP model ranking anchor candidates and picking --style auto (default: "
                        "openai/clip-vit-base-patch32 if already on this machine, else latent distance)")


def _kind(args: argparse.Namespace) -> str | None:
    asked = {"style": args.style is not None, "anchor": args.anchor is not None or args.concept is not None,
             "pattern": args.pattern is not None}
    kinds = [k for k, on in asked.items() if on]
    if len(kinds) > 1:
        raise ConfigError("--style, --anchor/--concept and --pattern are for different modes; give one of them")
    extras = [f for f in ("target_model", "target_cache", "clip_model") if getattr(args, f) is not None]
    if not kinds:
        if extras:
            flag = "--" + extras[0].replace("_", "-")
            raise ConfigError(f"{flag} is for made targets: add --style (cloak), --anchor (poison) or --pattern")
        return None
    kind = kinds[0]
    need = {"style": "cloak", "anchor": "poison", "pattern": "immunize"}[kind]
    flag = {"style": "--style", "anchor": "--anchor", "pattern": "--pattern"}[kind]
    if args.mode != need:
        raise ConfigError(f"{flag} makes a target for --mode {need}, not --mode {args.mode}")
    if args.target is not None:
        raise ConfigError(f"give either --target IMAGE or {flag}, not both")
    if kind == "anchor" and not args.anchor:
        raise ConfigError("--concept needs --anchor WORD: the concept the images should teach instead")
    if kind == "pattern" and (args.target_model or args.clip_model):
        raise ConfigError("--pattern is made by code: --target-model and --clip-model do not apply")
    return kind


def portfolio_style(maker: TargetMaker, inputs: list[str], recursive: bool, max_pixels: int | None = None) -> str:
    """Resolve ``--style auto`` once for all ``inputs`` (files, folders, globs); returns the style's name."""
    from fixative.batch.runner import collect_inputs
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
    log.info("--style auto: chose %s for all %d image(s); pass --style %s to keep it when adding images later",
             choice.describe(), len(images), choice.name)
    return choice.name


def batch_target_options(args: argparse.Namespace, maker: TargetMaker | None = None) -> dict:
    """Check the made-target options of a ``protect`` run; register the maker; return ``target_options``.

    Returns ``{}`` when no made target is asked for (the batch's ``--target``/objective rules apply).
    ``maker``: a :class:`TargetMaker` built for these options to reuse (the GUI keeps one between runs);
    by default one is made here.
    """
    kind = _kind(args)
    if kind is None:
        return {}
    from fixative.targets.made import GenerationSettings, TargetMaker
    from fixative.targets.modes import Target, register_target_maker

    settings = maker.settings if maker else GenerationSettings()  # fixed seeds: --seed varies the search only
    maker = maker or TargetMaker(
        args.target_model, device=args.device, precision=args.precision, models_dir=args.models_dir,
        cache_dir=args.target_cache, clip_model=args.clip_model, settings=settings, progress=not args.quiet,
    )

    def make(request, loaded, on_step=None):
        o = request.options
        made = maker.make(request.mode, loaded.rgb, style=o.get("style"), concept=o.get("concept"),
                          anchor=o.get("anchor"), pattern=o.get("pattern") or PATTERNS[0], on_step=on_step)
        return Target(made.image, made.recipe)

    for k in KINDS:
        register_target_maker(k, make)

    if kind == "pattern":
        return {"kind": kind, "pattern": args.pattern}
    model = args.target_model or DEFAULT_TARGET_MODELS[args.mode]
    generation = {"guidance": settings.guidance, "steps": settings.steps, "seed": settings.seed}
    if kind == "style":
        style = args.style
        if style.strip().lower() == "auto":
            style = portfolio_style(maker, list(args.inputs), args.recursive, getattr(args, "max_pixels", None))
        return {"kind": kind, "style": style, "target_model": model,
                "generation": {**generation, "strength": settings.strength}}
    return {"kind": kind, "anchor": args.anchor, "concept": args.concept, "target_model": model,
            "generation": {**generation, "candidates": settings.candidates, "prompt": settings.anchor_prompt}}
