"""What the artist chose on the app's form (:class:`JobSettings`), and the typed
:class:`~fixative.options.ProtectOptions` it makes (:func:`job_options`): the form's strings become the
library's enums here, at the edge, and nowhere is a command line parsed. The equivalent ``fixative
protect`` command the app shows is the options' own :meth:`~fixative.options.ProtectOptions.to_command_line`
(:func:`command_line`). :func:`control_message` puts the app's control names in an options error.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from fixative.defaults import DEFAULT_ENCODER, DEFAULT_OPT_OUT
from fixative.errors import ConfigError
from fixative.files.images import MAX_PIXELS
from fixative.options import (
    COMMAND_LINE_FLAGS,
    Intensity,
    Mode,
    ModelOptions,
    OptOutLevel,
    OutputFormat,
    OutputOptions,
    Pattern,
    Precision,
    ProtectOptions,
    Quality,
    RobustLevel,
    SearchOptions,
    TargetSpec,
    coerce,
)

#: where an immunization's target comes from (besides the user's own image)
IMMUNIZE_TARGETS = ("away", *(pattern.value for pattern in Pattern))
#: the first encoders offered (any spec the command line takes works)
DEFAULT_ENCODERS = (DEFAULT_ENCODER,)
#: the style cloak's default: a target made by code on this computer (:func:`fixative.targets.patterns.restyle`; no
#: diffusion model, no download; ``fixative protect`` without --target or --style does the same)
BUILTIN_STYLE = "built-in"


@dataclass
class JobSettings:
    """What the artist chose, as the form gives it: strings are the options' values (:func:`job_options` turns
    them into the library's enums).

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
        for kind, value, what in ((Mode, self.mode, "mode"), (OptOutLevel, self.opt_out, "opt-out"),
                                  (Intensity, self.intensity, "intensity"), (Quality, self.quality, "quality")):
            if value not in _values(kind):
                out.append(f"unknown {what} {value!r}")
        from fixative.batch.platforms import platforms

        if self.posting != "off" and self.posting not in platforms():
            out.append(f"unknown platform {self.posting!r}")
        if not self.encoders:
            out.append("choose at least one encoder (Advanced options)")
        if self.target_image is None:
            if self.mode == Mode.POISON and not self.anchor.strip():
                out.append("concept poison needs an anchor: what the images should teach a model instead "
                           "(e.g. 'cat'), or your own target image")
            if self.mode == Mode.CLOAK and not self.style.strip():
                out.append(f"style cloak needs a style ('{BUILTIN_STYLE}' needs no download), or your own target "
                           "image")
            if self.mode == Mode.IMMUNIZE and self.immunize not in IMMUNIZE_TARGETS:
                out.append(f"unknown immunization target {self.immunize!r}")
        if self.steps is not None and self.steps < 1:
            out.append("steps must be at least 1")
        if self.seconds is not None and self.seconds <= 0:
            out.append("the time limit must be positive")
        return out


def _values(kind: type[StrEnum]) -> set[str]:
    return {member.value for member in kind}


def parse_encoders(text: str) -> list[str]:
    """Encoder specs from a text field: separated by commas or new lines, blanks dropped."""
    return [part.strip() for part in re.split(r"[,\n]", text or "") if part.strip()]


def job_options(settings: JobSettings, inputs: list[Path], out: Path, *, models_dir: Path | None = None,
                max_pixels: int = MAX_PIXELS, target_cache: Path | None = None) -> ProtectOptions:
    """The checked :class:`~fixative.options.ProtectOptions` that do what ``settings`` ask, for the images
    ``inputs``, written into ``out`` as PNG with their records (signed with the user's identity when
    ``settings.credentials``, and they have one).

    ``models_dir``: the app's models folder; ``max_pixels``: the app's pixel limit; ``target_cache``: where
    made targets are cached. Raises :class:`~fixative.errors.ConfigError` (its ``field``: the option's path,
    see :func:`control_message`).
    """
    from fixative.provenance.identity import find_identity

    off = settings.posting == "off"
    search = SearchOptions.from_presets(
        intensity=coerce(Intensity, settings.intensity, "search.intensity"),
        quality=coerce(Quality, settings.quality, "search.quality"),
        steps=None if settings.steps is None else int(settings.steps),
        seconds=None if settings.seconds is None else float(settings.seconds),
        robust=RobustLevel.OFF if off else RobustLevel.WEB, platform=None if off else settings.posting,
        seed=int(settings.seed), precision=coerce(Precision, settings.precision, "search.precision"))
    models = model_options(settings, models_dir)
    output = OutputOptions(out=out, format=OutputFormat.PNG, max_pixels=int(max_pixels),
                           opt_out=coerce(OptOutLevel, settings.opt_out, "output.opt_out"),
                           identity=find_identity() if settings.credentials else None)
    return ProtectOptions(inputs=tuple(str(p) for p in inputs), output=output, search=search, models=models,
                          target=target_spec(settings, target_cache), quiet=True).check()


def model_options(settings: JobSettings, models_dir: Path | None = None) -> ModelOptions:
    """The encoders and device ``settings`` chose, with the app's models folder (None: the store's order)."""
    return ModelOptions(encoders=tuple(settings.encoders), models_dir=models_dir, device=settings.device)


def target_spec(settings: JobSettings, cache: Path | None = None) -> TargetSpec:
    """Where each image's target comes from: the user's target image; else the mode's made target (a style
    other than :data:`BUILTIN_STYLE`, the poison's anchor, or an immunization pattern), cached in ``cache``,
    with the made-target models (not for patterns); else none (built-in style, or away from the image)."""
    mode = coerce(Mode, settings.mode, "target.mode")
    if settings.target_image:
        return TargetSpec(mode=mode, image=Path(settings.target_image))
    if mode is Mode.CLOAK and settings.style.strip().lower() != BUILTIN_STYLE:
        made: dict = {"style": settings.style.strip()}
    elif mode is Mode.POISON:
        made = {"anchor": settings.anchor.strip(), "concept": settings.concept.strip() or None}
    elif mode is Mode.IMMUNIZE and settings.immunize != "away":
        made = {"pattern": coerce(Pattern, settings.immunize, "target.pattern")}
    else:
        return TargetSpec(mode=mode)
    if mode is not Mode.IMMUNIZE:
        made.update(model=settings.target_model or None, clip_model=settings.clip_model or None)
    return TargetSpec(mode=mode, cache=cache, **made)


#: flags of ``fixative protect`` that take no value
_SWITCHES = {"--recursive", "--absolute-paths", "--no-credentials", "--quiet"}


def command_line(options: ProtectOptions) -> str:
    """``fixative protect ...`` for display, with full paths: it runs as shown (the app's copies of the uploads
    and its output folder, which last while the app runs; put your own files' paths in their place to run it
    later). The app's target cache and ``--quiet`` are left out. Values are attached with ``=`` so that text
    starting with ``-`` is never read as an option."""
    shown = replace(options, quiet=False, target=replace(options.target, cache=None))
    words = shown.to_command_line()
    flags = set(COMMAND_LINE_FLAGS.values()) | _SWITCHES
    joined: list[str] = []
    k = 0
    while k < len(words):
        word = words[k]
        if word.startswith("--") and word not in _SWITCHES and k + 1 < len(words) and words[k + 1] not in flags:
            joined.append(f"{word}={words[k + 1]}")
            k += 2
        else:
            joined.append(word)
            k += 1
    return shlex.join(joined)


#: the app's control for each option (ConfigError.field), as the artist sees it
CONTROLS = {
    "inputs": "Your images",
    "target.mode": "Protection", "target.style": "Style to cloak towards", "target.image": "your own target image",
    "target.anchor": "Anchor", "target.concept": "Concept your images show", "target.pattern": "Immunize",
    "target.model": "Target model (Advanced options)", "target.clip_model": "CLIP model (Advanced options)",
    "target.cache": "the made-target cache (fixative gui --target-cache)",
    "search.intensity": "Intensity", "search.like_jpeg": "Intensity", "search.quality": "Render quality",
    "search.steps": "Steps (Advanced options)", "search.seconds": "Time limit per image (Advanced options)",
    "search.seed": "Seed (Advanced options)", "search.precision": "Precision (Advanced options)",
    "search.platform": "Where will you post it?", "search.robust": "Where will you post it?",
    "models.encoders": "Encoders (Advanced options)", "models.device": "Device (Advanced options)",
    "models.models_dir": "the models folder (fixative gui --models-dir)",
    "output.opt_out": "Tell AI crawlers and trainers", "output.identity": "Add my Content Credentials",
    "output.max_pixels": "the pixel limit (fixative gui --max-pixels)",
}


def control_message(exc: ConfigError) -> str:
    """An options error in the app's words: each option path in the message (``search.steps``) replaced by its
    control ('Steps (Advanced options)'); led by the control that ``exc.field`` names when the message does
    not name it already."""
    text = str(exc)
    for path in sorted(CONTROLS, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.]){re.escape(path)}(?![\w])", f"'{CONTROLS[path]}'", text)
    label = CONTROLS.get(exc.field or "")
    return f"{label}: {text}" if label and f"'{label}'" not in text else text
