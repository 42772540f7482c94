"""Loading a ready :class:`~fixative.core.engine.Protector` from model specs, and one cache of them.

A :class:`ModelSpec` names what to load (encoder specs, LPIPS net, models folder, device); it is frozen,
so it keys :class:`ProtectorCache`, the one cache that the batch runner, the timing probe and the desktop
app share: the same models load once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fixative.defaults import DEFAULT_ENCODER, DEFAULT_LPIPS_NET

if TYPE_CHECKING:
    from fixative.core.engine import Protector


@dataclass(frozen=True)
class ModelSpec:
    """What a protector is made of: ``encoders`` to craft against (specs: "taef2", "sd15", a path, a hub
    id), ``check_encoders`` only measured on, the LPIPS ``lpips_net`` ("alex" or "vgg"), the
    ``models_dir`` searched first (None: the store's default order) and the ``device`` ("auto", "cpu",
    "cuda", "cuda:1", "mps")."""

    encoders: tuple[str, ...] = (DEFAULT_ENCODER,)
    lpips_net: str = DEFAULT_LPIPS_NET
    models_dir: str | None = None
    device: str = "auto"
    check_encoders: tuple[str, ...] = ()

    @classmethod
    def of(cls, encoders: Sequence[str], *, lpips_net: str = DEFAULT_LPIPS_NET, models_dir: str | None = None,
           device: str = "auto", check_encoders: Sequence[str] = ()) -> ModelSpec:
        """A spec from any sequences (lists from a command line or a form)."""
        return cls(tuple(encoders), lpips_net, None if models_dir is None else str(models_dir), device,
                   tuple(check_encoders))


def load_protector(encoders: Sequence[str] | ModelSpec, *, lpips_net: str = DEFAULT_LPIPS_NET,
                   models_dir: str | None = None, device: str = "auto",
                   check_encoders: Sequence[str] = ()) -> Protector:
    """Load encoders and LPIPS from the model store (explicit path > models_dir > env > checkout > hub)
    and put them on one device, as a :class:`~fixative.core.engine.Protector`.

    ``encoders`` is a :class:`ModelSpec` or the encoder specs (then the keywords give the rest);
    ``check_encoders``: specs of encoders to measure the result on without crafting against them.
    """
    from fixative.core.devices import resolve_device
    from fixative.core.engine import Protector
    from fixative.models.encoders import load_encoders
    from fixative.models.perceptual import load_perceptual
    from fixative.models.store import ModelStore

    spec = encoders if isinstance(encoders, ModelSpec) else ModelSpec.of(
        encoders, lpips_net=lpips_net, models_dir=models_dir, device=device, check_encoders=check_encoders)
    dev = resolve_device(spec.device)
    store = ModelStore(spec.models_dir)
    loaded = load_encoders(list(spec.encoders), store=store, device=dev)
    checks = load_encoders(list(spec.check_encoders), store=store, device=dev) if spec.check_encoders else []
    return Protector(loaded, load_perceptual(spec.lpips_net, store=store, device=dev), dev, checks)


class ProtectorCache:
    """Loaded protectors by :class:`ModelSpec`, at most ``size`` of them (the least recently used goes).

    ``get(spec)`` loads on the first call and returns the same object afterwards.
    """

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"a protector cache holds at least 1 protector, got size={size}")
        self.size = size
        self._items: dict[ModelSpec, Protector] = {}

    def get(self, spec: ModelSpec) -> Protector:
        if spec in self._items:
            self._items[spec] = self._items.pop(spec)  # most recently used last
        else:
            while len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[spec] = load_protector(spec)
        return self._items[spec]

    def __contains__(self, spec: object) -> bool:
        return spec in self._items

    def clear(self) -> None:
        self._items.clear()
