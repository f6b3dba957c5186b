"""The DSM loss against closed forms: with the exact score of a Gaussian it equals its analytic minimum
∫ λ(t) Σᵢ s²λᵢ/(s²λᵢ + σ²) dt; perturbing the score raises it by exactly the explicit score-matching term
E λσ²‖δ‖² (DSM = ESM + const, Vincent 2011); it is per-sample and shape-agnostic."""

import pytest
import torch
from scipy.integrate import quad
from torch import nn

from sde_diffusion import VESDE, VPSDE, CosineBeta, LinearBeta, SubVPSDE, eight_gaussians
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.objectives import Objective, build_objective

SDES = {
    "vp": VPSDE(LinearBeta()),
    "subvp": SubVPSDE(CosineBeta()),
    "ve": VESDE(0.01, 50.0),
}


def dsm_loss(sde, model, x0, t_min=1e-5, weighting="simple", generator=None):
    """The DSM loss of Song et al. (2021, eq. 7), t ~ U(t_min, T): `weighting` under its base density."""
    return build_objective(sde, weighting, t_min=t_min)(model, x0, generator=generator)


class Recorder(nn.Module):
    """A score function as a model that remembers the (x_t, t) it was called with."""

    def __init__(self, score_fn):
        super().__init__()
        self.score_fn = score_fn

    def forward(self, x, t):
        self.x, self.t = x, t
        return self.score_fn(x.flatten(1), t).view_as(x)


def _gaussian():
    rot = torch.tensor([[0.8, -0.6], [0.6, 0.8]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([0.5, 0.05], dtype=torch.float64)) @ rot.T
    return GaussianMixture(torch.ones(1), torch.tensor([[1.0, -2.0]]), cov[None]), torch.tensor([0.5, 0.05])


def _expected_minimum(sde, lam_data, weighting, eps):
    """(1/(T − eps)) ∫ λ(t) Σᵢ s²λᵢ/(s²λᵢ + σ²) dt: E‖σ∇log p_t(x_t) + ε‖² = tr Var(ε | x_t) for a Gaussian."""

    def integrand(t):
        tt = torch.tensor([t], dtype=torch.float64)
        s, sigma, g = sde.scale(tt), sde.sigma(tt), sde.g(tt)
        m = float((s**2 * lam_data / (s**2 * lam_data + sigma**2)).sum())
        return {"simple": m / len(lam_data), "sigma2": m, "likelihood": m * float(g / sigma) ** 2}[weighting]

    val, _ = quad(integrand, eps, sde.T, limit=500, points=[eps * 10, eps * 100, 0.01, 0.1])
    return val / (sde.T - eps)


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("weighting", ["simple", "sigma2", "likelihood"])
def test_exact_score_reaches_the_analytic_minimum(name, weighting):
    sde, eps = SDES[name], 1e-3
    gm, lam = _gaussian()
    x0 = gm.sample(200_000, torch.Generator().manual_seed(0))
    loss = dsm_loss(sde, Recorder(gm.score_fn(sde)), x0, eps, weighting, torch.Generator().manual_seed(1))
    assert loss.shape == (x0.shape[0],)
    expected = _expected_minimum(sde, lam.double(), weighting, eps)
    se = loss.std() / len(loss) ** 0.5
    assert abs(loss.mean() - expected) < 4 * se, (loss.mean().item(), expected, se.item())


def _perturbations(sde, gm):
    exact = gm.score_fn(sde)
    other_sde = type(sde)(LinearBeta(0.1, 15.0)) if isinstance(sde, VPSDE | SubVPSDE) else VESDE(0.01, 40.0)
    return {
        "scaled": lambda x, t: 1.1 * exact(x, t),
        "shifted": lambda x, t: exact(x, t) + 0.3,
        "wrong_time": lambda x, t: exact(x, 0.9 * t),
        "other_sde": gm.score_fn(other_sde),
    }


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("weighting", ["simple", "likelihood"])
def test_any_perturbation_raises_the_loss_by_the_explicit_score_matching_term(name, weighting):
    sde, gm = SDES[name], eight_gaussians()
    x0 = gm.sample(50_000, torch.Generator().manual_seed(0))
    exact = Recorder(gm.score_fn(sde))
    base = dsm_loss(sde, exact, x0, 1e-3, weighting, torch.Generator().manual_seed(1))
    x_t, t = exact.x, exact.t
    lam = {"simple": 1 / x0.shape[1], "likelihood": (sde.g(t) / sde.sigma(t)) ** 2}[weighting]
    for label, score in _perturbations(sde, gm).items():
        loss = dsm_loss(sde, Recorder(score), x0, 1e-3, weighting, torch.Generator().manual_seed(1))
        excess = loss - base
        esm = lam * sde.sigma(t) ** 2 * (score(x_t, t) - exact.score_fn(x_t, t)).square().sum(1)
        se = (excess - esm).std() / len(excess) ** 0.5
        assert excess.mean() > 0 and esm.mean() > 10 * se, label
        assert abs(excess.mean() - esm.mean()) < 4 * se, (label, excess.mean().item(), esm.mean().item())


def test_loss_is_per_sample_and_shape_agnostic():
    sde = VPSDE()
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 4), torch.eye(4)[None])
    x0 = gm.sample(16, torch.Generator().manual_seed(0))
    flat = dsm_loss(sde, Recorder(gm.score_fn(sde)), x0, generator=torch.Generator().manual_seed(1))
    rec = Recorder(gm.score_fn(sde))
    image = dsm_loss(sde, rec, x0.view(16, 1, 2, 2), generator=torch.Generator().manual_seed(1))
    assert rec.x.shape == (16, 1, 2, 2) and torch.allclose(flat, image)
    assert (rec.t >= 1e-5).all() and (rec.t <= sde.T).all()
    x1 = x0.clone()
    x1[3] += 10.0
    moved = dsm_loss(sde, Recorder(gm.score_fn(sde)), x1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(moved[torch.arange(16) != 3], flat[torch.arange(16) != 3]) and moved[3] != flat[3]


def test_bad_weighting_and_t_min_raise():
    x0 = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(VPSDE(), lambda x, t: x, x0, weighting="snr")
    with pytest.raises(ValueError, match="t_min.*1.0"):
        dsm_loss(VPSDE(), lambda x, t: x, x0, t_min=1.0)
    with pytest.raises(ValueError, match="t_min.*1.0"):
        Objective(VPSDE(), t_min=1.0)
