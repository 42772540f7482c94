"""Protection modes and where their targets come from.

- ``cloak`` (style cloaking, Glaze-like) and ``poison`` (concept poisoning, Nightshade-like)
  move the encoders' view towards a target image: the user's ``--target IMAGE``, or a made one.
  A cloak given no target at all uses a target made by code (kind ``"code"``,
  :func:`fixative.targets.patterns.restyle`, :data:`~fixative.targets.patterns.DEFAULT_RESTYLE`): a second on any
  machine,
  no diffusion model.
- ``immunize`` (PhotoGuard/Mist-like) pushes the view away from the image's own encoding, or
  towards ``--target`` when one is given.

Made targets (a style re-render, a concept anchor, a fixed pattern) plug in here: a
:class:`TargetFactory` is a function ``(TargetRequest, LoadedImage, on_step=None) -> Target``; the
caller passes the factories it has to :func:`target_request` and :func:`make_target` by kind (there is
no registry: :func:`made_target_factories` wraps a :class:`fixative.targets.made.TargetMaker`). The batch
calls :func:`make_target` for each image and puts ``Target.recipe`` in the record and
:meth:`TargetRequest.describe` in the settings hash.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from fixative.defaults import DEFAULT_MODE
from fixative.errors import ConfigError
from fixative.options import Mode

if TYPE_CHECKING:
    from torch import Tensor

    from fixative.files.images import LoadedImage

#: called with (steps done, steps in all) after each denoising step of a made target's generation (the search's
#: own callback, :data:`fixative.core.optimizer.StepCallback`, takes a StepInfo)
TargetStepCallback = Callable[[int, int], None]

#: the modes (older callers import these names from here; the vocabulary is :class:`fixative.options.Mode`)
MODES = tuple(m.value for m in Mode)
__all__ = ["DEFAULT_MODE", "MODES", "Target", "TargetFactory", "TargetRequest", "made_target_factories",
           "make_target", "resolve_objective", "target_request"]


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


#: ``on_step(done, total)``: called after each denoising step of a generated target


class TargetFactory(Protocol):
    """Makes the target of one image for a request of its kind (``on_step``: see :func:`make_target`)."""

    def __call__(self, request: TargetRequest, image: LoadedImage,
                 on_step: TargetStepCallback | None = None) -> Target: ...


def resolve_objective(mode: str, objective: str | None, has_target: bool) -> str:
    """The engine objective for a mode: explicit ``objective`` wins; immunize is away without a target."""
    if mode not in MODES:
        raise ConfigError(f"unknown target.mode {mode!r}; choose one of {', '.join(MODES)}", field="target.mode")
    if objective is not None:
        return objective
    if mode == "immunize" and not has_target:
        return "away"
    return "target"


def target_request(mode: str, objective: str | None, image: Path | None, options: dict | None = None,
                   kinds: Collection[str] = ()) -> TargetRequest:
    """Build and check the request for a run (raises :class:`ConfigError` for impossible combinations).

    ``options``: a made target's options, with its ``kind``; ``kinds``: the kinds the caller has a
    :class:`TargetFactory` for (besides the built-in ones)."""
    options = dict(options or {})
    kind = options.pop("kind", None)
    obj = resolve_objective(mode, objective, image is not None or kind is not None)
    if obj == "away":
        return TargetRequest(mode, obj, "none", options=options)
    if kind is not None:
        if kind not in BUILTIN_FACTORIES and kind not in kinds:
            raise ConfigError(f"no target factory for {kind!r} is available", field="target")
        return TargetRequest(mode, obj, kind, image, options=options)
    if image is None and mode == "cloak":
        from fixative.targets.patterns import DEFAULT_RESTYLE

        return TargetRequest(mode, obj, "code", options={"name": DEFAULT_RESTYLE, **options})
    if image is None:
        hint = " or target.anchor (or target.objective away)" if mode == "poison" else ""
        raise ConfigError(f"target.mode {mode} needs a target: target.image{hint}", field="target.image")
    return TargetRequest(mode, obj, "image", image, options=options)


def _user_image(request: TargetRequest, image: LoadedImage) -> Target:
    from fixative.files.images import load_target

    assert request.image is not None
    tensor = load_target(request.image, image.size)
    return Target(tensor, {"kind": "image", "path": str(request.image.resolve()), "sha256": request.image_sha256})


def _code_target(request: TargetRequest, image: LoadedImage, on_step: TargetStepCallback | None = None) -> Target:
    """The target made by code for the image (:func:`fixative.targets.patterns.restyle`); no model, no file."""
    from fixative import __version__
    from fixative.targets.patterns import DEFAULT_RESTYLE, restyle

    name = request.options.get("name", DEFAULT_RESTYLE)
    return Target(restyle(image.rgb, name), {"kind": "code", "name": name,
                                             "made_by": "fixative.targets.patterns.restyle",
                                             "fixative": __version__, "model": None})


#: the factories every run has (a constant, never added to): the target made by code
BUILTIN_FACTORIES: Mapping[str, TargetFactory] = MappingProxyType({"code": _code_target})


def made_target_factories(maker: Any) -> dict[str, TargetFactory]:
    """The factories of the made kinds (``style``, ``anchor``, ``pattern``), made by ``maker`` (a
    :class:`fixative.targets.made.TargetMaker`: one for a run, so its generator loads once)."""
    from fixative.options import MadeKind
    from fixative.targets.patterns import PATTERNS

    def make(request: TargetRequest, loaded: LoadedImage, on_step: TargetStepCallback | None = None) -> Target:
        o = request.options
        made = maker.make(request.mode, loaded.rgb, style=o.get("style"), concept=o.get("concept"),
                          anchor=o.get("anchor"), pattern=o.get("pattern") or PATTERNS[0], on_step=on_step)
        return Target(made.image, made.recipe)

    return {kind.value: make for kind in MadeKind}


def make_target(request: TargetRequest, image: LoadedImage, on_step: TargetStepCallback | None = None,
                factories: Mapping[str, TargetFactory] | None = None) -> Target:
    """The target for ``image`` under ``request``: a tensor of the image's size and a recipe.

    ``on_step(done, total)``: called after each denoising step while a made target is generated; an
    exception it raises (a cancel) stops the generation and propagates. ``factories``: the made kinds'
    factories by kind (see :func:`made_target_factories`); the built-in ones need none.
    """
    if request.kind == "none":
        return Target(None, None)
    if request.kind == "image":
        return _user_image(request, image)
    factory = BUILTIN_FACTORIES.get(request.kind) or (factories or {}).get(request.kind)
    if factory is None:
        raise ConfigError(f"no target factory for {request.kind!r} is available", field="target")
    return factory(request, image, on_step=on_step)
