"""Training a learned β(t) with the network (Kingma et al. 2021, VDM §3.4 and §5.3).

The per-example loss becomes VDM's ELBO estimator in nats, t ~ U(t_min, T) under the learned schedule:

    L̂(x) = KL(q(x_T | x) ‖ π) + (T − t_min)·g²/(2σ²)·‖ε̂ − ε‖² + D/2·log(2πe) − D·λ(t_min)     (VDM eq. 17)

The network and the endpoints γ₀, γ₁ descend E[L̂]. E[L̂] does not depend on the shape of γ(t) (only on λ(t_min) and
λ(T)), so the shape parameters descend E[L̂²] = Var L̂ + E[L̂]² instead: a second autograd pass gives them
E[2L̂·∂L̂] in place of E[∂L̂]. The shape is then the variance-minimising proposal of t, as in
experiments/learned_schedule.py with the exact score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..checks import ArgumentError
from ..elbo import gaussian_reconstruction, prior_kl
from ..learned_schedule import LearnedBeta
from ..objectives import Objective


class ScheduleTraining:
    """The joint loss and the shape's variance gradient of a trainable LearnedBeta under `objective`, which must be
    the likelihood weighting with t ~ U (`loss=elbo loss.density=schedule`): other draws would not make the shape a
    proposal (λ-uniform draws ignore it)."""

    def __init__(self, schedule: LearnedBeta, objective: Objective):
        goal = "to train schedule=learned"
        if objective.weighting != "likelihood":
            raise ArgumentError("loss.weighting", objective.weighting, f"likelihood (loss=elbo) {goal}")
        if objective.density_name != "schedule":
            raise ArgumentError("loss.density", objective.density_name, f"schedule (t ~ U under it) {goal}")
        self.schedule, self.objective = schedule, objective

    @classmethod
    def of(cls, sde: object, objective: Objective) -> ScheduleTraining | None:
        """The training of `sde`'s schedule, if it is a LearnedBeta built with `trainable` (else None)."""
        schedule = getattr(sde, "schedule", None)
        if isinstance(schedule, LearnedBeta) and any(p.requires_grad for p in schedule.parameters()):
            return cls(schedule, objective)
        return None

    def parameters(self) -> list[nn.Parameter]:
        return list(self.schedule.parameters())

    def loss(self, x0: Tensor, weighted_mse: Tensor) -> Tensor:
        """L̂ per example from the objective's per-example g²/σ²·‖ε̂ − ε‖² (its likelihood weighting under t ~ U)."""
        sde, t_min = self.objective.sde, self.objective.t_min
        diffusion = 0.5 * (sde.T - t_min) * weighted_mse
        return prior_kl(sde, x0).to(diffusion.dtype) + diffusion + gaussian_reconstruction(sde, x0, t_min)

    def shape_grads(self, per_example: Tensor, scale: Callable[[Tensor], Tensor]) -> tuple[Tensor, ...]:
        """∂/∂shape of scale(E[L̂²]/2), i.e. E[L̂·∂L̂] times the GradScaler's factor (`scale`: its `scale` method, so
        that unscaling treats every group alike); the graph is kept for the main backward pass."""
        second_moment = scale((per_example.detach() * per_example).mean())
        shape = self.schedule.shape_parameters()
        return torch.autograd.grad(second_moment, shape, retain_graph=True, allow_unused=True, materialize_grads=True)

    def set_shape_grads(self, grads: tuple[Tensor, ...]) -> None:
        """Replace the shape's gradients of E[L̂] (left by the main backward pass) by those of E[L̂²]/2."""
        for p, g in zip(self.schedule.shape_parameters(), grads, strict=True):
            p.grad = g
