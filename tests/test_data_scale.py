"""`loss.sigma_data: auto` and `loss.p_mean: auto` (sde_diffusion.data.scale, apps.build.resolve_data_scale): σ_d is the
training data's per-dimension std, against closed forms; EDM's P_mean moves by log(σ_d/0.5); an explicit number wins;
the checkpoint records the numbers and a rebuilt run reads them."""

import logging
import math

import pytest
import torch
from apps import TINY, compose_job, run_job
from omegaconf import open_dict

from sde_diffusion.apps import build, load_run
from sde_diffusion.data import EightGaussians, MixtureData
from sde_diffusion.data.scale import data_std, isotropy_gap
from sde_diffusion.infra.checkpoint import load_checkpoint


def load(*overrides: str):
    cfg = compose_job("train", *overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def test_data_std_of_eight_gaussians_is_the_closed_form():
    # means on a circle of radius r: E[x_d²] = r²/2 per dimension, plus the components' variance std²
    assert data_std(EightGaussians(4.0, 0.15)) == pytest.approx(math.sqrt(4.0**2 / 2 + 0.15**2), rel=5e-3)


def test_data_std_of_the_mixture_is_the_oracles_root_mean_variance():
    data = MixtureData()
    cov = data.oracle.covariance  # the law of total covariance
    assert data_std(data) == pytest.approx(math.sqrt(float(cov.trace()) / cov.shape[0]), rel=1e-2)


def test_auto_takes_the_datas_std_and_moves_p_mean_and_the_score_gets_the_same_number():
    cfg = load("loss=edm", "data=mixture")
    built = build(cfg)
    sigma_data = data_std(built.data)
    assert cfg.loss.sigma_data == sigma_data and built.model.sigma_data == sigma_data
    assert cfg.loss.p_mean == pytest.approx(-1.2 + math.log(sigma_data / 0.5))
    assert cfg.score.sigma_data == sigma_data


def test_an_explicit_number_wins():
    cfg = load("loss=edm", "loss.sigma_data=1.5")
    assert build(cfg).model.sigma_data == 1.5 and cfg.loss.p_mean == pytest.approx(-1.2 + math.log(3.0))
    cfg = load("loss=edm", "loss.p_mean=0.25")
    build(cfg)
    assert cfg.loss.p_mean == 0.25 and cfg.loss.sigma_data == pytest.approx(math.sqrt(8.0225), rel=5e-3)


def test_the_checkpoint_records_the_number_and_a_rebuilt_run_reads_it(tmp_path):
    run_job("train", *TINY, "loss=edm", "logger=none", out=tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    config = load_checkpoint(path)["config"]
    sigma_data = config["loss"]["sigma_data"]
    assert isinstance(sigma_data, float) and sigma_data == pytest.approx(math.sqrt(8.0225), rel=5e-3)
    assert config["score"]["sigma_data"] == sigma_data and isinstance(config["loss"]["p_mean"], float)
    model, _, _, cfg = load_run(path)
    assert model.sigma_data == sigma_data and cfg.loss.sigma_data == sigma_data


class _Gaussian:
    """N(0, diag(variances)) as a data set (batch(n, generator))."""

    def __init__(self, *variances: float):
        self.std = torch.tensor(variances, dtype=torch.float64).sqrt()

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, len(self.std), generator=generator, dtype=torch.float64) * self.std


def test_isotropy_gap_against_the_closed_form_of_a_diagonal_gaussian():
    # diag(1, 4): E[xxᵀ]/σ_d² = diag(0.4, 1.6) with σ_d² = 2.5, so the gap is ‖diag(−0.6, 0.6)‖_F/√2 = 0.6
    assert isotropy_gap(_Gaussian(1.0, 4.0), n=200_000) == pytest.approx(0.6, abs=0.01)
    assert isotropy_gap(_Gaussian(3.0, 3.0, 3.0), n=200_000) < 0.01
    assert isotropy_gap(_Gaussian(*[1.0] * 300)) is None  # past max_dim: not computed


def test_auto_warns_on_data_whose_second_moment_is_isotropic(caplog):
    """8-Gaussians (covariance 8.02·I) is where σ_d = its std stalls EDM's loss; the 16-D mixture is far from it."""
    with caplog.at_level(logging.WARNING, logger="config"):
        build(load("loss=edm"))
    assert any("may not train" in r.getMessage() and "loss.sigma_data=1" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="config"):
        build(load("loss=edm", "data=mixture"))
    assert not [r for r in caplog.records if "may not train" in r.getMessage()]
