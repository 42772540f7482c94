"""The options that several ``fixative`` commands share, defined once (``protect`` uses them all;
``fixative eval`` and the benchmarks take the ones they need by flag with :func:`add_options`).

Each flag's definition (type, choices, default, help) is the ``protect`` command's; the defaults and
vocabularies come from :mod:`fixative.defaults` and :mod:`fixative.options`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

from fixative import defaults as d
from fixative.options import NO_LIMIT, LpipsNet, Method, Precision, RobustLevel, Views

#: something ``add_argument`` can be called on: a parser or an argument group
Adder = argparse.ArgumentParser | argparse._ArgumentGroup


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with a clear message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


def seconds_or_none(text: str) -> float | None:
    """An argparse type: seconds, or "none" for no time limit."""
    if text.strip().lower() in ("none", "inf", "off"):
        return NO_LIMIT  # wins over a preset's limit
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None


def _values(kind) -> tuple[str, ...]:
    return tuple(member.value for member in kind)


def _encoder(p: Adder) -> None:
    p.add_argument("--encoder", action="append", dest="encoders", metavar="SPEC",
                   help="encoder: short name (taef2, sd15, sdxl, flux1, ...), folder, file or hub id; repeatable "
                        f"(default: {d.DEFAULT_ENCODER})")


def _check_encoder(p: Adder) -> None:
    p.add_argument("--check-encoder", action="append", dest="check_encoders", metavar="SPEC", default=[],
                   help="also measure the result on this encoder without crafting against it (e.g. craft on the "
                        "tiny taef2, check on the full flux2 VAE: the transfer); repeatable")


def _models_dir(p: Adder) -> None:
    p.add_argument("--models-dir", type=Path, help="folder holding model files (see models/README.md)")


def _device(p: Adder) -> None:
    from fixative.core.devices import DEVICE_CHOICES

    p.add_argument("--device", choices=DEVICE_CHOICES, default=d.DEFAULT_DEVICE,
                   help=f"compute device (default {d.DEFAULT_DEVICE})")


def _precision(p: Adder) -> None:
    p.add_argument("--precision", choices=_values(Precision), default=d.DEFAULT_PRECISION,
                   help=f"compute precision (default {d.DEFAULT_PRECISION})")


def _lpips_net(p: Adder) -> None:
    p.add_argument("--lpips-net", choices=_values(LpipsNet), default=d.DEFAULT_LPIPS_NET,
                   help=f"LPIPS backbone (default {d.DEFAULT_LPIPS_NET})")


def _steps(p: Adder) -> None:
    p.add_argument("--steps", type=int, help=f"step limit for each image (default {d.DEFAULT_STEPS})")


def _seconds(p: Adder) -> None:
    p.add_argument("--seconds", type=seconds_or_none,
                   help="time limit for each image's search, in seconds ('none': no limit)")


def _seed(p: Adder) -> None:
    p.add_argument("--seed", type=int, default=d.DEFAULT_SEED, help=f"random seed (default {d.DEFAULT_SEED})")


def _method(p: Adder) -> None:
    p.add_argument("--method", choices=_values(Method), default=d.DEFAULT_METHOD,
                   help=f"search method (default {d.DEFAULT_METHOD})")


def _linf(p: Adder) -> None:
    p.add_argument("--linf", type=float, help="optional per-pixel cap in 0-1 units (e.g. 0.03)")


def _robust(p: Adder) -> None:
    p.add_argument("--robust", choices=_values(RobustLevel),
                   help="protection that survives re-encoding: off (strongest on untouched files, lost to JPEG "
                        "and resizing), web (survives platforms' JPEG and resizing; without --for it protects for "
                        "the generic pipeline, 2048 px and JPEG 85), strong (also noise, blur and encode-decode; "
                        f"slower) (default {d.DEFAULT_ROBUST})")


def _views(p: Adder) -> None:
    p.add_argument("--views", choices=_values(Views), default=d.DEFAULT_VIEWS,
                   help="train (default): protect what a model trained on the image sees, its views resized to "
                        "trainers' sizes (shorter side 512-1024 px, buckets of 0.25-1 MP), cropped and flipped; "
                        "the search cost then stops growing with the image's size. off: the image at its own size "
                        "only, in tiles")


def _platform(p: Adder) -> None:
    p.add_argument("--for", dest="platform", metavar="PLATFORM",
                   help="protect for a platform's upload pipeline (its size limit and JPEG quality): "
                        "generic, instagram, x, facebook, artstation, deviantart, tumblr, bluesky, mastodon")


def _tile_size(p: Adder) -> None:
    p.add_argument("--tile-size", type=int, default=d.DEFAULT_TILE_SIZE,
                   help="images larger than this are tiled (pixels)")


def _tile_batch(p: Adder) -> None:
    p.add_argument("--tile-batch", type=positive_int, metavar="N",
                   help="tiles optimised together per pass (default: as many as the free GPU memory holds on "
                        "CUDA, 1 on the CPU)")


def _quiet(p: Adder) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only problems")


def _verbose(p: Adder) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


#: the shared options by flag, in the order ``fixative protect --help`` lists them
COMMON_OPTIONS: dict[str, Callable[[Adder], None]] = {
    "--encoder": _encoder, "--steps": _steps, "--seconds": _seconds, "--seed": _seed, "--method": _method,
    "--linf": _linf, "--robust": _robust, "--views": _views, "--for": _platform, "--models-dir": _models_dir,
    "--device": _device, "--precision": _precision, "--lpips-net": _lpips_net, "--tile-size": _tile_size,
    "--tile-batch": _tile_batch, "--check-encoder": _check_encoder, "--quiet": _quiet, "--verbose": _verbose,
}


def add_options(parser: Adder, flags: Iterable[str]) -> None:
    """Add the shared options named by ``flags`` (keys of :data:`COMMON_OPTIONS`) to ``parser``."""
    for flag in flags:
        COMMON_OPTIONS[flag](parser)
