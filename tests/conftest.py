"""Test-wide settings (one torch thread per xdist worker, wandb kept offline inside a temp dir) and the builders
several test files share: the four SDEs, points diffused from an oracle, a small MLP Trainer on eight_gaussians, and a
data set with NaN batches."""

import os

import pytest
import torch

from sde_diffusion import SDE, VESDE, VPSDE, CosineBeta, GaussianMixture, SubVPSDE
from sde_diffusion.data import EightGaussians
from sde_diffusion.infra.runtime import seed_everything
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.training import Trainer

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _wandb_offline(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb_home")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ[var] = str(root / var.lower())
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    yield


SDES = {"vp": VPSDE(), "vp_cosine": VPSDE(CosineBeta()), "subvp": SubVPSDE(), "ve": VESDE()}


def diffused(mix: GaussianMixture, sde: SDE, t: float | torch.Tensor, n: int, generator: torch.Generator):
    """(x_t, t): n points x_t = s(t)x₀ + σ(t)ε (Song et al. 2021, eq. 29), x₀ ~ `mix`, at time t (a number or (n,)
    times), in float64."""
    t = torch.as_tensor(t, dtype=torch.float64).expand(n)
    x0 = mix.sample(n, generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return sde.scale(t)[:, None] * x0 + sde.sigma(t)[:, None] * noise, t


def mlp_trainer(steps: int = 30, init_seed: int = 0, data: EightGaussians | None = None, **kw) -> Trainer:
    """A 2x32 MLP score model on eight_gaussians (or `data`; VP, linear β), batch 64, 5 warm-up steps; `init_seed`
    seeds the initial weights, `kw` overrides any other Trainer argument."""
    seed_everything(init_seed)
    data = EightGaussians() if data is None else data
    model = ScoreModel(MLP(data.shape, hidden=32, layers=2), VPSDE())
    return Trainer(model, VPSDE(), data, **{"steps": steps, "batch_size": 64, "warmup": 5, "progress": False, **kw})


class NaNAt(EightGaussians):
    """Eight Gaussians whose batches number `at` (1-based calls of `batch`) are all NaN: a data fault mid-run.
    The train app builds it from the command line: `data._target_=conftest.NaNAt +data.at=[13]`."""

    def __init__(self, at: list[int]):
        super().__init__()
        self.at, self.calls = set(at), 0

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        x = super().batch(n, generator)
        return x.fill_(float("nan")) if self.calls in self.at else x
