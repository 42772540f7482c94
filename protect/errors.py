"""Exceptions with messages meant for people: each names the file or model and the problem."""

from __future__ import annotations


class FixativeError(Exception):
    """Base class for errors that the CLI and GUI report as one clear line, without a traceback."""


class ModelNotFoundError(FixativeError):
    """A model (encoder, LPIPS backbone) could not be found in any place that was searched."""


class InputImageError(FixativeError):
    """An input image could not be read or is unusable (corrupt, unsupported, too large)."""


class ConfigError(FixativeError):
    """An option has a value that cannot work (unknown method, budget out of range, ...)."""


class OutputError(FixativeError):
    """An output (file or folder) cannot be written where it must go (a file in the way, no permission, disk full)."""
