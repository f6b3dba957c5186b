"""Every config in every group composes, validates and instantiates; bad values fail up front naming the key."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sde_diffusion.config import ConfigError, build, start_tracker, validate
from sde_diffusion.models import ScoreModel
from sde_diffusion.sde import SDE, VESDE, VPSDE

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def load(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def npy_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    return str(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> str:
    from PIL import Image

    path = tmp_path_factory.mktemp("images")
    for i in range(10):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return str(path)


def check_builds(cfg) -> None:
    """Validate, instantiate, and run the score model on one batch: output of the data's shape, finite."""
    validate(cfg)
    built = build(cfg)
    assert isinstance(built.sde, SDE) and isinstance(built.model, ScoreModel)
    x = built.data.batch(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, *built.data.shape)
    score = built.model(x, torch.full((4,), 0.5))
    assert score.shape == x.shape and bool(torch.isfinite(score).all())


def test_default_is_the_main_job():
    cfg = load()
    assert cfg.data._target_.endswith("EightGaussians") and cfg.sde._target_.endswith("VPSDE")
    assert [s.name for s in cfg.eval.samplers.values()][0] == "euler_maruyama"
    assert cfg.eval.samplers.euler_maruyama.steps == 1000
    assert cfg.logger.mode == "offline" and cfg.train.resume is None


@pytest.mark.parametrize("group", ["data", "schedule", "sde", "model"])
def test_every_option_composes_and_builds(group, npy_file, image_dir):
    for option in options(group):
        extra = {
            "tensor_file": [f"data.path={npy_file}"],
            "image_folder": [f"data.path={image_dir}"],
            "unet": ["data=digits"],
        }.get(option, [])
        check_builds(load(f"{group}={option}", *extra))


def test_schedule_reaches_the_sde_and_ve_ignores_it():
    built = build(load("schedule=constant", "schedule.beta=3.0"))
    assert isinstance(built.sde, VPSDE) and built.sde.schedule.beta(torch.tensor(0.3)).item() == pytest.approx(3.0)
    assert isinstance(build(load("sde=ve", "schedule=cosine")).sde, VESDE)


def test_every_sampler_file_is_a_valid_eval_sampler():
    for option in options("sampler"):
        cfg = load(f"sampler@eval.samplers.euler_maruyama={option}")
        validate(cfg)
        assert set(cfg.eval.samplers.euler_maruyama) >= {"name", "steps", "eps", "denoise", "options"}


def test_every_experiment_preset_composes_and_builds():
    for option in options("experiment"):
        check_builds(load(f"+experiment={option}"))


@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_every_logger_starts_and_finishes(logger, tmp_path):
    tracker = start_tracker(load(f"logger={logger}"), tmp_path)
    assert tracker.active == (logger == "wandb")
    tracker.finish()


class TinyNet(torch.nn.Module):
    """A user's own network, dropped in from the command line with model._target_."""

    def __init__(self, shape, width: int = 8):
        super().__init__()
        self.layer = torch.nn.Linear(shape[0] + 1, shape[0])

    def forward(self, x, tau):
        return self.layer(torch.cat([x, tau[:, None]], 1))


def test_users_own_class_drops_in():
    built = build(load(f"model._target_={__name__}.TinyNet", "~model.hidden", "~model.layers", "+model.width=4"))
    assert isinstance(built.model.net, TinyNet)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.steps=0", "train.steps"),
        ("train.batch_size=-1", "train.batch_size"),
        ("train.lr=0", "train.lr"),
        ("train.lr=abc", "train.lr"),
        ("train.ema_decay=1.0", "train.ema_decay"),
        ("train.weighting=foo", "train.weighting"),
        ("train.nan_policy=ignore", "train.nan_policy"),
        ("train.device=tpu", "train.device"),
        ("train.resume=/no/such/file.pt", "train.resume"),
        ("train.loss_eps=0", "train.loss_eps"),
        ("schedule.beta_min=-0.1", "schedule.beta_min"),
        ("schedule.beta_max=0.05", "schedule.beta_max"),
        ("sde.T=0", "sde.T"),
        ("eval.n_samples=1", "eval.n_samples"),
        ("eval.samplers.euler_maruyama.name=leapfrog", "eval.samplers.euler_maruyama.name"),
        ("eval.samplers.euler_maruyama.steps=0", "eval.samplers.euler_maruyama.steps"),
        ("eval.samplers.dpm_solver.eps=2.0", "eval.samplers.dpm_solver.eps"),
    ],
)
def test_bad_value_is_one_error_naming_the_key(override, key):
    cfg = load(override)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert key in message and "\n" not in message
    assert message.startswith(f"config error: {key}=")


def test_schedule_and_sde_bounds():
    for overrides, key in [
        (["schedule=cosine", "schedule.s=0"], "schedule.s"),
        (["schedule=constant", "schedule.beta=0"], "schedule.beta"),
        (["sde=ve", "sde.sigma_max=0.001"], "sde.sigma_max"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(load(*overrides))


def test_missing_mandatory_value_and_failing_constructor_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path"):
        validate(load("data=tensor_file"))
    with pytest.raises(ConfigError, match=r"config error: data\.path='/no/such\.npy': the path of an existing"):
        validate(load("data=tensor_file", "data.path=/no/such.npy"))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 2, 2), dtype=np.float32))  # rank 3: not (N, D) or (N, C, H, W)
    with pytest.raises(ConfigError, match=r"config error: data \(sde_diffusion.data.TensorFile\): .*rank 3"):
        build(load("data=tensor_file", f"data.path={bad}"))


def test_config_round_trips_through_a_plain_dict():
    cfg = load("sde=subvp", "schedule=cosine")
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(build(OmegaConf.create(plain)).sde, type(build(cfg).sde))
