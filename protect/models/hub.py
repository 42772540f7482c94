"""The Hugging Face hub's naming rules, in one place: what counts as a repo id, and how a hub error is told.

Used by the encoder specs (:mod:`fixative.models.encoders`), the target generators
(:mod:`fixative.targets.sources`), the CLIP model that ranks anchors and the model store.
"""

from __future__ import annotations

import re

#: a hub repo id: ``org/name`` (letters, digits, ``_``, ``.``, ``-``; the organisation starts with a letter or digit)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: file name endings of model weights: a spec ending so is a file, never a hub repo id
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")

_PATH_STARTS = ("/", "./", "../", "~", "\\")


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` is written as a path: it starts like one (``/``, ``./``, ``~``) or names a weights file."""
    return spec.startswith(_PATH_STARTS) or spec.lower().endswith(WEIGHT_SUFFIXES)


def is_hub_id(spec: str) -> bool:
    """True when ``spec`` is a hub repo id (``org/name``) and not written as a path."""
    return bool(HUB_ID.match(spec)) and not looks_like_path(spec)


def hub_error_detail(exc: BaseException) -> str:
    """One line for a failed hub call: the exception's type and the first line of its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
