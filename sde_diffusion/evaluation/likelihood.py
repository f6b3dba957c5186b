"""Likelihood of a data set: the per-example NLL of one estimator (`NLLEstimator`: the PF-ODE's
`likelihood.log_likelihood` and `bits_per_dim`, or the −ELBO of `elbo.elbo` and `dequantise.discrete_elbo`), batch by
batch, and its summary with standard errors and, where an oracle knows it, the true NLL (Song et al. 2021, App. D.2;
Kingma et al. 2021).

    estimate = NLLEstimator(sde, score_fn, "elbo", oracle=mix, options={"n_t": 16})
    summary = evaluate_likelihood(estimate, x, batch_size=64, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..core.analytic import GaussianMixture
from ..core.checks import check_choice, check_number
from ..core.sde import SDE, ScoreFn
from ..likelihood.dequantise import Quantiser, discrete_elbo
from ..likelihood.ode import FlowOptions, bits_per_dim, log_likelihood
from ..objectives.elbo import elbo

METHODS = ("ode", "elbo")


@dataclass
class NLLEstimator:
    """The per-sample NLL of one batch in nats (level units for discrete data) and the score calls per sample.

    method "ode": the PF-ODE's −log p̂ (`log_likelihood`), with a `scaler` (discrete data) the uniformly dequantised
    bound of `bits_per_dim` over `n_draws` draws; "elbo": the −ELBO bound (`elbo.elbo`: t_min, n_t, importance,
    control_variate), with a `scaler` `dequantise.discrete_elbo` (also dequantisation, tau). `options` are the chosen
    estimator's keywords. The ELBO adds its MC standard error `mc_sem`; an `oracle` (continuous data) the true NLL
    `oracle_nll` and, for the ODE, the prior mismatch log π(x_T) − log p_T(x_T)."""

    sde: SDE
    score_fn: ScoreFn
    method: str = "ode"
    scaler: Quantiser | None = None
    oracle: GaussianMixture | None = None
    n_draws: int = 5
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        self._flow = FlowOptions(**self.options) if self.method == "ode" else None  # checked here, once

    def __call__(self, xb: Tensor, generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], float]:
        sde, score_fn, scaler, oracle = self.sde, self.score_fn, self.scaler, self.oracle
        n_draws, options = self.n_draws, self.options
        rows: dict[str, Tensor] = {}
        if self.method == "elbo":
            res = (
                discrete_elbo(sde, score_fn, xb, scaler, n_draws=n_draws, generator=generator, **options)
                if scaler is not None
                else elbo(sde, score_fn, xb, generator=generator, **options)
            )
            rows["nll"], rows["mc_sem"], nfe = res.nll, res.sem, res.nfe
        elif scaler is not None:
            res = bits_per_dim(sde, score_fn, xb, scaler, n_draws, generator, self._flow)
            rows["nll"], nfe = res.bpd * xb[0].numel() * math.log(2), res.nfe / n_draws
        else:
            res = log_likelihood(sde, score_fn, xb, self._flow, generator)
            rows["nll"], nfe = -res.log_p, res.nfe
            if oracle is not None:
                p_T = oracle.marginal(sde, sde.T)
                rows["mismatch"] = res.prior_logp.double() - p_T.log_prob(res.z.flatten(1).double())
        if oracle is not None and scaler is None:
            rows["oracle_nll"] = -oracle.log_prob(xb.flatten(1).double())
        return {k: v.detach().double().cpu() for k, v in rows.items()}, nfe


def per_sample_nll(
    estimate: NLLEstimator,
    x: Tensor,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[dict[str, Tensor], Tensor]:
    """The rows of `estimate` per sample of x (float64, CPU), in batches of `batch_size`, and the score calls per
    sample of each batch."""
    check_number("batch_size", batch_size, integer=True, ge=1)
    rows: dict[str, list[Tensor]] = {}
    nfe = []
    desc = f"likelihood ({estimate.method})"
    for xb in tqdm(x.split(batch_size), desc=desc, unit="batch", disable=not progress):
        batch, calls = estimate(xb, generator)
        for key, value in batch.items():
            rows.setdefault(key, []).append(value)
        nfe.append(calls)
    return {k: torch.cat(v) for k, v in rows.items()}, torch.tensor(nfe, dtype=torch.float64)


def summarise(rows: dict[str, Tensor], nfe: Tensor, dim: int, discrete: bool, wall: float) -> dict[str, float]:
    """Mean NLL (nats per example) with its standard error over the examples, bits/dim for discrete data, mean score
    calls per sample, wall time; with the oracle's rows the true NLL and mean |error|/dim (and prior mismatch/dim)."""
    nll, n = rows["nll"], rows["nll"].shape[0]
    sem = float(nll.std() / math.sqrt(n)) if n > 1 else math.nan
    out = {"n": n, "dim": dim, "nll": float(nll.mean()), "nll_sem": sem, "nfe": float(nfe.mean())}
    out |= {"wall_s": wall, "wall_s_per_sample": wall / n}
    if "mc_sem" in rows:  # the ELBO's own MC error per sample, part of nll_sem
        out["mc_sem_per_sample"] = float(rows["mc_sem"].mean())
    if discrete:
        out |= {"bpd": out["nll"] / (dim * math.log(2)), "bpd_sem": sem / (dim * math.log(2))}
    if "oracle_nll" in rows:
        out["oracle_nll"] = float(rows["oracle_nll"].mean())
        out["abs_error_per_dim"] = float((nll - rows["oracle_nll"]).abs().mean()) / dim
    if "mismatch" in rows:
        out["prior_mismatch_per_dim"] = float(rows["mismatch"].abs().mean()) / dim
    return out


def evaluate_likelihood(
    estimate: NLLEstimator,
    x: Tensor,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Mean NLL of a data set x by `estimate`, in nats per example with its standard error, score calls per sample
    and wall time (`summarise`). Discrete data (a `scaler`) are also given in bits/dim (`bpd`, `bpd_sem`); continuous
    data in nats only (bits/dim of a density have no meaning). With an `oracle` (vector data) it adds the true NLL,
    the mean |NLL − true NLL|/D and, for the ODE, the part of it that is prior mismatch, mean
    |log π(x_T) − log p_T(x_T)|/D."""
    start = time.perf_counter()
    rows, nfe = per_sample_nll(estimate, x, batch_size, generator, progress)
    return summarise(rows, nfe, x[0].numel(), estimate.scaler is not None, time.perf_counter() - start)
