"""Training objectives in log-SNR: a weighting w(λ) of the ε-error (weightings), a noise-level density p(λ) to draw λ
from (noise_levels) and the importance-weighted loss E_{λ~p}[w(λ)/p(λ)·‖ε̂ − ε‖²] (Kingma et al. 2021; Kingma & Gao
2023), λ = log(s/σ).

The parameterisation (models.ScoreModel) only maps the network's output to a score; the loss is always the ε-error
ε̂ − ε = σ·s_θ(x_t, t) + ε, so weightings from the papers are written once, on it. Drawn from the weighting's base
density the loss is c·‖ε̂ − ε‖², from any other p it is p_base·c/p·‖ε̂ − ε‖². The β(t)-free weightings (likelihood,
edm, sigmoid with any density but "schedule") give the same expected loss under every β(t). Densities by name
(`build_objective`, conf/loss/*.yaml): schedule, lognormal (log σ̃ ~ N(p_mean, p_std²)), logit_normal (the same
family: logit of the rectified-flow t is log σ̃), uniform (λ on [lam_min, lam_max]), importance (∝ w(λ) on `cells`
λ-cells: constant w/p, the variance-reducing choice; for a weighting constant in λ, exactly λ uniform: Song et al.
2021b's importance sampling for any β(t)) and adaptive (`noise_levels.AdaptiveLevels`). `stratified` draws one u per
batch stratum. A `Draw` keeps the λ and p(λ) its density computed on the way to t, so w/p costs no second λ(t).
`LearnedScheduleELBO` is VDM's estimator L̂ as the objective of a trainable learned β(t).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import ArgumentError, check_choice, check_number
from ..core.learned_schedule import trainable_schedule
from ..core.sde import SDE, ScoreFn, expand_as
from .elbo import negative_elbo
from .noise_levels import AdaptiveLevels, NoiseLevels, NormalLevels, PiecewiseLevels, ScheduleLevels, UniformLevels
from .weightings import WEIGHTINGS, Likelihood, Simple, Weighting


def squared_eps_error(
    sde: SDE, model: ScoreFn, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None
) -> Tensor:
    """(ε̂ − ε)² per dimension, shape (batch, D): r = σ(t)s_θ(x_t, t[, y]) + ε at x_t = s(t)x₀ + σ(t)ε. With the
    ε-parameterisation s_θ = −ε̂/σ it is ε − ε̂: denoising score matching (Vincent 2011; Song et al. 2021, eq. 7)."""
    x_t = sde.perturb(x0, t, noise)
    score = model(x_t, t) if y is None else model(x_t, t, y)
    return (expand_as(sde.sigma(t), x0) * score + noise).square().flatten(1)


@dataclass
class Draw:
    """One batch's draw: times t (batch,), noise ε, λ(t) where the density drew it (else None) and the weight
    w(λ)/p(λ) of each sample (None: 1). `draw[s]` is that of the slice s of the batch (one process's shard)."""

    t: Tensor
    noise: Tensor
    lam: Tensor | None = None
    ratio: Tensor | None = None

    def __getitem__(self, s: slice) -> Draw:
        lam, ratio = (None if v is None else v[s] for v in (self.lam, self.ratio))
        return Draw(self.t[s], self.noise[s], lam, ratio)


class Objective:
    """The per-sample loss w(λ)/p(λ)·‖ε̂ − ε‖² of one SDE: `weighting` (default Simple, today's ε-MSE) drawn from
    `levels` (None: the weighting's own base density) on [t_min, T]; `draw` gives t, ε and the weights from a
    generator, calling the objective gives the (batch,) loss. A Trainer calls `loss`, `backward` and `update`, and
    gives `parameters()` (an objective's own, none here) to its optimiser."""

    ddp: ClassVar[bool] = True  # trains under DDP (its gradients are the network's, synced by DDP)
    trains_schedule: ClassVar[bool] = False  # the objective of a trainable learned β(t)

    def __init__(
        self,
        sde: SDE,
        weighting: Weighting | None = None,
        levels: NoiseLevels | None = None,
        t_min: float = 1e-5,
        stratified: bool = False,
    ):
        check_number("t_min", t_min, gt=0, lt=sde.T)
        check_choice("stratified", stratified, (True, False))
        if levels is not None and (levels.sde is not sde or levels.t_min != float(t_min)):
            raise ArgumentError("levels", levels, f"a NoiseLevels of this sde on [t_min={t_min:g}, T]")
        if trainable_schedule(sde) is not None and not self.trains_schedule:
            allowed = "likelihood with density schedule (loss=elbo loss.density=schedule) to train schedule=learned"
            raise ArgumentError("weighting", getattr(weighting, "name", weighting), allowed)
        self.sde, self.t_min, self.stratified = sde, float(t_min), stratified
        self.weighting = Simple() if weighting is None else weighting
        self.base = self.weighting.base(sde, self.t_min)
        self.levels = self.base if levels is None else levels

    def ratio(self, t: Tensor, lam: Tensor | None = None, p: Tensor | None = None) -> Tensor | None:
        """w(λ)/p(λ) at the drawn t (None: 1, the default's exact path); λ = λ(t) and p = p(λ) where the draw gave
        them, else computed from t."""
        if self.levels is self.base:
            return self.weighting.factor(self.sde, t, lam)
        lam = self.sde.log_snr(t) if lam is None else lam
        return self.weighting.w(self.base, t, lam) / (self.levels.pdf(t, lam) if p is None else p)

    def draw(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Draw:
        """t (batch,) with λ(t) ~ p, then ε ~ N(0, I) of `shape`, in this order from `generator` (one uniform per
        sample: with the defaults t ~ U(t_min, T)), with the λ and w/p of the same draw."""
        u = torch.rand(shape[0], generator=generator, dtype=dtype, device=device)
        if self.stratified:
            u = (torch.arange(shape[0], dtype=dtype, device=device) + u) / shape[0]
        t, lam, p = self.levels.draw(u)
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return Draw(t, noise, lam, self.ratio(t, lam, p))

    def __call__(
        self,
        model: ScoreFn,
        x0: Tensor,
        y: Tensor | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-sample loss (batch,) of `model` (called as model(x_t, t[, y])) on x0 (batch, …), at the given (t, ε),
        or at `draw(generator)`'s."""
        if t is None or noise is None:
            return self.loss(model, x0, y, self.draw(x0.shape, generator, x0.dtype, x0.device))
        return self.loss(model, x0, y, Draw(t, noise, None, self.ratio(t)))

    def loss(self, model: ScoreFn, x0: Tensor, y: Tensor | None, draw: Draw) -> Tensor:
        """Per-sample loss (batch,) of `model` on x0 (labels y) at `draw`, weighted by its w/p."""
        loss = self.weighting.reduce(squared_eps_error(self.sde, model, x0, draw.t, draw.noise, y))
        return loss if draw.ratio is None else loss * draw.ratio.to(loss.dtype)

    def backward(self, per_sample: Tensor, scale: Callable[[Tensor], Tensor]) -> None:
        """The gradients of E[loss] over the batch (`per_sample` from `loss`), through `scale` (a GradScaler's)."""
        scale(per_sample.mean()).backward()

    def parameters(self) -> list[nn.Parameter]:
        """The objective's own trained parameters (none; a learned β(t)'s for LearnedScheduleELBO)."""
        return []

    def update(self, draw: Draw, loss: Tensor) -> None:
        """After a step: feed its per-sample losses at the draw's λ to the density (an adaptive one follows them)."""
        if draw.lam is not None:
            self.levels.update(draw.lam.detach(), loss.detach())

    def state_dict(self) -> dict:
        """The density's state ({} but for an adaptive one), for the Trainer's state_dict."""
        return self.levels.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.levels.load_state_dict(state)


class LearnedScheduleELBO(Objective):
    """VDM's estimator L̂ in nats, t ~ U(t_min, T) under a trainable learned β(t) (Kingma et al. 2021, §3.4, §5.3):

        L̂(x) = KL(q(x_T | x) ‖ π) + (T − t_min)·g²/(2σ²)·‖ε̂ − ε‖² + D/2·log(2πe) − D·λ(t_min)     (VDM eq. 17)

    The network and the endpoints γ₀, γ₁ descend E[L̂]. E[L̂] does not depend on the shape of γ(t), so the shape
    descends E[L̂²]/2 = (Var L̂ + E[L̂]²)/2 instead (a second autograd pass): the shape becomes the variance-minimising
    proposal of t. One process only: the shape's gradient is not synced under DDP."""

    ddp: ClassVar[bool] = False
    trains_schedule: ClassVar[bool] = True

    def __init__(self, sde: SDE, t_min: float = 1e-5, stratified: bool = False):
        self.schedule = trainable_schedule(sde)
        if self.schedule is None:
            raise ArgumentError("schedule", getattr(sde, "schedule", None), "a LearnedBeta built with trainable=True")
        super().__init__(sde, Likelihood(), None, t_min, stratified)

    def loss(self, model: ScoreFn, x0: Tensor, y: Tensor | None, draw: Draw) -> Tensor:
        """L̂ per example, from the likelihood weighting's g²/σ²·‖ε̂ − ε‖² under t ~ U."""
        weighted = super().loss(model, x0, y, draw)
        return negative_elbo(self.sde, x0, 0.5 * (self.sde.T - self.t_min) * weighted, self.t_min)

    def backward(self, per_sample: Tensor, scale: Callable[[Tensor], Tensor]) -> None:
        """E[∂L̂] for the network and the endpoints; the shape's gradient replaced by ∂(E[L̂²]/2) = E[L̂·∂L̂]."""
        shape = self.schedule.shape_parameters()
        second_moment = scale((per_sample.detach() * per_sample).mean())
        grads = torch.autograd.grad(second_moment, shape, retain_graph=True, allow_unused=True, materialize_grads=True)
        super().backward(per_sample, scale)
        for p, g in zip(shape, grads, strict=True):
            p.grad = g

    def parameters(self) -> list[nn.Parameter]:
        return list(self.schedule.parameters())


def _w_centres(sde: SDE, t_min: float, weighting: Weighting, cells: int) -> Tensor:
    """w(λ) at the centres of `cells` equal λ-cells of [λ(T), λ(t_min)]."""
    check_number("cells", cells, integer=True, ge=2)
    lam = PiecewiseLevels(sde, t_min, torch.ones(cells)).centres()
    return weighting.w(weighting.base(sde, t_min), sde.log_snr_inverse(lam), lam)


def _schedule(sde: SDE, t_min: float, weighting: Weighting) -> NoiseLevels:
    return ScheduleLevels(sde, t_min)


def _normal(sde: SDE, t_min: float, weighting: Weighting, p_mean: float = -1.2, p_std: float = 1.2) -> NoiseLevels:
    check_number("p_mean", p_mean)
    check_number("p_std", p_std, gt=0)
    return NormalLevels(sde, t_min, p_mean, p_std)


def _uniform(
    sde: SDE, t_min: float, weighting: Weighting, lam_min: float | None = None, lam_max: float | None = None
) -> NoiseLevels:
    return UniformLevels(sde, t_min, lam_min, lam_max)


def _importance(sde: SDE, t_min: float, weighting: Weighting, cells: int = 1024) -> NoiseLevels:
    """∝ w on `cells` λ-cells; for the likelihood weighting (w constant in λ) exactly λ uniform, with no cells."""
    if isinstance(weighting, Likelihood):
        return UniformLevels(sde, t_min)
    return PiecewiseLevels(sde, t_min, _w_centres(sde, t_min, weighting, cells))


def _adaptive(
    sde: SDE, t_min: float, weighting: Weighting, cells: int = 32, ema_decay: float = 0.99, mix: float = 0.1
) -> NoiseLevels:
    check_number("ema_decay", ema_decay, ge=0, lt=1)
    check_number("mix", mix, gt=0, le=1)
    return AdaptiveLevels(sde, t_min, _w_centres(sde, t_min, weighting, cells), ema_decay, mix)


# name: (sde, t_min, weighting, **its hyper-parameters) -> NoiseLevels
DENSITIES: dict[str, Callable[..., NoiseLevels]] = {
    "schedule": _schedule,
    "lognormal": _normal,
    "logit_normal": _normal,  # the same family (NormalLevels' docstring)
    "uniform": _uniform,
    "importance": _importance,
    "adaptive": _adaptive,
}
_BASE_OF = {"logit_normal": "lognormal"}  # a density that is the base of a weighting under another name


def _hyper_names(builder: Callable[..., Any]) -> list[str]:
    return [p for p in inspect.signature(builder).parameters if p not in ("sde", "t_min", "weighting")]


def _pick(names: list[str], hyper: dict[str, Any]) -> dict[str, Any]:
    return {k: hyper[k] for k in names if k in hyper}


def build_objective(
    sde: SDE,
    weighting: str = "simple",
    density: str = "schedule",
    t_min: float = 1e-5,
    stratified: bool = False,
    **hyper: Any,
) -> Objective:
    """The Objective named by a config node (conf/loss/*.yaml): a `weighting` of WEIGHTINGS and a `density` of
    DENSITIES with their hyper-parameters from `hyper` (each takes the ones it names: gamma, sigma_data, p_mean,
    p_std, bias, lam_min, lam_max, cells, ema_decay, mix; the others are left unused). Under a trainable learned
    β(t) it is its LearnedScheduleELBO, which needs the likelihood weighting with the schedule density."""
    check_choice("weighting", weighting, tuple(WEIGHTINGS))
    check_choice("density", density, tuple(DENSITIES))
    names = {f.name for cls in WEIGHTINGS.values() for f in fields(cls)}
    names |= {name for builder in DENSITIES.values() for name in _hyper_names(builder)}
    for key, value in hyper.items():
        if key not in names:
            raise ArgumentError(key, value, f"a hyper-parameter of a weighting or density, one of {sorted(names)}")
    w = WEIGHTINGS[weighting](**_pick([f.name for f in fields(WEIGHTINGS[weighting])], hyper))
    if trainable_schedule(sde) is not None:
        goal = "to train schedule=learned"
        if weighting != "likelihood":
            raise ArgumentError("weighting", weighting, f"likelihood (loss=elbo) {goal}")
        if density != "schedule":
            raise ArgumentError("density", density, f"schedule (t ~ U under it) {goal}")
        return LearnedScheduleELBO(sde, t_min, stratified)
    check_number("t_min", t_min, gt=0, lt=sde.T)
    if _BASE_OF.get(density, density) == w.base_density:
        return Objective(sde, w, None, t_min, stratified)
    builder = DENSITIES[density]
    return Objective(sde, w, builder(sde, float(t_min), w, **_pick(_hyper_names(builder), hyper)), t_min, stratified)
