"""The typed options of a protection run: :class:`ProtectOptions` and the vocabularies it speaks.

A run is described once, by value, in the library's terms; the command line and the GUI each build a
:class:`ProtectOptions` directly, and the batch (:func:`fixative.batch.runner.run_batch`) takes it.

- Closed vocabularies are ``StrEnum``s (:class:`Mode`, :class:`Method`, :class:`Precision`, ...; defined
  in :mod:`fixative.vocabulary`, importable from here): their members are strings too
  (``Mode.CLOAK == "cloak"``), so records and hashes stay as they were.
- Defaults come from :mod:`fixative.defaults`; presets (``intensity``, ``quality``) are resolved into
  numbers by :meth:`SearchOptions.from_presets`.
- :meth:`ProtectOptions.check` validates everything that needs no file or model, once, raising
  :class:`~fixative.errors.ConfigError` whose ``field`` is the option's path here (``"search.steps"``,
  ``"target.model"``, ``"output.format"``); the message names options by the same paths, and a front end
  swaps them for its own controls (the command line through :data:`COMMAND_LINE_FLAGS`).
- :meth:`ProtectOptions.to_command_line` gives the equivalent ``fixative protect`` words.

Strings are accepted only at the edges: :func:`coerce` turns one into its enum (or a ConfigError naming
the field), and the dataclasses coerce their enum fields when built from strings.

Importing this module imports no torch, numpy or model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from fixative import defaults as d
from fixative.errors import ConfigError
from fixative.vocabulary import (
    Intensity,
    LpipsNet,
    MadeKind,
    Method,
    Mode,
    Objective,
    OptOutLevel,
    OutputFormat,
    Pattern,
    Precision,
    Quality,
    RobustLevel,
    Views,
    coerce,
)

__all__ = [
    "COMMAND_LINE_FLAGS", "NO_LIMIT", "Intensity", "LpipsNet", "MadeKind", "Method", "Mode", "ModelOptions",
    "Objective", "OptOutLevel", "OutputFormat", "OutputOptions", "Pattern", "Precision", "ProtectOptions",
    "Quality", "RobustLevel", "SearchOptions", "TargetSpec", "Views", "coerce",
]


def _coerce_fields(obj: Any, prefix: str, enums: dict[str, type[StrEnum]]) -> None:
    """Turn the string values of ``obj``'s enum fields into members (frozen-safe)."""
    for name, kind in enums.items():
        value = getattr(obj, name)
        if value is not None and not isinstance(value, kind):
            object.__setattr__(obj, name, coerce(kind, value, f"{prefix}.{name}"))


@dataclass(frozen=True)
class SearchOptions:
    """How the perturbation is searched for, and within which budget.

    - ``steps`` (>= 1) and ``seconds`` (> 0, None = no time limit): per image, whichever ends first.
    - ``budget``: an LPIPS budget in (0, 1); None = the visibility budget: no more visible than the
      image's own JPEG at quality ``like_jpeg`` (1-99), by FLIP.
    - ``linf``: an optional per-pixel cap in (0, 1] ([0,1] pixel units).
    - ``robust``/``platform``: the re-encodings survived (``platform``: a name of
      :mod:`fixative.batch.platforms`; None with ``web`` = the generic one).
    - ``views``: training views or the image at its own size.
    - ``tile_size`` (pixels, >= :data:`~fixative.defaults.MIN_TILE_SIZE`): larger images are tiled;
      ``tile_batch`` (>= 1): tiles per pass, None = automatic.
    """

    steps: int = d.DEFAULT_STEPS
    seconds: float | None = d.DEFAULT_SECONDS
    method: Method = Method(d.DEFAULT_METHOD)
    precision: Precision = Precision(d.DEFAULT_PRECISION)
    seed: int = d.DEFAULT_SEED
    budget: float | None = None
    like_jpeg: int = d.DEFAULT_LIKE_JPEG
    linf: float | None = None
    robust: RobustLevel = RobustLevel(d.DEFAULT_ROBUST)
    platform: str | None = None
    views: Views = Views(d.DEFAULT_VIEWS)
    tile_size: int = d.DEFAULT_TILE_SIZE
    tile_batch: int | None = None

    def __post_init__(self) -> None:
        _coerce_fields(self, "search", {"method": Method, "precision": Precision, "robust": RobustLevel,
                                        "views": Views})

    @classmethod
    def from_presets(cls, *, intensity: Intensity | str | None = None, quality: Quality | str | None = None,
                     steps: int | None = None, seconds: float | None = None, like_jpeg: int | None = None,
                     robust: RobustLevel | str | None = None, **rest: Any) -> SearchOptions:
        """Options from the artist-facing presets (:mod:`fixative.presets`); each explicit value wins over
        its preset's (``seconds``: pass :data:`NO_LIMIT` for no time limit)."""
        from fixative.presets import effort_for, like_jpeg_for, robust_for_quality

        intensity = None if intensity is None else coerce(Intensity, intensity, "search.intensity")
        quality = None if quality is None else coerce(Quality, quality, "search.quality")
        steps, limit = effort_for(quality, steps, seconds)
        return cls(steps=steps, seconds=None if limit == NO_LIMIT else limit,
                   like_jpeg=like_jpeg_for(intensity, like_jpeg),
                   robust=robust_for_quality(quality, robust, d.DEFAULT_ROBUST), **rest)

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        _at_least("search.steps", self.steps, 1)
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"search.seconds must be positive, got {self.seconds}", field="search.seconds")
        if self.budget is not None and not 0 < self.budget < 1:
            raise ConfigError(f"search.budget (LPIPS) must be between 0 and 1 (exclusive), got {self.budget}",
                              field="search.budget")
        if self.budget is None and not (isinstance(self.like_jpeg, int) and 1 <= self.like_jpeg <= 99):
            raise ConfigError(f"search.like_jpeg must be a whole number from 1 to 99, got {self.like_jpeg!r}",
                              field="search.like_jpeg")
        if self.linf is not None and not 0 < self.linf <= 1:
            raise ConfigError(f"search.linf must be in (0, 1], got {self.linf}", field="search.linf")
        _at_least("search.tile_size", self.tile_size, d.MIN_TILE_SIZE, " pixels")
        if self.tile_batch is not None:
            _at_least("search.tile_batch", self.tile_batch, 1)
        if self.platform is not None:
            from fixative.batch.platforms import get_platform, robust_for

            robust_for(get_platform(self.platform), None, self.robust)

    def budget_limit(self):
        """The typed budget: :class:`~fixative.core.budgets.LpipsLimit` when ``budget`` is given, else the
        :class:`~fixative.core.budgets.VisibilityLimit` of ``like_jpeg``."""
        from fixative.core.budgets import LpipsLimit, VisibilityLimit

        return LpipsLimit(self.budget) if self.budget is not None else VisibilityLimit(like_jpeg=self.like_jpeg)


#: ``SearchOptions.from_presets(seconds=NO_LIMIT)``: no time limit (None there means "the preset's")
NO_LIMIT = float("inf")


@dataclass(frozen=True)
class ModelOptions:
    """Which models: ``encoders`` crafted against (specs: "taef2", "sd15", a folder, a file, a hub id),
    ``check_encoders`` only measured on, the LPIPS backbone, the ``models_dir`` searched first (None: the
    store's default order) and the ``device`` ("auto", "cpu", "cuda", "cuda:1", "mps")."""

    encoders: tuple[str, ...] = (d.DEFAULT_ENCODER,)
    check_encoders: tuple[str, ...] = ()
    lpips_net: LpipsNet = LpipsNet(d.DEFAULT_LPIPS_NET)
    models_dir: Path | None = None
    device: str = d.DEFAULT_DEVICE

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoders", tuple(self.encoders))
        object.__setattr__(self, "check_encoders", tuple(self.check_encoders))
        _coerce_fields(self, "models", {"lpips_net": LpipsNet})

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        if not self.encoders:
            raise ConfigError("models.encoders names no encoder", field="models.encoders")
        if not all(isinstance(spec, str) and spec for spec in (*self.encoders, *self.check_encoders)):
            raise ConfigError("models.encoders and models.check_encoders must be non-empty names",
                              field="models.encoders")

    def spec(self, device: str | None = None):
        """The frozen :class:`~fixative.models.loading.ModelSpec` of these models (``device`` overrides)."""
        from fixative.models.loading import ModelSpec

        return ModelSpec.of(self.encoders, lpips_net=self.lpips_net.value, models_dir=self.models_dir,
                            device=device or self.device, check_encoders=self.check_encoders)


@dataclass(frozen=True)
class TargetSpec:
    """Where the target of each image comes from.

    - ``mode``; ``objective`` overrides the mode's (None: towards the target; immunize without one: away).
    - ``image``: a target image (resized to each input's size), or
    - a made target, one of: ``style`` (mode cloak: a style name, any description, or "auto"),
      ``anchor`` (mode poison, with the ``concept`` the images show), ``pattern`` (mode immunize);
      ``model``: the diffusers pipeline making them (hub id, folder, file, sd15/sd21/sdxl), ``cache``:
      where they are cached, ``clip_model``: the CLIP model ranking candidates (an id, a folder, "none").
    - Neither: a cloak uses a target made by code; immunize moves away from the image.
    - ``maker``: a :class:`fixative.targets.made.TargetMaker` to reuse for made targets (an app keeps one
      so the generator loads once); not part of the options' value.
    """

    mode: Mode = Mode(d.DEFAULT_MODE)
    objective: Objective | None = None
    image: Path | None = None
    style: str | None = None
    anchor: str | None = None
    concept: str | None = None
    pattern: Pattern | None = None
    model: str | None = None
    cache: Path | None = None
    clip_model: str | None = None
    maker: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _coerce_fields(self, "target", {"mode": Mode, "objective": Objective, "pattern": Pattern})

    @property
    def made(self) -> MadeKind | None:
        """The kind of made target asked for, or None (checked by :meth:`check`)."""
        if self.style is not None:
            return MadeKind.STYLE
        if self.anchor is not None or self.concept is not None:
            return MadeKind.ANCHOR
        return MadeKind.PATTERN if self.pattern is not None else None

    def check(self) -> None:
        """Raise :class:`ConfigError` for an impossible combination."""
        asked = [name for name, on in (("target.style", self.style is not None),
                                       ("target.anchor", self.anchor is not None or self.concept is not None),
                                       ("target.pattern", self.pattern is not None)) if on]
        if len(asked) > 1:
            raise ConfigError("target.style, target.anchor/target.concept and target.pattern are for different "
                              "modes; give one of them", field=asked[1])
        extras = [f"target.{name}" for name in ("model", "cache", "clip_model") if getattr(self, name) is not None]
        if not asked:
            if extras:
                raise ConfigError(f"{extras[0]} is for made targets: add target.style (cloak), target.anchor "
                                  "(poison) or target.pattern", field=extras[0])
            self._check_plain()
            return
        kind = self.made
        name = f"target.{kind.value}"
        need = {MadeKind.STYLE: Mode.CLOAK, MadeKind.ANCHOR: Mode.POISON, MadeKind.PATTERN: Mode.IMMUNIZE}[kind]
        if self.mode != need:
            raise ConfigError(f"{name} makes a target for target.mode {need}, not target.mode {self.mode}",
                              field=name)
        if self.image is not None:
            raise ConfigError(f"give either target.image or {name}, not both", field=name)
        if kind is MadeKind.ANCHOR and not self.anchor:
            raise ConfigError("target.concept needs target.anchor: the concept the images should teach instead",
                              field="target.concept")
        if kind is MadeKind.PATTERN and (self.model or self.clip_model):
            raise ConfigError("target.pattern is made by code: target.model and target.clip_model do not apply",
                              field="target.pattern")

    def _check_plain(self) -> None:
        """A target image or none: the mode must manage with what is given."""
        if self.image is not None or self.objective is Objective.AWAY:
            return
        if self.mode is Mode.POISON:
            raise ConfigError("target.mode poison needs a target: target.image or target.anchor (or "
                              "target.objective away)", field="target.image")
        if self.mode is Mode.IMMUNIZE and self.objective is Objective.TARGET:
            raise ConfigError("target.mode immunize towards a target needs target.image or target.pattern",
                              field="target.image")


@dataclass(frozen=True)
class OutputOptions:
    """Where and how results are written, and which inputs are taken.

    - ``out``: the output folder (created if missing); ``format`` and ``jpeg_quality`` (1-100, JPEG only).
    - ``max_pixels`` (>= 1): images with more pixels are refused before decoding.
    - ``recursive``: take images from subfolders of input folders; ``shard``: (i, n), 1 <= i <= n: do
      only the i-th of n shares.
    - ``absolute_paths``: records name files by absolute path (default: relative to the record).
    - ``opt_out``: the "do not train" statement; ``identity``: a
      :class:`fixative.provenance.identity.Identity` signing every output, None = unsigned.
    """

    out: Path
    format: OutputFormat = OutputFormat(d.DEFAULT_FORMAT)
    jpeg_quality: int = d.DEFAULT_JPEG_QUALITY
    max_pixels: int = d.MAX_PIXELS
    recursive: bool = False
    shard: tuple[int, int] | None = None
    absolute_paths: bool = False
    opt_out: OptOutLevel = OptOutLevel(d.DEFAULT_OPT_OUT)
    identity: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        _coerce_fields(self, "output", {"format": OutputFormat, "opt_out": OptOutLevel})

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        if not (isinstance(self.jpeg_quality, int) and 1 <= self.jpeg_quality <= 100):
            raise ConfigError(f"output.jpeg_quality must be a whole number from 1 to 100, got {self.jpeg_quality!r}",
                              field="output.jpeg_quality")
        _at_least("output.max_pixels", self.max_pixels, 1)
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 1 <= index <= count:
                raise ConfigError(f"output.shard {index}/{count}: the share must be between 1 and the count",
                                  field="output.shard")


@dataclass(frozen=True)
class ProtectOptions:
    """Everything a protection run needs: the ``inputs`` (files, folders, glob patterns), the
    ``output`` settings, the ``search`` settings, the ``models`` and the ``target`` specification;
    ``quiet``: no progress bars."""

    inputs: tuple[str, ...]
    output: OutputOptions
    search: SearchOptions = field(default_factory=SearchOptions)
    models: ModelOptions = field(default_factory=ModelOptions)
    target: TargetSpec = field(default_factory=TargetSpec)
    quiet: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))

    @property
    def out(self) -> Path:
        """The output folder (``output.out``)."""
        return self.output.out

    def check(self) -> ProtectOptions:
        """Validate every option that needs no file or model, once; returns the options. Raises
        :class:`ConfigError` (its ``field``: the option's path, as ``"search.steps"``)."""
        if not self.inputs:
            raise ConfigError("inputs names no image, folder or pattern", field="inputs")
        for part in (self.search, self.models, self.target, self.output):
            part.check()
        return self

    def to_command_line(self) -> list[str]:
        """The equivalent ``fixative protect`` command line, as words (``["fixative", "protect", ...]``).

        Only values that differ from the command line's defaults are written; presets appear resolved
        (``--steps``, ``--seconds``, ``--like-jpeg``). A reused ``target.maker`` has no words (it only saves
        loading time)."""
        words = ["fixative", "protect", *self.inputs]
        for part, prefix in ((self.output, "output"), (self.search, "search"), (self.models, "models"),
                             (self.target, "target")):
            words += _part_words(part, prefix)
        if self.quiet:
            words.append("--quiet")
        return words


def _at_least(name: str, value: Any, minimum: int, unit: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}{unit}, got {value!r}", field=name)


#: each option's ``fixative protect`` flag, by the option's path (the one table of the command line's names)
COMMAND_LINE_FLAGS: dict[str, str] = {
    "inputs": "INPUT",
    "output.out": "--out", "output.format": "--format", "output.jpeg_quality": "--jpeg-quality",
    "output.max_pixels": "--max-pixels", "output.recursive": "--recursive", "output.shard": "--shard",
    "output.absolute_paths": "--absolute-paths", "output.opt_out": "--opt-out", "output.identity": "--identity",
    "search.steps": "--steps", "search.seconds": "--seconds", "search.method": "--method",
    "search.precision": "--precision", "search.seed": "--seed", "search.budget": "--budget",
    "search.like_jpeg": "--like-jpeg", "search.linf": "--linf", "search.robust": "--robust",
    "search.platform": "--for", "search.views": "--views", "search.tile_size": "--tile-size",
    "search.tile_batch": "--tile-batch", "search.intensity": "--intensity", "search.quality": "--quality",
    "models.encoders": "--encoder", "models.check_encoders": "--check-encoder", "models.lpips_net": "--lpips-net",
    "models.models_dir": "--models-dir", "models.device": "--device",
    "target.mode": "--mode", "target.objective": "--objective", "target.image": "--target",
    "target.style": "--style", "target.anchor": "--anchor", "target.concept": "--concept",
    "target.pattern": "--pattern", "target.model": "--target-model", "target.cache": "--target-cache",
    "target.clip_model": "--clip-model",
}


def _part_words(part: Any, prefix: str) -> list[str]:
    """The flags of one part of the options whose values differ from the command line's defaults."""
    words: list[str] = []
    plain = type(part)(**({"out": part.out} if prefix == "output" else {}))
    for f in fields(part):
        value, flag = getattr(part, f.name), COMMAND_LINE_FLAGS.get(f"{prefix}.{f.name}")
        if flag is None or (f.name == "like_jpeg" and part.budget is not None):
            continue
        if f.name == "identity":
            words += ["--no-credentials"] if value is None else [flag, str(value.source)]
        elif f.name != "out" and value == getattr(plain, f.name):
            continue
        elif isinstance(value, bool):
            words.append(flag)
        elif f.name in ("encoders", "check_encoders"):
            words += [w for spec in value for w in (flag, spec)]
        elif f.name == "shard":
            words += [flag, f"{value[0]}/{value[1]}"]
        else:
            words += [flag, "none" if value is None else str(value)]
    return words
