"""The made-target options of ``fixative protect`` and their link to the batch.

``--style NAME|TEXT|auto`` (with ``--mode cloak``), ``--anchor WORD`` and ``--concept WORD``
(with ``--mode poison``), ``--pattern NAME`` (with ``--mode immunize``), ``--target-model
ID|DIR|FILE``, ``--target-cache DIR`` and ``--clip-model ID|DIR|none``. :func:`add_arguments` adds
them to the ``protect`` parser; :func:`target_spec` turns them into the run's
:class:`~fixative.options.TargetSpec` (the batch makes the targets: :mod:`fixative.batch.targets`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fixative.options import Pattern, TargetSpec
from fixative.targets.names import DEFAULT_TARGET_MODELS, STYLE_NAMES

if TYPE_CHECKING:
    from fixative.targets.made import TargetMaker


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
    g.add_argument("--pattern", choices=tuple(p.value for p in Pattern),
                   help="--mode immunize: move towards a built-in pattern instead of away from the image")
    g.add_argument("--target-model", metavar="ID|DIR|FILE",
                   help="diffusers pipeline making the targets: hub id, pipeline folder, single checkpoint file, "
                        f"or sd15/sd21/sdxl (default: {DEFAULT_TARGET_MODELS['cloak']})")
    g.add_argument("--target-cache", type=Path, metavar="DIR",
                   help="where made targets are cached (default $FIXATIVE_CACHE_DIR or ~/.cache/fixative/targets)")
    g.add_argument("--clip-model", metavar="ID|DIR|none",
                   help="CLIP model ranking anchor candidates and picking --style auto (default: "
                        "openai/clip-vit-base-patch32 if already on this machine, else latent distance)")


def target_spec(args: argparse.Namespace, maker: TargetMaker | None = None) -> TargetSpec:
    """The :class:`~fixative.options.TargetSpec` of a parsed ``protect`` command line (checked with the
    options, by :meth:`~fixative.options.ProtectOptions.check`).

    ``maker``: a :class:`TargetMaker` built for these options to reuse (an app keeps one between runs);
    by default the batch makes one for the run.
    """
    return TargetSpec(mode=args.mode, objective=args.objective, image=args.target, style=args.style,
                      anchor=args.anchor, concept=args.concept, pattern=args.pattern, model=args.target_model,
                      cache=args.target_cache, clip_model=args.clip_model, maker=maker)
