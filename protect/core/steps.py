"""The optimisation methods of the search, one step class each (the shape of MadryLab/robustness's
``attack_steps.py``): where a search starts, how the loss is made of the objective and LPIPS, the update
rule with its schedule, the projection onto the constraints, and which iterate is the result.

- :class:`FixativeStep` (``fixative``, the default): Adam with a cosine learning rate, an adaptive LPIPS
  multiplier and a projection onto the LPIPS limit after every step; keeps the best feasible iterate.
- :class:`GlazeStep` (``glaze``): the Glaze paper's fixed penalty, Adam at lr 0.005.
- :class:`PgdStep` (``pgd``): the Nightshade research release's L-inf sign-gradient PGD.

:data:`METHOD_STEPS` maps each name of :data:`fixative.core.optimizer.METHODS` to its class; the search picks one
once and its loop has no method branches.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from fixative.core.constraints import LpipsBudget
    from fixative.core.optimizer import OptimizerSettings
    from fixative.core.problem import SearchProblem

log = logging.getLogger(__name__)

PGD_EPS = 0.04
GLAZE_ALPHA = 100.0
#: the LPIPS multiplier of the fixative method: x MU_UP after a step that left the budget (at least
#: MU_FLOOR), x MU_DOWN after one that stayed inside
MU_UP, MU_DOWN, MU_FLOOR = 1.15, 0.9, 0.05


def _cosine(progress: float, start: float, end: float) -> float:
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, progress)))


def random_start(source: Tensor, seed: int) -> Tensor:
    """Uniform noise of +-1/255; every image of a batch starts from the noise it would get alone (same seed)."""
    noise = torch.cat([
        (torch.rand((1, *source.shape[1:]), generator=torch.Generator().manual_seed(seed)) * 2 - 1) / 255
        for _ in range(source.shape[0])
    ])
    return noise.to(source.device, source.dtype)


class MethodStep(ABC):
    """One optimisation method. The search calls, per step: :meth:`schedule` (before the forward),
    :meth:`loss` (on the forward's objective and LPIPS, shapes [N]), then :meth:`step` (after the backward,
    without gradients: the update and the projection onto the constraints); :meth:`converged` may end the
    search early, and :meth:`result` gives the perturbation it returns.

    ``sampled``: the objective is a random sample (robust chains, training views). ``calibrate``: delta ->
    the budget's measure of the saved file (see :func:`fixative.core.optimizer.search`).
    """

    #: whether the loss needs LPIPS of the iterate
    uses_lpips = True

    def __init__(self, problem: SearchProblem, budget: LpipsBudget, settings: OptimizerSettings, sampled: bool,
                 calibrate: Callable[[Tensor], float] | None = None):
        self.problem, self.budget, self.settings, self.sampled = problem, budget, settings, sampled
        self.calibrate = calibrate
        self.best = torch.full((problem.source.shape[0],), math.inf)

    def start(self) -> Tensor:
        """The first iterate (requires grad)."""
        return random_start(self.problem.source, self.settings.seed).requires_grad_(True)

    def schedule(self, delta: Tensor, progress: float) -> None:
        """Adjust the method's schedule at ``progress`` (0-1, the larger of the step and time fractions); a
        method without a schedule does nothing."""
        return None

    def loss(self, delta: Tensor, obj: Tensor, lp: Tensor | None, values: Tensor) -> Tensor:
        """The scalar to minimise; ``values`` is ``obj`` detached on the CPU (tracked as the best objective)."""
        self.best = torch.minimum(self.best, values)
        return obj.sum()

    @abstractmethod
    def step(self, delta: Tensor) -> None:
        """In place, without gradients: the update from ``delta.grad``, then the projection."""

    def converged(self) -> bool:
        return False

    def result(self, delta: Tensor) -> Tensor:
        return delta.detach().clone()


class _AdamStep(MethodStep):
    lr = 0.01

    def start(self) -> Tensor:
        delta = super().start()
        self.lr0 = self.settings.lr or self.lr
        self.adam = torch.optim.Adam([delta], lr=self.lr0, betas=(0.9, 0.99))
        return delta

    def step(self, delta: Tensor) -> None:
        self.adam.step()
        self.problem.project_box(delta)


class GlazeStep(_AdamStep):
    """Adam on ``objective + alpha * max(LPIPS - budget, 0)``, alpha = :data:`GLAZE_ALPHA`, lr 0.005."""

    lr = 0.005

    def loss(self, delta: Tensor, obj: Tensor, lp: Tensor | None, values: Tensor) -> Tensor:
        self.best = torch.minimum(self.best, values)
        return (obj + GLAZE_ALPHA * torch.relu(lp - self.budget.budget)).sum()


class FixativeStep(_AdamStep):
    """Adam on the objective plus ``mu * LPIPS / budget``, ``mu`` per image rising while steps leave the limit
    and decaying inside (a Lagrange multiplier); cosine learning rate from lr to lr/20; after every step the
    iterates over the limit are scaled back onto it (0.97 of the budget, recalibrated at every tenth of the
    search against the saved file when ``calibrate`` is given). The best iterate is the result (the final one
    for a sampled objective, which also never stops early)."""

    def start(self) -> Tensor:
        delta = super().start()
        count = delta.shape[0]
        self.mu = torch.zeros(count)  # one LPIPS multiplier per image: the images of a batch are independent
        self.best_delta = delta.detach().clone()
        self.since_best = 0
        self.limit = self.budget.budget * 0.97  # margin for autocast error; the engine's fp32 check is exact
        self.checkpoints = [k / 10 for k in range(1, 10)] if self.calibrate is not None else []
        return delta

    def schedule(self, delta: Tensor, progress: float) -> None:
        if self.checkpoints and progress >= self.checkpoints[0]:
            self.checkpoints = [c for c in self.checkpoints if c > progress]
            budget = self.budget.budget
            with torch.no_grad():
                proxy, saved = float(self.problem.measure(delta).max()), self.calibrate(delta.detach())
            if proxy > 0 and saved > 0:
                # both grow about as the square of the perturbation: keep the proxy where the file meets the budget
                self.limit = min(max(budget * 0.97 * proxy / saved, budget * 0.05), 0.99)
                log.debug("calibrated at %.0f %%: proxy %.4f, saved file %.4f -> limit %.4f", 100 * progress, proxy,
                          saved, self.limit)
        for group in self.adam.param_groups:
            group["lr"] = _cosine(progress, self.lr0, self.lr0 * 0.05)

    def loss(self, delta: Tensor, obj: Tensor, lp: Tensor | None, values: Tensor) -> Tensor:
        # the iterate is feasible (projected at the end of the previous step): track the best
        best = self.best
        self.since_best = 0 if bool((values < best - 1e-3 * best.abs()).any()) else self.since_best + 1
        self._keep(delta, values)
        return (obj + self.mu.to(obj.device) * lp / self.budget.budget).sum()

    def _keep(self, delta: Tensor, values: Tensor) -> None:
        better = values < self.best
        if bool(better.any()):
            self.best = torch.where(better, values, self.best)
            if not self.sampled:  # a sampled objective is noisy: the final iterate is kept instead
                self.best_delta[better.to(delta.device)] = delta.detach()[better.to(delta.device)]

    def step(self, delta: Tensor) -> None:
        super().step(delta)
        measured = self.problem.measure(delta)
        overshoot = measured > self.limit
        # dual update of the LPIPS multiplier: up while steps leave the budget, down inside
        self.mu = torch.where(overshoot, torch.clamp(self.mu * MU_UP, min=MU_FLOOR), self.mu * MU_DOWN)
        if bool(overshoot.any()):
            self.problem.shrink_to(delta, self.limit, values=measured)

    def converged(self) -> bool:
        patience = self.settings.patience
        return bool(patience) and self.since_best >= patience and not self.sampled

    def result(self, delta: Tensor) -> Tensor:
        if self.sampled:
            return delta.detach().clone()
        with torch.no_grad():  # the final iterate has not been scored yet
            obj, _ = self.problem.forward(delta, with_lpips=False)
        self._keep(delta, obj.cpu())
        return self.best_delta


class PgdStep(MethodStep):
    """L-inf sign-gradient PGD, eps = :data:`PGD_EPS` (or the L-inf cap, if smaller), step eps/10 (or lr), from
    zero; no LPIPS in the loop."""

    uses_lpips = False

    def start(self) -> Tensor:
        s = self.settings
        self.step_size = s.lr or PGD_EPS / 10
        self.eps = min(PGD_EPS, s.linf) if s.linf else PGD_EPS
        return torch.zeros_like(self.problem.source).requires_grad_(True)

    def step(self, delta: Tensor) -> None:
        delta -= self.step_size * delta.grad.sign()
        delta.clamp_(-self.eps, self.eps)
        self.problem.project_box(delta)


#: the step class of each method name (:data:`fixative.core.optimizer.METHODS`)
METHOD_STEPS: dict[str, type[MethodStep]] = {"fixative": FixativeStep, "glaze": GlazeStep, "pgd": PgdStep}
