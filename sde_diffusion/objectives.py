"""Training objectives in log-SNR: a weighting w(λ) of the ε-error, a noise-level density p(λ) to draw λ from, and
the importance-weighted loss E_{λ~p}[w(λ)/p(λ)·‖ε̂ − ε‖²] (Kingma et al. 2021; Kingma & Gao 2023), λ = log(s/σ).

The parameterisation (models.ScoreModel) only maps the network's output to a score; the loss is always the ε-error
ε̂ − ε = σ·s_θ(x_t, t) + ε, so weightings from the papers are written once, on it. Each weighting is a base density
times a factor, w(λ) = p_base(λ)·c(λ), the form its paper trains it in (the factor c on the ε-MSE of draws from
p_base); drawn from p_base the loss is c·‖ε̂ − ε‖², from any other p it is p_base·c/p·‖ε̂ − ε‖²:

  simple      p_schedule · 1, mean over dimensions    ε-MSE, t ~ U (Ho et al. 2020; L_simple)
  sigma2      p_schedule · 1, sum                     σ²-weighted score matching (score_sde's default)
  likelihood  p_schedule · g²/σ², sum                 = 2/(T − t_min): constant in λ, the ELBO (Song et al. 2021b)
  min_snr     p_schedule · min(1, γ/SNR), mean        min-SNR-γ (Hang et al. 2023), SNR = e^{2λ}
  edm         p_lognormal · (σ̃² + σ_d²)/σ_d², mean     EDM's λ(σ) on ‖D − x₀‖² (Karras et al. 2022, Table 1)
  sigmoid     p_schedule · g²/σ² · sigmoid(b − 2λ)    = ELBO · sigmoid(b − log SNR) (Kingma & Gao 2023, App. D)
  flow        p_schedule · (1 + σ̃)², mean              ‖û − u‖² of the velocity u = ε − x₀ (û = ε̂ − x̂₀): flow matching
                                                      (Lipman et al. 2023) on the rectified-flow path (s + σ = 1)

p_schedule(λ) = 2σ²/(g²(T − t_min)) is today's t ~ U(t_min, T) under the SDE's β(t) (noise_levels), so the
first three with density "schedule" are today's `losses.dsm_loss`; the β(t)-free weightings (likelihood, edm,
sigmoid with any density but "schedule") give the same expected loss under every β(t). Densities: schedule,
lognormal (log σ̃ ~ N(p_mean, p_std²)), logit_normal (the same family: logit of the rectified-flow t is log σ̃),
uniform (λ on [lam_min, lam_max]), importance (∝ w(λ) on `cells` λ-cells: constant w/p, the variance-reducing
choice; for the likelihood weighting, constant in λ, it is exactly λ uniform, drawn as such: Song et al. 2021b's
importance sampling for any β(t)) and adaptive (`AdaptiveLevels`). `stratified` draws one u per batch stratum.
A draw (`Draws`) keeps the λ and p(λ) its density computed on the way to t, so w/p costs no second λ(t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .checks import check_choice, check_number
from .losses import squared_eps_error
from .noise_levels import NoiseLevels, NormalLevels, PiecewiseLevels, ScheduleLevels, UniformLevels
from .sde import SDE, ScoreFn

WEIGHTINGS = {  # name: (base density, reduction over dimensions)
    "simple": ("schedule", "mean"),
    "sigma2": ("schedule", "sum"),
    "likelihood": ("schedule", "sum"),
    "min_snr": ("schedule", "mean"),
    "edm": ("lognormal", "mean"),
    "sigmoid": ("schedule", "mean"),
    "flow": ("schedule", "mean"),
}
DENSITIES = ("schedule", "lognormal", "logit_normal", "uniform", "importance", "adaptive")


class AdaptiveLevels(PiecewiseLevels):
    """p(λ) on `cells` λ-bins ∝ √EMA[(w(λ)·ℓ)²] per bin, mixed with `mix` of uniform: the variance-minimising
    proposal for the loss seen so far (Nichol & Dhariwal 2021, §3.3, over λ-bins instead of steps). It starts as the
    importance density ∝ w. `update` folds in one step's per-sample losses (summed over the processes under DDP);
    its state (`state_dict`) is the EMA, which resume restores bitwise."""

    def __init__(self, sde: SDE, t_min: float, w_centres: Tensor, decay: float, mix: float):
        self.decay, self.mix = float(decay), float(mix)
        self.ema = w_centres.detach().to(torch.float64).square().cpu().numpy()
        super().__init__(sde, t_min, torch.from_numpy(self._masses()))

    def _masses(self) -> np.ndarray:
        root = np.sqrt(self.ema)
        return (1 - self.mix) / root.sum() * root + self.mix / len(root)

    @torch.no_grad()
    def update(self, lam: Tensor, loss: Tensor) -> None:
        """Fold in one step's per-sample losses w/p·ℓ drawn at λ, as w(λ)·ℓ = loss·p(λ) with p of λ's bin. On the
        host in float64 (one transfer), like the masses, where the per-bin sums are deterministic: resume is bitwise."""
        k = len(self.ema)
        lam, loss = torch.stack([lam, loss]).double().cpu().numpy()
        cell = np.minimum(((lam - self.lam_min) / self.width).astype(np.intp), k - 1)  # λ >= lam_min: as in `pdf`
        total, count = np.bincount(cell, (loss * self._table[3][cell]) ** 2, k), np.bincount(cell, minlength=k)
        if dist.is_available() and dist.is_initialized():
            sums = torch.from_numpy(np.stack([total, count]))
            dist.all_reduce(sums)
            total, count = sums.numpy()
        if not np.isfinite(total.sum()):  # terms >= 0: finite iff each one is
            return
        mean = np.maximum(total / np.maximum(count, 1), 1e-30)
        np.copyto(self.ema, self.decay * self.ema + (1 - self.decay) * mean, where=count > 0)  # unseen bins keep theirs
        self._store(self._masses())  # > 0 (mix > 0) and normalised

    def state_dict(self) -> dict:
        return {"ema": torch.from_numpy(self.ema.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.ema = state["ema"].to(torch.float64).cpu().numpy().copy()
        self.set_masses(torch.from_numpy(self._masses()))


@dataclass
class Draws:
    """One batch's draws: times t (batch,), noise ε, λ(t) where the density drew it (else None) and the weight
    w(λ)/p(λ) of each sample (None: 1). `draws[s]` are those of the slice s of the batch (one process's shard)."""

    t: Tensor
    noise: Tensor
    lam: Tensor | None = None
    ratio: Tensor | None = None

    def __getitem__(self, s: slice) -> Draws:
        lam, ratio = (None if v is None else v[s] for v in (self.lam, self.ratio))
        return Draws(self.t[s], self.noise[s], lam, ratio)


class Objective:
    """The per-sample loss w(λ)/p(λ)·‖ε̂ − ε‖² of one SDE (the module docstring's table); `draws` gives t, ε and the
    weights from a generator, calling the objective gives the (batch,) loss. Its defaults are today's training loss
    exactly."""

    def __init__(
        self,
        sde: SDE,
        weighting: str = "simple",
        density: str = "schedule",
        t_min: float = 1e-5,
        stratified: bool = False,
        gamma: float = 5.0,
        sigma_data: float = 1.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        bias: float = 0.0,
        lam_min: float | None = None,
        lam_max: float | None = None,
        cells: int = 1024,
        bins: int = 32,
        ema_decay: float = 0.99,
        mix: float = 0.1,
    ):
        check_choice("weighting", weighting, tuple(WEIGHTINGS))
        check_choice("density", density, DENSITIES)
        check_number("t_min", t_min, gt=0, lt=sde.T)
        check_choice("stratified", stratified, (True, False))
        for name, value in (("gamma", gamma), ("sigma_data", sigma_data), ("p_std", p_std)):
            check_number(name, value, gt=0)
        check_number("cells", cells, integer=True, ge=2)
        check_number("bins", bins, integer=True, ge=2)
        check_number("ema_decay", ema_decay, ge=0, lt=1)
        check_number("mix", mix, gt=0, le=1)
        self.sde, self.weighting, self.density_name, self.t_min = sde, weighting, density, float(t_min)
        self._adaptive = (ema_decay, mix)
        self.stratified, self.gamma, self.sigma_data, self.bias = stratified, gamma, sigma_data, bias
        base_name, self.reduction = WEIGHTINGS[weighting]
        self.base = ScheduleLevels(sde, t_min) if base_name == "schedule" else NormalLevels(sde, t_min, p_mean, p_std)
        cells = cells if density == "importance" else bins
        self.density = self._density(density, p_mean, p_std, lam_min, lam_max, cells)

    def _density(self, name, p_mean, p_std, lam_min, lam_max, cells) -> NoiseLevels:
        if name == WEIGHTINGS[self.weighting][0] or (name == "logit_normal" and self.weighting == "edm"):
            return self.base
        if name in ("lognormal", "logit_normal"):
            return NormalLevels(self.sde, self.t_min, p_mean, p_std)
        if name == "schedule":
            return ScheduleLevels(self.sde, self.t_min)
        if name == "uniform":
            return UniformLevels(self.sde, self.t_min, lam_min, lam_max)
        if name == "importance" and self.weighting == "likelihood":
            return UniformLevels(self.sde, self.t_min)  # ∝ w, a constant: λ uniform on the range, exactly
        grid = PiecewiseLevels(self.sde, self.t_min, torch.ones(cells))
        lam = grid.centres()
        w = self.w(self.sde.log_snr_inverse(lam), lam)
        if name == "importance":
            return PiecewiseLevels(self.sde, self.t_min, w)
        return AdaptiveLevels(self.sde, self.t_min, w, self._adaptive[0], self._adaptive[1])

    def factor(self, t: Tensor, lam: Tensor | None = None) -> Tensor | None:
        """c(λ) of the table (None: 1), on the ε-MSE of draws from the base density; σ̃ = e^{−λ} where λ is given,
        else σ(t)/s(t)."""
        name, sde = self.weighting, self.sde
        if name in ("simple", "sigma2"):
            return None
        if name in ("likelihood", "sigmoid"):
            elbo = (sde.g(t) / sde.sigma(t)) ** 2
            if name == "likelihood":
                return elbo
            return elbo * torch.sigmoid(self.bias - 2 * (sde.log_snr(t) if lam is None else lam))
        sigma_t = sde.sigma(t) / sde.scale(t) if lam is None else torch.exp(-lam)
        if name == "min_snr":
            return torch.clamp(self.gamma * sigma_t**2, max=1.0)
        if name == "edm":
            return 1 + sigma_t**2 / self.sigma_data**2
        return (1 + sigma_t) ** 2  # flow

    def w(self, t: Tensor, lam: Tensor) -> Tensor:
        """The weighting w(λ) = p_base(λ)·c(λ) at (t, λ(t)); for the ELBO-type ones p_schedule·g²/σ² = 2/(T − t_min)
        is used in closed form (no σ or g evaluated)."""
        elbo = 2 / (self.sde.T - self.t_min)
        if self.weighting == "likelihood":
            return torch.full_like(lam, elbo)
        if self.weighting == "sigmoid":
            return torch.sigmoid(self.bias - 2 * lam) * elbo
        p, c = self.base.pdf(t, lam), self.factor(t, lam)
        return p if c is None else p * c

    def ratio(self, t: Tensor, lam: Tensor | None = None, p: Tensor | None = None) -> Tensor | None:
        """w(λ)/p(λ) at the drawn t (None: 1, the default's exact path); λ = λ(t) and p = p(λ) where the draw gave
        them, else computed from t."""
        if self.density is self.base:
            return self.factor(t, lam)
        lam = self.sde.log_snr(t) if lam is None else lam
        return self.w(t, lam) / (self.density.pdf(t, lam) if p is None else p)

    def draws(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Draws:
        """t (batch,) with λ(t) ~ p, then ε ~ N(0, I) of `shape`, in this order from `generator` (one uniform per
        sample: with the defaults these are `losses.dsm_draws`' t and ε), with the λ and w/p of the same draw."""
        u = torch.rand(shape[0], generator=generator, dtype=dtype, device=device)
        if self.stratified:
            u = (torch.arange(shape[0], dtype=dtype, device=device) + u) / shape[0]
        t, lam, p = self.density.draw(u)
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return Draws(t, noise, lam, self.ratio(t, lam, p))

    def draw(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(t, ε) of `draws`: the pair `__call__` takes."""
        draws = self.draws(shape, generator, dtype, device)
        return draws.t, draws.noise

    def __call__(
        self,
        model: ScoreFn,
        x0: Tensor,
        y: Tensor | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-sample loss (batch,) of `model` (called as model(x_t, t[, y])) on x0 (batch, …), at the given draws
        (t, ε), or at `draws(generator)`'s."""
        if t is None or noise is None:
            return self.loss(model, x0, y, self.draws(x0.shape, generator, x0.dtype, x0.device))
        return self.loss(model, x0, y, Draws(t, noise, None, self.ratio(t)))

    def loss(self, model: ScoreFn, x0: Tensor, y: Tensor | None, draws: Draws) -> Tensor:
        """Per-sample loss (batch,) of `model` on x0 (labels y) at `draws`, weighted by their w/p."""
        sq = squared_eps_error(self.sde, model, x0, draws.t, draws.noise, y)
        loss = sq.mean(1) if self.reduction == "mean" else sq.sum(1)
        return loss if draws.ratio is None else loss * draws.ratio.to(loss.dtype)

    def update(self, lam: Tensor | None, loss: Tensor) -> None:
        """After a step: feed its per-sample losses, drawn at λ (`Draws.lam`), to an adaptive density (a no-op for
        the others)."""
        if isinstance(self.density, AdaptiveLevels):
            self.density.update(lam.detach(), loss.detach())

    def state_dict(self) -> dict:
        """The adaptive density's state ({} for the others), for the Trainer's state_dict."""
        return self.density.state_dict() if isinstance(self.density, AdaptiveLevels) else {}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self.density, AdaptiveLevels) and state:
            self.density.load_state_dict(state)
