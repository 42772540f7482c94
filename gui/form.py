"""What the artist chose on the app's form (:class:`JobSettings`), and the ``fixative protect`` command line
that does the same (:func:`protect_argv`; shown to the user by :func:`command_line`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from fixative.files.images import MAX_PIXELS
from fixative.presets import INTENSITIES, QUALITIES
from fixative.provenance.optout import DEFAULT_OPT_OUT, OPT_OUTS
from fixative.targets.modes import MODES

#: where an immunization's target comes from (besides the user's own image)
IMMUNIZE_TARGETS = ("away", "texture", "gray")
#: the first encoders offered (any spec the command line takes works)
DEFAULT_ENCODERS = ("taef2",)
#: the style cloak's default: a target made by code on this computer (:func:`fixative.targets.patterns.restyle`; no
#: diffusion model, no download; ``fixative protect`` without --target or --style does the same)
BUILTIN_STYLE = "built-in"


@dataclass
class JobSettings:
    """What the artist chose. Strings are the command line's values.

    - ``mode``: ``cloak``, ``poison`` or ``immunize``.
    - ``target_image``: a target picture of the user's (any mode); else the mode's made target:
      ``style`` (cloak: :data:`BUILTIN_STYLE`, the default, made by code in seconds; or, made by a diffusion
      model, a named style, a description or ``auto``), ``anchor``/``concept`` (poison:
      the anchor concept is required), ``immunize`` (``away`` from the image itself, or the built-in
      ``texture``/``gray`` pattern).
    - ``intensity``: low/medium/high; ``quality``: fast/standard/best; ``steps``/``seconds``: override the
      quality's step and time limits (None = the preset's; a time limit makes runs non-reproducible).
    - ``posting``: where the image will be posted: a platform key of ``protect/platforms.toml``
      (``generic`` = any site: the CLI's default), or ``off`` for no robust layer (strongest on the
      untouched file, weakest after re-encoding).
    - ``encoders``: encoder specs (short names, files, folders, hub ids); ``seed``; ``device``;
      ``precision``; ``target_model``/``clip_model``: for made targets (None = the defaults).
    """

    mode: str = "cloak"
    target_image: str | None = None
    style: str = BUILTIN_STYLE
    concept: str = ""
    anchor: str = ""
    immunize: str = "away"
    intensity: str = "medium"
    quality: str = "standard"
    posting: str = "generic"
    steps: int | None = None
    seconds: float | None = None
    encoders: list[str] = field(default_factory=lambda: list(DEFAULT_ENCODERS))
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    target_model: str | None = None
    clip_model: str | None = None
    credentials: bool = True  # sign with the user's identity (when they have one), as the command line does
    opt_out: str = DEFAULT_OPT_OUT

    def problems(self) -> list[str]:
        """What is missing or wrong, in words (empty when the settings can run)."""
        out = []
        if self.mode not in MODES:
            out.append(f"unknown mode {self.mode!r}")
        if self.opt_out not in OPT_OUTS:
            out.append(f"unknown opt-out {self.opt_out!r}")
        if self.intensity not in INTENSITIES:
            out.append(f"unknown intensity {self.intensity!r}")
        if self.quality not in QUALITIES:
            out.append(f"unknown quality {self.quality!r}")
        from fixative.batch.platforms import platforms

        if self.posting != "off" and self.posting not in platforms():
            out.append(f"unknown platform {self.posting!r}")
        if not self.encoders:
            out.append("choose at least one encoder (Advanced options)")
        if self.target_image is None:
            if self.mode == "poison" and not self.anchor.strip():
                out.append("concept poison needs an anchor: what the images should teach a model instead "
                           "(e.g. 'cat'), or your own target image")
            if self.mode == "cloak" and not self.style.strip():
                out.append(f"style cloak needs a style ('{BUILTIN_STYLE}' needs no download), or your own target "
                           "image")
            if self.mode == "immunize" and self.immunize not in IMMUNIZE_TARGETS:
                out.append(f"unknown immunization target {self.immunize!r}")
        if self.steps is not None and self.steps < 1:
            out.append("steps must be at least 1")
        if self.seconds is not None and self.seconds <= 0:
            out.append("the time limit must be positive")
        return out


def parse_encoders(text: str) -> list[str]:
    """Encoder specs from a text field: separated by commas or new lines, blanks dropped."""
    return [part.strip() for part in re.split(r"[,\n]", text or "") if part.strip()]


def protect_argv(settings: JobSettings, inputs: list[Path], out: Path, *, models_dir: Path | None = None,
                 max_pixels: int = MAX_PIXELS, target_cache: Path | None = None) -> list[str]:
    """The ``fixative protect`` arguments (without ``protect``) that do what ``settings`` ask.

    Values are attached with ``=`` so that text starting with ``-`` is never read as an option.
    """
    argv = [str(p) for p in inputs] + [f"--out={out}", f"--mode={settings.mode}",
                                       f"--intensity={settings.intensity}", f"--quality={settings.quality}"]
    argv += ["--robust=off"] if settings.posting == "off" else ["--robust=web", f"--for={settings.posting}"]
    if settings.steps is not None:
        argv.append(f"--steps={int(settings.steps)}")
    if settings.seconds is not None:
        argv.append(f"--seconds={float(settings.seconds):g}")
    for spec in settings.encoders:
        argv.append(f"--encoder={spec}")
    argv += [f"--seed={int(settings.seed)}", f"--device={settings.device}", f"--precision={settings.precision}",
             f"--max-pixels={int(max_pixels)}", "--format=png", "--quiet", f"--opt-out={settings.opt_out}"]
    if not settings.credentials:
        argv.append("--no-credentials")
    if models_dir is not None:
        argv.append(f"--models-dir={models_dir}")
    made = False
    if settings.target_image:
        argv.append(f"--target={settings.target_image}")
    elif settings.mode == "cloak" and settings.style.strip().lower() != BUILTIN_STYLE:
        argv.append(f"--style={settings.style.strip()}")
        made = True
    elif settings.mode == "poison":
        argv.append(f"--anchor={settings.anchor.strip()}")
        if settings.concept.strip():
            argv.append(f"--concept={settings.concept.strip()}")
        made = True
    elif settings.immunize != "away":
        argv.append(f"--pattern={settings.immunize}")
        made = True
    if made:
        if settings.target_model and settings.mode != "immunize":
            argv.append(f"--target-model={settings.target_model}")
        if settings.clip_model and settings.mode != "immunize":
            argv.append(f"--clip-model={settings.clip_model}")
        if target_cache is not None:
            argv.append(f"--target-cache={target_cache}")
    return argv


def command_line(argv: list[str]) -> str:
    """``fixative protect ...`` for display, with full paths: it runs as shown (the app's copies of the uploads
    and its output folder, which last while the app runs; put your own files' paths in their place to run it
    later). The app's target cache and ``--quiet`` are left out."""
    words = ["fixative", "protect"]
    for arg in argv:
        if arg.startswith("--target-cache=") or arg == "--quiet":
            continue
        words.append(arg)
    return shlex.join(words)
