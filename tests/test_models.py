"""Networks keep their input's shape for vectors and images of 8, 28 and 32 pixels; ScoreModel applies the
documented inputs and output map of every parameterisation (eps, score, x0, v), checked against the exact oracle's
score; an export records the parameterisation."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from sde_diffusion import VESDE, VPSDE, LinearBeta, SubVPSDE
from sde_diffusion.apps import load_run
from sde_diffusion.apps.build import build
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.core.sde import RectifiedFlowSDE
from sde_diffusion.infra.checkpoint import export_safetensors
from sde_diffusion.models import MLP, ScoreModel, UNet
from sde_diffusion.models.unet import Attention


@pytest.mark.parametrize("shape", [(2,), (16,), (1, 4, 4)])
@pytest.mark.parametrize("features", ["fourier", "sinusoidal"])
def test_mlp_keeps_the_shape_and_depends_on_time(shape, features):
    torch.manual_seed(0)
    net = MLP(shape, hidden=32, layers=2, time_features=features)
    x = torch.randn(5, *shape)
    y0, y1 = net(x, torch.zeros(5)), net(x, torch.full((5,), 0.5))
    assert y0.shape == x.shape and not torch.allclose(y0, y1)


@pytest.mark.parametrize(
    "shape, mults, attention",
    [
        ((1, 8, 8), (1, 2), True),
        ((1, 8, 8), (1, 2), False),
        ((1, 28, 28), (1, 2, 2), True),
        ((3, 32, 32), (1, 2, 2), True),
    ],
)
def test_unet_keeps_the_shape_for_8_28_and_32_pixels(shape, mults, attention):
    torch.manual_seed(0)
    net = UNet(shape, channels=16, mults=mults, attention=attention)
    assert any(isinstance(m, Attention) for m in net.modules()) == attention
    x = torch.randn(2, *shape)
    assert torch.equal(net(x, torch.rand(2)), torch.zeros_like(x))  # zero-initialised output layer
    nn.init.normal_(net.conv_out.weight)
    y0, y1 = net(x, torch.zeros(2)), net(x, torch.ones(2))
    assert y0.shape == x.shape and not torch.allclose(y0, y1)
    y0.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_arguments_raise_value_errors_naming_the_parameter():
    with pytest.raises(ValueError, match="shape"):
        UNet((8, 8))
    with pytest.raises(ValueError, match="channels"):
        UNet((1, 8, 8), channels=12, groups=8)
    with pytest.raises(ValueError, match="time_features"):
        MLP((2,), time_features="learned")
    with pytest.raises(ValueError, match="parameterization.*velocity"):
        ScoreModel(MLP((2,)), VPSDE(), parameterization="velocity")


class _OracleEps(nn.Module):
    """The exact ε-predictor ε*(x, t) = −σ(t)∇log p_t(x), reading the documented inputs (c_in·x, t/T)."""

    def __init__(self, gm, sde):
        super().__init__()
        self.score, self.sde = gm.score_fn(sde), sde

    def forward(self, x_in, tau):
        t = tau * self.sde.T
        s, sigma = self.sde.scale(t), self.sde.sigma(t)
        x = x_in * torch.sqrt(s**2 + sigma**2)[:, None]
        return -sigma[:, None] * self.score(x, t)


@pytest.mark.parametrize("sde", [VPSDE(LinearBeta()), SubVPSDE(LinearBeta()), VESDE(0.01, 50.0, T=2.0)])
def test_score_model_of_the_exact_eps_predictor_is_the_exact_score(sde):
    gm = GaussianMixture(
        torch.tensor([0.3, 0.7]), torch.tensor([[-2.0, 0.0], [1.0, 1.0]]), 0.2 * torch.eye(2).expand(2, 2, 2)
    )
    model = ScoreModel(_OracleEps(gm, sde), sde)
    x = torch.randn(64, 2, dtype=torch.float64) * 3
    t = torch.rand(64, dtype=torch.float64) * sde.T * 0.99 + 0.01
    assert torch.allclose(model(x, t), gm.score_fn(sde)(x, t), rtol=1e-9, atol=1e-9)


class _LinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x, tau):
        return self.linear(x)


def test_score_parameterization_passes_the_network_output_through():
    sde, net = VESDE(), _LinearNet()
    model = ScoreModel(net, sde, parameterization="score")
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    c_in = torch.rsqrt(1 + sde.sigma(t) ** 2)[:, None]
    assert torch.allclose(model(x, t), net.linear(c_in * x))


class _OracleNet(nn.Module):
    """The network output that makes each parameterisation exact, computed from its documented inputs only: x0 reads
    (c_in x̃, c_noise = ¼ log σ̃) and returns F* = (D* − c_skip x̃)/c_out; v reads (z, t/T) and returns
    v* = (ε̂* − b z)/a; D* and ε̂* from the oracle's exact score (Tweedie)."""

    def __init__(self, gm, sde, parameterization, sigma_data=1.0):
        super().__init__()
        self.score, self.sde, self.kind, self.sd = gm.score_fn(sde), sde, parameterization, sigma_data

    def forward(self, x_in, label):
        if self.kind == "x0":
            sigma_t = torch.exp(4 * label)
            t = self.sde.log_snr_inverse(-torch.log(sigma_t))
            x_tilde = x_in * torch.sqrt(sigma_t**2 + self.sd**2)[:, None]
            s = self.sde.scale(t)[:, None]
            denoised = (s * x_tilde + self.sde.sigma(t)[:, None] ** 2 * self.score(s * x_tilde, t)) / s
            st = sigma_t[:, None]
            c_skip, c_out = self.sd**2 / (st**2 + self.sd**2), st * self.sd / torch.sqrt(st**2 + self.sd**2)
            return (denoised - c_skip * x_tilde) / c_out
        t = label * self.sde.T
        s, sigma = self.sde.scale(t)[:, None], self.sde.sigma(t)[:, None]
        norm = torch.sqrt(s**2 + sigma**2)
        eps_hat = -sigma * self.score(x_in * norm, t)
        return (eps_hat - sigma / norm * x_in) / (s / norm)


@pytest.mark.parametrize("parameterization", ["x0", "v"])
@pytest.mark.parametrize(
    "sde", [VPSDE(LinearBeta()), SubVPSDE(LinearBeta()), VESDE(0.01, 50.0, T=2.0), RectifiedFlowSDE()]
)
def test_each_parameterisation_of_the_oracle_optimum_is_the_exact_score(sde, parameterization):
    gm = GaussianMixture(
        torch.tensor([0.3, 0.7]), torch.tensor([[-2.0, 0.0], [1.0, 1.0]]), 0.2 * torch.eye(2).expand(2, 2, 2)
    )
    model = ScoreModel(_OracleNet(gm, sde, parameterization, 1.5), sde, parameterization, sigma_data=1.5)
    x = torch.randn(64, 2, dtype=torch.float64) * 3
    t = torch.rand(64, dtype=torch.float64) * sde.T * 0.9 + 0.05 * sde.T
    torch.testing.assert_close(model(x, t), gm.score_fn(sde)(x, t), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("score", [{}, {"parameterization": "x0", "sigma_data": 2.5}, {"parameterization": "v"}])
def test_export_records_the_parameterisation_and_a_config_without_one_loads_as_eps(tmp_path, score):
    config = {
        "sde": {"_target_": "sde_diffusion.core.sde.VPSDE"},
        "data": {"_target_": "sde_diffusion.data.EightGaussians"},
        "model": {"_target_": "sde_diffusion.models.MLP", "hidden": 16, "layers": 1},
        "score": {"_target_": "sde_diffusion.models.ScoreModel", **score},
    }
    model = build(OmegaConf.create(config)).model
    export_safetensors(model, config, tmp_path)
    loaded = load_run(tmp_path)[0]
    assert loaded.parameterization == score.get("parameterization", "eps")
    assert loaded.sigma_data == score.get("sigma_data", 1.0)
    x, t = torch.randn(8, 2), torch.rand(8) * 0.9 + 0.05
    assert torch.equal(loaded(x, t), model(x, t))
