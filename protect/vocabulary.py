"""The closed vocabularies of the options (``StrEnum``s: each member is its string too, so
``Mode.CLOAK == "cloak"`` and records and hashes read as before), and :func:`coerce`, the one place a
string from a command line or a form becomes a member. Imports nothing heavy; re-exported by
:mod:`fixative.options`."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from fixative import defaults as d
from fixative.errors import ConfigError


class Mode(StrEnum):
    """What the protection does: a style cloak, a concept poison, or immunization against edits."""

    CLOAK = "cloak"
    POISON = "poison"
    IMMUNIZE = "immunize"


class Objective(StrEnum):
    """Towards the target's encoding, or away from the image's own."""

    TARGET = "target"
    AWAY = "away"


class Method(StrEnum):
    """The search method (:mod:`fixative.core.optimizer`)."""

    FIXATIVE = "fixative"
    GLAZE = "glaze"
    PGD = "pgd"


class Precision(StrEnum):
    """Compute precision."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class RobustLevel(StrEnum):
    """How much re-encoding the protection survives (:mod:`fixative.core.robust`)."""

    OFF = "off"
    WEB = "web"
    STRONG = "strong"


class Views(StrEnum):
    """Protect what a trainer's resized views show (``train``), or the image at its own size only."""

    TRAIN = "train"
    OFF = "off"


class OutputFormat(StrEnum):
    """The saved file's format."""

    PNG = "png"
    WEBP = "webp"
    TIFF = "tiff"
    JPEG = "jpeg"

    @property
    def suffix(self) -> str:
        """The file suffix (``.png``, ``.webp``, ``.tif``, ``.jpg``)."""
        return d.OUTPUT_FORMATS[self.value]


class Intensity(StrEnum):
    """How visible the protection may be (:data:`fixative.presets.INTENSITIES`)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Quality(StrEnum):
    """The search effort preset (:data:`fixative.presets.QUALITIES`)."""

    PREVIEW = "preview"
    FAST = "fast"
    STANDARD = "standard"
    BEST = "best"


class LpipsNet(StrEnum):
    """The LPIPS backbone."""

    ALEX = "alex"
    VGG = "vgg"


class OptOutLevel(StrEnum):
    """The "do not train" statement written into every output (:mod:`fixative.provenance.optout`)."""

    AI_TRAINING = "ai-training"
    GEN_AI = "gen-ai"
    ALL = "all"
    NONE = "none"


class Pattern(StrEnum):
    """A built-in immunization pattern (:mod:`fixative.targets.patterns`)."""

    TEXTURE = "texture"
    GRAY = "gray"


class MadeKind(StrEnum):
    """The kind of a target made for each image (instead of a target image)."""

    STYLE = "style"
    ANCHOR = "anchor"
    PATTERN = "pattern"


E = TypeVar("E", bound=StrEnum)


def coerce(kind: type[E], value: str | E, field_name: str) -> E:
    """``value`` as a member of the enum ``kind``; a :class:`ConfigError` about ``field_name`` otherwise."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ConfigError(f"unknown {field_name} {value!r}; choose one of {choices}", field=field_name) from None
