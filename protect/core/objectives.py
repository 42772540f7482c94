"""Objectives: what the perturbation should do to the encoders' view of the image.

An objective is separate from the constraints that keep the change imperceptible
(:mod:`fixative.core.constraints`). Every objective is a loss to *minimise*, computed from the
latents of the perturbed image under each encoder of an ensemble. Each encoder's term is
normalised by its own value at the start, so every latent space weighs the same whatever its
size or scale (no latent space dominates).

- :class:`TowardsTarget` (style cloak, concept poison, immunize towards a fixed pattern):
  ``sum_k w_k * ||E_k(x') - E_k(t)||^2 / ||E_k(x) - E_k(t)||^2`` (weights summing to 1); 1 at the
  start, 0 when the encoders see the target.
- :class:`AwayFromSource` (immunize by pushing the latent away from the image's own):
  ``-sum_k w_k * ||E_k(x') - E_k(x)||^2 / ||E_k(x)||^2``.

A batch of images (the tiles of a large image, batched on a GPU) is a batch of independent
problems: :meth:`Objective.per_sample` gives one loss per image, and :meth:`Objective.loss` their sum.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from fixative.core.encoder import Encoder


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Sum of squared differences over each sample's latent elements (float32), shape [N]."""
    return ((a.float() - b.float()) ** 2).flatten(1).sum(1)


class Objective(ABC):
    """The contract of an objective: prepared once per image (constant latents cached, :meth:`prepare`), then
    evaluated each step (:meth:`per_sample`, :meth:`loss`); :meth:`distances` and :meth:`baselines` report
    what it moves. Subclasses implement :meth:`prepare`, :meth:`per_sample`, :meth:`distances` and
    :meth:`baselines`."""

    kind: str = "objective"

    def __init__(self, weights: Sequence[float] | None = None):
        self.weights = list(weights) if weights is not None else None
        self.encoders: list[Encoder] = []

    def _weights(self) -> list[float]:
        w = self.weights or [1.0] * len(self.encoders)
        if len(w) != len(self.encoders):
            raise ValueError(f"{len(w)} weights for {len(self.encoders)} encoders")
        total = sum(w)
        return [v / total for v in w]

    @abstractmethod
    def prepare(self, encoders: Sequence[Encoder], source: Tensor, target: Tensor | None) -> None:
        """Cache whatever is constant across steps for this image (and target), in inference mode."""

    #: the image the objective compares with (the target, or the source for "away"); robust
    #: protection shifts it with the protected image (see :mod:`fixative.core.robust`)
    reference_image: Tensor | None = None

    def bind(self, encoders: Sequence[Encoder]) -> None:
        """Use these encoders without preparing any latent: for callers that pass ``references`` and
        ``starts`` to :meth:`per_sample` themselves (training views, see :mod:`fixative.core.views`)."""
        self.encoders = list(encoders)

    @abstractmethod
    def per_sample(self, latents: Sequence[Tensor], references: Sequence[Tensor] | None = None,
                   starts: Sequence[Tensor] | None = None) -> Tensor:
        """The loss of each image of the batch (shape [N]), from its latent under each encoder.

        A batch holds independent images (or tiles): each one's term depends only on its own latents,
        so the gradient of :meth:`loss` for one image does not depend on the others.
        ``references``: per encoder, the latent to compare with in place of the prepared one
        (that of :attr:`reference_image` after the same geometric change as the image's);
        ``starts``: per encoder, the normaliser in place of the prepared one (shape [N]).
        """

    def loss(self, latents: Sequence[Tensor], references: Sequence[Tensor] | None = None) -> Tensor:
        """Scalar to minimise: the sum of :meth:`per_sample` over the batch."""
        return self.per_sample(latents, references).sum()

    @abstractmethod
    def distances(self, latents: Sequence[Tensor]) -> list[float]:
        """The per-encoder distance that this objective moves (to the target, or from the source)."""

    @abstractmethod
    def baselines(self) -> list[float]:
        """The same distances for the unperturbed image."""


class TowardsTarget(Objective):
    """Pull each encoder's latent of the image towards that of the target image."""

    kind = "towards-target"

    def prepare(self, encoders: Sequence[Encoder], source: Tensor, target: Tensor | None) -> None:
        if target is None:
            raise ValueError("a target image is needed to move the latent towards it")
        if target.shape != source.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != image shape {tuple(source.shape)}")
        self.bind(encoders)
        with torch.no_grad():
            self.reference_image = target
            self.target_latents = [e(target).float() for e in self.encoders]
            src = [e(source).float() for e in self.encoders]
            self.start = [_sq_dist(s, t).clamp_min(1e-12) for s, t in zip(src, self.target_latents, strict=True)]

    def per_sample(self, latents: Sequence[Tensor], references: Sequence[Tensor] | None = None,
                   starts: Sequence[Tensor] | None = None) -> Tensor:
        refs = self.target_latents if references is None else references
        terms = [w * _sq_dist(z, t) / s for w, z, t, s in
                 zip(self._weights(), latents, refs, self.start if starts is None else starts, strict=True)]
        return torch.stack(terms).sum(0)

    def distances(self, latents: Sequence[Tensor]) -> list[float]:
        return [float(_sq_dist(z, t).sum().sqrt()) for z, t in zip(latents, self.target_latents, strict=True)]

    def baselines(self) -> list[float]:
        return [float(s.sum().sqrt()) for s in self.start]


class AwayFromSource(Objective):
    """Push each encoder's latent away from that of the unperturbed image (immunize)."""

    kind = "away-from-source"

    def prepare(self, encoders: Sequence[Encoder], source: Tensor, target: Tensor | None = None) -> None:
        self.bind(encoders)
        with torch.no_grad():
            self.reference_image = source
            self.source_latents = [e(source).float() for e in self.encoders]
            self.scale = [(z**2).flatten(1).sum(1).clamp_min(1e-12) for z in self.source_latents]

    def per_sample(self, latents: Sequence[Tensor], references: Sequence[Tensor] | None = None,
                   starts: Sequence[Tensor] | None = None) -> Tensor:
        refs = self.source_latents if references is None else references
        terms = [-w * _sq_dist(z, s) / n for w, z, s, n in
                 zip(self._weights(), latents, refs, self.scale if starts is None else starts, strict=True)]
        return torch.stack(terms).sum(0)

    def distances(self, latents: Sequence[Tensor]) -> list[float]:
        return [float(_sq_dist(z, s).sum().sqrt()) for z, s in zip(latents, self.source_latents, strict=True)]

    def baselines(self) -> list[float]:
        return [0.0 for _ in self.source_latents]
