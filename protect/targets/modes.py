"""Protection modes and where their targets come from.

- ``cloak`` (style cloaking, Glaze-like) and ``poison`` (concept poisoning, Nightshade-like)
  move the encoders' view towards a target image: the user's ``--target IMAGE``, or a made one.
  A cloak given no target at all uses a target made by code (kind ``"code"``,
  :func:`fixative.targets.patterns.restyle`, :data:`~fixative.targets.patterns.DEFAULT_RESTYLE`): a second on any
  machine,
  no diffusion model.
- ``immunize`` (PhotoGuard/Mist-like) pushes the view away from the image's own encoding, or
  towards ``--target`` when one is given.

Made targets (a style re-render, a concept anchor, a fixed pattern) plug in here: a *target
maker* is a function ``(TargetRequest, LoadedImage) -> Target`` registered under a kind with
:func:`register_target_maker`; the batch calls :func:`make_target` for each image and puts
``Target.recipe`` in the record and :meth:`TargetRequest.describe` in the settings hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fixative.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from fixative.files.images import LoadedImage

MODES = ("cloak", "poison", "immunize")
DEFAULT_MODE = "cloak"


@dataclass(frozen=True)
class TargetRequest:
    """What target a run asks for.

    - ``kind``: ``"image"`` (the user's ``image``), ``"none"`` (objective away), or the kind of a
      registered maker (``"style"``, ``"concept"``, ...).
    - ``options``: the maker's options (prompt, anchor, model id, seed...), JSON-ready.
    - ``image_sha256``: the SHA-256 of ``image`` (filled by the batch, for the settings hash).
    """

    mode: str
    objective: str
    kind: str
    image: Path | None = None
    image_sha256: str | None = None
    options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-ready identity of the request (part of the settings hash)."""
        return {"mode": self.mode, "objective": self.objective, "kind": self.kind,
                "image_sha256": self.image_sha256, "options": self.options}


@dataclass
class Target:
    """A target tensor (1x3xHxW in [0,1], the image's size; None for objective away) and its recipe."""

    tensor: Tensor | None
    recipe: dict | None


#: ``maker(request, image, on_step=None)``; ``on_step(done, total)`` follows a generated target's denoising steps
TargetMaker = Callable[..., Target]
_MAKERS: dict[str, TargetMaker] = {}


def register_target_maker(kind: str, maker: TargetMaker) -> None:
    """Make ``kind`` available to :func:`make_target` (the made-targets code calls this)."""
    _MAKERS[kind] = maker


def resolve_objective(mode: str, objective: str | None, has_target: bool) -> str:
    """The engine objective for a mode: explicit ``objective`` wins; immunize is away without a target."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if objective is not None:
        return objective
    if mode == "immunize" and not has_target:
        return "away"
    return "target"


def target_request(mode: str, objective: str | None, image: Path | None, options: dict | None = None) -> TargetRequest:
    """Build and check the request for a run (raises :class:`ConfigError` for impossible combinations)."""
    options = dict(options or {})
    kind = options.pop("kind", None)
    obj = resolve_objective(mode, objective, image is not None or kind is not None)
    if obj == "away":
        return TargetRequest(mode, obj, "none", options=options)
    if kind is not None:
        if kind not in _MAKERS:
            raise ConfigError(f"no target maker for {kind!r} is available")
        return TargetRequest(mode, obj, kind, image, options=options)
    if image is None and mode == "cloak":
        from fixative.targets.patterns import DEFAULT_RESTYLE

        return TargetRequest(mode, obj, "code", options={"name": DEFAULT_RESTYLE, **options})
    if image is None:
        hint = " or --anchor WORD (or --objective away)" if mode == "poison" else ""
        raise ConfigError(f"--mode {mode} needs a target: --target IMAGE{hint}")
    return TargetRequest(mode, obj, "image", image, options=options)


def _user_image(request: TargetRequest, image: LoadedImage) -> Target:
    from fixative.files.images import load_target

    assert request.image is not None
    tensor = load_target(request.image, image.size)
    return Target(tensor, {"kind": "image", "path": str(request.image.resolve()), "sha256": request.image_sha256})


def _code_target(request: TargetRequest, image: LoadedImage, on_step=None) -> Target:
    """The target made by code for the image (:func:`fixative.targets.patterns.restyle`); no model, no file."""
    from fixative import __version__
    from fixative.targets.patterns import DEFAULT_RESTYLE, restyle

    name = request.options.get("name", DEFAULT_RESTYLE)
    return Target(restyle(image.rgb, name), {"kind": "code", "name": name,
                                             "made_by": "fixative.targets.patterns.restyle",
                                             "fixative": __version__, "model": None})


_MAKERS["code"] = _code_target


def make_target(request: TargetRequest, image: LoadedImage,
                on_step: Callable[[int, int], None] | None = None) -> Target:
    """The target for ``image`` under ``request``: a tensor of the image's size and a recipe.

    ``on_step(done, total)``: called after each denoising step while a made target is generated; an
    exception it raises (a cancel) stops the generation and propagates.
    """
    if request.kind == "none":
        return Target(None, None)
    if request.kind == "image":
        return _user_image(request, image)
    return _MAKERS[request.kind](request, image, on_step=on_step)
