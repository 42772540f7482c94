"""Exceptions with messages meant for people: each names the file or model and the problem."""

from __future__ import annotations

import re


class FixativeError(Exception):
    """Base class for errors that the CLI and GUI report as one clear line, without a traceback."""


class ModelNotFoundError(FixativeError):
    """A model (encoder, LPIPS backbone) could not be found in any place that was searched."""


class InputImageError(FixativeError):
    """An input image could not be read or is unusable (corrupt, unsupported, too large)."""


class ConfigError(FixativeError):
    """An option has a value that cannot work (unknown method, budget out of range, ...).

    ``field``: the option it is about, in the library's terms (a field of the typed options, such as
    ``"steps"`` or ``"target.model"``); the message speaks the same terms, and a front end (the command
    line, the GUI) names its own control for that field. None when it is about no one option.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OutputError(FixativeError):
    """An output (file or folder) cannot be written where it must go (a file in the way, no permission, disk full)."""


#: sentences of PyTorch's "Weights only load failed" message that advise loading the file unsafely
_UNSAFE_ADVICE = re.compile(r"weights_only|trusted source|torch\.load|pytorch\.org|Re-running", re.IGNORECASE)


def safe_load_message(exc: BaseException) -> str:
    """The reason a weights file was refused, without PyTorch's advice to retry with ``weights_only=False``
    (which would let the file run code). Other errors' text is returned unchanged."""
    text = str(exc)
    if "Weights only load failed" not in text:
        return text
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text.replace("Weights only load failed.", ""))
    kept = [s.strip() for s in sentences if s.strip() and not _UNSAFE_ADVICE.search(s)]
    return ("it holds objects other than plain tensors, which are never loaded (they could run code)"
            + (": " + " ".join(kept) if kept else ""))
