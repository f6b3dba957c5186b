"""Likelihood of a data set: the per-example NLL of the estimators (the PF-ODE's `likelihood.log_likelihood` and
`bits_per_dim`, the −ELBO of `elbo.elbo` and `dequantise.discrete_elbo`), batch by batch, and its summary with
standard errors and, where an oracle knows it, the true NLL (Song et al. 2021, App. D.2; Kingma et al. 2021)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .analytic import GaussianMixture
from .dequantise import Quantiser, discrete_elbo
from .elbo import elbo
from .likelihood import bits_per_dim, log_likelihood
from .sde import SDE, ScoreFn

METHODS = ("ode", "elbo")


def _batch_nll(
    sde: SDE,
    score_fn: ScoreFn,
    xb: Tensor,
    scaler: Quantiser | None,
    oracle: GaussianMixture | None,
    method: str,
    n_draws: int,
    generator: torch.Generator | None,
    options: dict[str, Any],
) -> tuple[dict[str, Tensor], float]:
    """Per-sample NLL in nats of one batch (level units for discrete data) and the score calls per sample; the ELBO
    adds its MC standard error `mc_sem`, an oracle (continuous data) the true NLL, the ODE the prior mismatch."""
    rows: dict[str, Tensor] = {}
    if method == "elbo":
        res = (
            discrete_elbo(sde, score_fn, xb, scaler, n_draws=n_draws, generator=generator, **options)
            if scaler is not None
            else elbo(sde, score_fn, xb, generator=generator, **options)
        )
        rows["nll"], rows["mc_sem"], nfe = res.nll, res.sem, res.nfe
    elif scaler is not None:
        res = bits_per_dim(sde, score_fn, xb, scaler, n_draws=n_draws, generator=generator, **options)
        rows["nll"], nfe = res.bpd * xb[0].numel() * math.log(2), res.nfe / n_draws
    else:
        res = log_likelihood(sde, score_fn, xb, generator=generator, **options)
        rows["nll"], nfe = -res.log_p, res.nfe
        if oracle is not None:
            p_T = oracle.marginal(sde, sde.T)
            rows["mismatch"] = res.prior_logp.double() - p_T.log_prob(res.z.flatten(1).double())
    if oracle is not None and scaler is None:
        rows["oracle_nll"] = -oracle.log_prob(xb.flatten(1).double())
    return {k: v.detach().double().cpu() for k, v in rows.items()}, nfe


def per_sample_nll(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    scaler: Quantiser | None = None,
    oracle: GaussianMixture | None = None,
    batch_size: int = 64,
    n_draws: int = 5,
    generator: torch.Generator | None = None,
    method: str = "ode",
    progress: bool = False,
    **options: Any,
) -> tuple[dict[str, Tensor], Tensor]:
    """The rows of `evaluate_likelihood` per sample (float64, CPU) and the score calls per sample of each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rows: dict[str, list[Tensor]] = {}
    nfe = []
    for xb in tqdm(x.split(batch_size), desc=f"likelihood ({method})", unit="batch", disable=not progress):
        batch, calls = _batch_nll(sde, score_fn, xb, scaler, oracle, method, n_draws, generator, options)
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
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    scaler: Quantiser | None = None,
    oracle: GaussianMixture | None = None,
    batch_size: int = 64,
    n_draws: int = 5,
    generator: torch.Generator | None = None,
    method: str = "ode",
    progress: bool = False,
    **options: Any,
) -> dict[str, float]:
    """Mean NLL of a data set in nats per example with its standard error, score calls per sample and wall time.

    method "ode": the PF-ODE's −log p̂ (`log_likelihood`; `options` go to it), with a `scaler` (discrete data) the
    uniformly dequantised bound of `bits_per_dim` over `n_draws` draws; "elbo": the −ELBO bound (`elbo.elbo`:
    t_min, n_t, importance), with a `scaler` `dequantise.discrete_elbo` (also dequantisation, tau). Discrete data are
    also given in bits/dim (`bpd`, `bpd_sem`); continuous data in nats only (bits/dim of a density have no meaning).
    With an `oracle` (vector data) it adds the true NLL, the mean |NLL − true NLL|/D and, for the ODE, the part of it
    that is prior mismatch, mean |log π(x_T) − log p_T(x_T)|/D. x is split into batches of `batch_size`.
    """
    start = time.perf_counter()
    rows, nfe = per_sample_nll(
        sde, score_fn, x, scaler, oracle, batch_size, n_draws, generator, method, progress, **options
    )
    return summarise(rows, nfe, x[0].numel(), scaler is not None, time.perf_counter() - start)
