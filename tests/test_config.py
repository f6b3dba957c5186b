"""Every config in every group composes and instantiates; every bad value fails up front, in the train app itself
(run in this process), as one line naming the key, the value and what is allowed, before any output exists."""

from pathlib import Path

import numpy as np
import pytest
import torch
from apps import ROOT, TINY, compose_job, run_job
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf, open_dict
from PIL import Image

from sde_diffusion.apps import ConfigError, build, build_evaluator, start_tracker
from sde_diffusion.models import ScoreModel
from sde_diffusion.sampling import check_sampler
from sde_diffusion.sde import SDE, VESDE, VPSDE

CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def load(*overrides: str, config_name: str = "train"):
    cfg = compose_job(config_name, *overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def npy_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    return str(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("images")
    for i, pixels in enumerate(np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)):
        Image.fromarray(pixels).save(root / f"{i}.png")
    return str(root)


def check_builds(cfg) -> None:
    """Instantiate, and run the score model on one batch: output of the data's shape, finite."""
    built = build(cfg)
    build_evaluator(cfg, built.sde)
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
def test_every_option_composes_and_builds(group, npy_file, image_folder):
    for option in options(group):
        extra = {
            "tensor_file": [f"data.path={npy_file}"],
            "image_folder": [f"data.path={image_folder}", "model=unet"],
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
        build_evaluator(cfg, build(cfg).sde)
        assert set(cfg.eval.samplers.euler_maruyama) == {"name", "steps", "eps", "denoise", "options"}


def test_every_experiment_preset_composes_and_builds():
    presets = options("experiment")
    assert presets == [
        "compare/beta_search",
        "compare/oracle_study",
        "compare/sde_vs_ode",
        "train/beta_search_train",
        "train/digits_cond",
        "train/digits_unet",
        "train/fast_eval",
        "train/schedule_sweep",
    ]
    for option in (p for p in presets if p.startswith("train/")):
        check_builds(load(f"experiment={option}"))
    study = load("experiment=compare/oracle_study", config_name="compare")
    assert study.name == "oracle_study" and set(study.schedules) == {"linear", "cosine", "constant"}
    search = load("experiment=compare/beta_search", config_name="compare")
    assert (search.objective, search.sampler.name, search.sampler.options.spacing) == ("energy", "dpm_solver",
                                                                                        "time_uniform")  # fmt: skip
    versus = load("experiment=compare/sde_vs_ode", config_name="compare")
    assert set(versus.perturbations) == {"bias_small", "bias_large"}
    for entry in OmegaConf.to_container(versus.grids.sde_vs_ode):  # every sampler and option of the study exists
        for steps in entry["steps"]:
            check_sampler(entry["name"], steps=steps, eps=versus.eps, options=entry.get("options", {}), sde_type=VPSDE,
                          T=1.0)  # fmt: skip


@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_every_logger_starts_and_finishes(logger, tmp_path):
    with start_tracker(load(f"logger={logger}"), tmp_path, job_type="train") as tracker:
        assert tracker.active == (logger == "wandb")


def test_every_app_shares_the_hydra_defaults_and_records_failures():
    for name in sorted(p.stem for p in CONF.glob("*.yaml")):  # every app's config
        hydra = compose_job(name).hydra
        assert hydra.callbacks.record_failure._target_ == "sde_diffusion.apps.RecordFailure"
        assert (
            hydra.run.dir.startswith(f"outputs/{name}/")
            and "train.resume" in hydra.job.config.override_dirname.exclude_keys
        )


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


def test_config_round_trips_through_a_plain_dict():
    cfg = load("sde=subvp", "schedule=cosine")
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(build(OmegaConf.create(plain)).sde, type(build(cfg).sde))


# ---------------------------------------------------------------------------------------------------- bad configs


def write_data(path: Path, kind: str) -> str:
    arrays = {
        "empty": np.zeros((0, 2), np.float32),
        "nan": np.array([[0.0, 1.0], [np.nan, 2.0]] * 10, np.float32),
        "rank3": np.zeros((20, 2, 2), np.float32),
    }
    np.save(path, arrays[kind])
    return str(path)


# overrides -> the error line's start: the key and the value, then what is allowed (texts it must hold)
BAD_CONFIGS = {
    "train.steps=0": ("train.steps=0", "must be an int >= 1"),
    "train.batch_size=-1": ("train.batch_size=-1", "must be an int >= 1"),
    "train.lr=0": ("train.lr=0", "must be a number > 0"),
    "train.lr=abc": ("train.lr='abc'", "must be a number > 0"),
    "train.ema_decay=1.0": ("train.ema_decay=1.0", "must be a number in [0, 1)"),
    "loss.weighting=foo": ("loss.weighting='foo'", "must be one of ['simple', 'sigma2', 'likelihood', 'min_snr'"),
    "train.nan_policy=ignore": ("train.nan_policy='ignore'", "must be one of ['stop', 'skip']"),
    "train.precision=fp8": ("train.precision='fp8'", "must be one of ['fp32', 'bf16', 'fp16']"),
    "train.device=tpu": ("train.device='tpu'", "must be 'auto' or a torch device"),
    "train.resume=/no/such/file.pt": ("train.resume='/no/such/file.pt'", "the path of an existing checkpoint file"),
    "loss.t_min=0": ("loss.t_min=0", "must be a number in (0, 1)"),
    "train.keep_last=-1": ("train.keep_last=-1", "must be an int >= 0"),
    "train.threads=0": ("train.threads=0", "must be an int >= 1 or None"),
    "train.ckpt_every=-5": ("train.ckpt_every=-5", "must be an int >= 0"),
    "eval.n_samples=1": ("eval.n_samples=1", "must be an int >= 2"),
    "eval.floor_repeats=1": ("eval.floor_repeats=1", "must be an int >= 2"),
    "eval.samplers.euler_maruyama.name=leapfrog": ("eval.samplers.euler_maruyama.name='leapfrog'", "'euler_maruyama'"),
    "eval.samplers.euler_maruyama.steps=0": ("eval.samplers.euler_maruyama.steps=0", "an int >= 1"),
    "eval.samplers.dpm_solver.eps=2.0": ("eval.samplers.dpm_solver.eps=2.0", "a number in (0, T=1)"),
    "sde.T=0.001": ("eval.samplers.euler_maruyama.eps=0.001", "(0, T=0.001)"),
    "eval.samplers.dpm_solver.options.order=5": ("eval.samplers.dpm_solver.options.order=5", "one of [1, 2, 3]"),
    "+eval.samplers.dpm_solver.options.ordr=2": ("eval.samplers.dpm_solver.options.ordr=2", "takes options: order"),
    "sde=ve sampler@eval.samplers.euler_maruyama=ancestral": (
        "eval.samplers.euler_maruyama.name='ancestral'",
        "needs a VPSDE, got VESDE",
    ),
    "logger.mode=sometimes": ("logger.mode='sometimes'", "must be one of ['offline', 'online', 'disabled']"),
    "schedule.beta_min=-0.1": ("schedule (sde_diffusion.schedules.LinearBeta)", "beta_min must be > 0, got -0.1"),
    "schedule.beta_min=5 schedule.beta_max=1": ("schedule (", "beta_max must be >= beta_min"),
    "schedule=cosine schedule.s=0": ("schedule (sde_diffusion.schedules.CosineBeta)", "s must be > 0, got 0"),
    "schedule=constant schedule.beta=0": ("schedule (", "beta must be > 0, got 0"),
    "sde=ve sde.sigma_max=0.001": ("sde (sde_diffusion.sde.VESDE)", "sigma_max must be > sigma_min"),
    "model.hidden=0": ("model (sde_diffusion.models.MLP)", "hidden and layers must be >= 1"),
    "data=tensor_file": ("data.path='???'", "a value is required: add data.path=... to the command line"),
    "data=tensor_file data.path=/no/such.npy": ("data (sde_diffusion.data.TensorFile)", "/no/such.npy: not found"),
    "data=tensor_file data.path={empty}": ("data (", "{empty}: empty array"),
    "data=tensor_file data.path={nan}": ("data (", "{nan}: contains NaN or Inf"),
    "data=tensor_file data.path={rank3}": ("data (", "{rank3}: shape (20, 2, 2) has rank 3; allowed: (N, D) or"),
    "data._target_=sde_diffusion.data.Nope": ("data (sde_diffusion.data.Nope)", "Error loading"),
}


@pytest.mark.parametrize("overrides", list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_key_value_and_what_is_allowed(overrides, tmp_path):
    files = {kind: write_data(tmp_path / f"{kind}.npy", kind) for kind in ("empty", "nan", "rank3")}
    start, allowed = (text.format(**files) for text in BAD_CONFIGS[overrides])
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_job("train", *TINY, *overrides.format(**files).split(), out=out)
    line = str(info.value)
    assert line.startswith(f"config error: {start}") and allowed in line and "\n" not in line, line
    assert not out.exists()  # no checkpoint, metrics, plots or wandb run


@pytest.mark.parametrize(
    "override", ["data=nope", "sde=nope", "schedule=nope", "sampler@eval.samplers.euler_maruyama=nope"]
)
def test_unknown_group_option_lists_the_available_ones(override):
    group = override.split("=")[0].split("@")[0]
    with pytest.raises(MissingConfigException) as info:
        load(override)
    assert f"Could not find '{group}/nope'" in str(info.value) and f"Available options in '{group}'" in str(info.value)
