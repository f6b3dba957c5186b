"""Bits/dim of discrete data (integer levels 0..L−1) from the ELBO: three bounds on −log P(k), in level units.

    uniform       −log P(k) ≤ E_u[−log p(k + u − ½)],  u ~ U[0, 1)^D             (Theis et al. 2016; Ho et al. 2019)
    truncnormal   −log P(k) ≤ E_u[−log p(k + u) + log q(u)],  q = N(0, τ²) cut to [−½, ½]^D   (Zheng et al. 2023)
    discretised   −log P(k) ≤ KL prior + diffusion + E[−log p(k | x_tmin)], p(k | z) ∝ N(x_k; z/s, σ²/s²) over the L
                  levels per dimension (Kingma et al. 2021, VDM App. C: the diffusion starts at the levels themselves)

−log p(y) of a dequantised y in level units is bounded by the ELBO of x = a·y + b in model space (the scaler's affine
map, a = 2/(L − 1) for data.Scaler) less D·log a: the whole "offset" (log₂((L − 1)/2) = 3 bits/dim for L = 17,
≈ 7 for L = 256). The discretised decoder gives a probability directly: no offset. Every bound holds for any score.
The bounds take the data's map between levels and model space as a `Quantiser` (data.Scaler is one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..core.checks import ArgumentError
from ..core.sde import SDE, ScoreFn, expand_as
from ..objectives.elbo import diffusion_term, elbo, prior_kl

DEQUANTISATIONS = ("uniform", "truncnormal", "discretised")


class Quantiser(Protocol):
    """What the bounds need of quantised data: the number of levels L and the affine map between the levels
    0..L−1 and model space (`to_model`) with its inverse (`to_raw`, unrounded)."""

    levels: int

    def to_model(self, y: Tensor) -> Tensor: ...

    def to_raw(self, x: Tensor) -> Tensor: ...


@dataclass
class DiscreteELBO:
    """The bound on −log P(k) per sample in nats (`nll`) and bits/dim (`bpd`), its MC standard error, score calls."""

    nll: Tensor
    sem: Tensor
    nfe: int
    dim: int

    @property
    def bpd(self) -> Tensor:
        return self.nll / (self.dim * math.log(2))


def quantised_levels(x: Tensor, scaler: Quantiser) -> tuple[Tensor, Tensor, Tensor]:
    """The integer levels k = scaler.to_raw(x) (checked) and the affine map's a, b with to_model(y) = a·y + b."""
    raw = scaler.to_raw(x)
    k = raw.round()
    if (raw - k).abs().max() > 1e-3 or k.min() < 0 or k.max() > scaler.levels - 1:
        raise ValueError(
            f"x must be quantised data: scaler.to_raw(x) must be integer levels in 0..{scaler.levels - 1}, "
            f"got values in [{float(raw.min()):.4g}, {float(raw.max()):.4g}] up to {float((raw - k).abs().max()):.3g} "
            "off a level"
        )
    b = scaler.to_model(torch.zeros_like(k))
    return k, scaler.to_model(torch.ones_like(k)) - b, b


def _truncnormal(
    shape: torch.Size, tau: float, like: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """u ~ N(0, τ²) cut to [−½, ½] by the inverse CDF, and log q(u) summed per sample."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=like.dtype), torch.tensor(tau, dtype=like.dtype))
    lo = normal.cdf(torch.tensor(-0.5, dtype=like.dtype))
    v = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    u = normal.icdf(lo + v * (1 - 2 * lo)).clamp(-0.5, 0.5)
    log_q = normal.log_prob(u) - torch.log(1 - 2 * lo)
    return u, log_q.flatten(1).sum(1)


def discretised_reconstruction(
    sde: SDE, x: Tensor, k: Tensor, scaler: Quantiser, t_min: float, generator: torch.Generator | None
) -> Tensor:
    """−log p(k | z), z ~ q(x_tmin | x), with p(k_d | z) = softmax_j(−(z_d/s − to_model(j))²·s²/(2σ²)) (VDM App. C)."""
    tm = torch.full((x.shape[0],), t_min, dtype=x.dtype, device=x.device)
    z = sde.perturb(x, tm, torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
    s, std = expand_as(sde.scale(tm), x), expand_as(sde.sigma(tm), x)
    grid = scaler.to_model(torch.arange(scaler.levels, dtype=x.dtype, device=x.device))
    logits = -(((z / s).unsqueeze(-1) - grid) ** 2) * (s / std).unsqueeze(-1) ** 2 / 2
    logp = torch.log_softmax(logits, -1).gather(-1, k.long().unsqueeze(-1)).squeeze(-1)
    return -logp.flatten(1).sum(1)


def _bound(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    scaler: Quantiser,
    method: str,
    opts: dict,
    generator: torch.Generator | None,
) -> Tensor:
    """One draw of the bound per sample: one dequantisation (or decoder noise) and n_t stratified (t, ε) draws."""
    k, a, b = quantised_levels(x, scaler)
    log_a = a.abs().log().flatten(1).sum(1)
    if method == "discretised":
        diff, _ = diffusion_term(sde, score_fn, x, opts["t_min"], opts["n_t"], opts["importance"], generator)
        recon = discretised_reconstruction(sde, x, k, scaler, opts["t_min"], generator)
        return prior_kl(sde, x) + diff + recon
    if method == "uniform":
        y, log_q = k + torch.rand(k.shape, generator=generator, dtype=k.dtype, device=k.device) - 0.5, 0.0
    else:
        u, log_q = _truncnormal(k.shape, opts["tau"], k, generator)
        y = k + u
    res = elbo(sde, score_fn, a * y + b, opts["t_min"], opts["n_t"], opts["importance"], generator)
    return res.nll - log_a + log_q


def discrete_elbo(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    scaler: Quantiser,
    dequantisation: str = "uniform",
    n_draws: int = 4,
    t_min: float = 1e-5,
    n_t: int = 16,
    importance: bool = True,
    tau: float = 0.25,
    generator: torch.Generator | None = None,
) -> DiscreteELBO:
    """The `dequantisation` bound on −log P(k) (module docstring) for quantised x in model space, averaged over
    `n_draws` draws of the dequantisation (or of the decoder's noise); SE from their spread. τ: truncnormal's scale,
    in levels."""
    if dequantisation not in DEQUANTISATIONS:
        raise ArgumentError("dequantisation", dequantisation, f"one of {DEQUANTISATIONS}")
    if n_draws < 2:
        raise ArgumentError("n_draws", n_draws, ">= 2 (the SE needs two)")
    if not tau > 0:
        raise ArgumentError("tau", tau, "> 0")
    opts = {"t_min": t_min, "n_t": n_t, "importance": importance, "tau": tau}
    with torch.no_grad():
        draws = torch.stack([_bound(sde, score_fn, x, scaler, dequantisation, opts, generator) for _ in range(n_draws)])
    return DiscreteELBO(draws.mean(0), draws.std(0) / math.sqrt(n_draws), n_draws * n_t, x[0].numel())


def quantised_log_pmf(k: Tensor, weights: Tensor, means: Tensor, stds: Tensor, levels: int) -> Tensor:
    """The exact log P(k) of y ~ Σ_c w_c N(μ_c, diag σ_c²) (level units) rounded to the levels 0..L−1, the end bins
    reaching ±∞: log Σ_c w_c ∏_d [Φ((k_d + ½ − μ_cd)/σ_cd) − Φ((k_d − ½ − μ_cd)/σ_cd)]. k: (n, D); shape (n,)."""
    upper = torch.where(k < levels - 1, k + 0.5, math.inf)[:, None, :]
    lower = torch.where(k > 0, k - 0.5, -math.inf)[:, None, :]

    def cdf(y: Tensor) -> Tensor:
        return 0.5 * (1 + torch.erf((y - means) / (stds * math.sqrt(2))))

    return torch.log((weights * (cdf(upper) - cdf(lower)).prod(-1)).sum(-1))
