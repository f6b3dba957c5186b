"""Every config in every group composes and instantiates; every bad value fails up front, in the train app itself
(run in this process), as one line naming the key, the value and what is allowed, before any output exists."""

import inspect
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from apps import ROOT, TINY, compose_job, run_job
from hydra.errors import MissingConfigException
from hydra.utils import get_object
from omegaconf import OmegaConf, open_dict
from PIL import Image

from sde_diffusion.apps import ConfigError, apply_policy, build, build_evaluator, build_sde, start_tracker
from sde_diffusion.apps.keys import check_key_overrides
from sde_diffusion.core.sde import SDE, VESDE, VPSDE
from sde_diffusion.evaluation.evaluator import Evaluator
from sde_diffusion.models import ScoreModel
from sde_diffusion.sampling import SAMPLERS, SamplerRun, check_sampler

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
        assert set(cfg.eval.samplers.euler_maruyama) == {f.name for f in fields(SamplerRun)}


def test_every_experiment_preset_composes_and_builds():
    presets = options("experiment")
    assert set(presets) >= {
        "compare/beta_search",
        "compare/oracle_study",
        "compare/sde_vs_ode",
        "train/beta_search_train",
        "train/digits_cond",
        "train/digits_unet",
        "train/fast_eval",
        "train/schedule_sweep",
        "train/objective_sweep",
        "train/beta_sweep",
    }
    for option in (p for p in presets if p.startswith("train/")):
        check_builds(load(f"experiment={option}"))
    study = load("experiment=compare/oracle_study", config_name="compare")
    assert study.name == "oracle_study" and set(study.schedules) == {"linear", "cosine", "constant"}
    search = load("experiment=compare/beta_search", config_name="compare")
    assert (search.objective, search.sampler.name, search.sampler.options.spacing) == ("energy", "dpm_solver",
                                                                                        "time_uniform")  # fmt: skip
    versus = load("experiment=compare/sde_vs_ode", config_name="compare")
    assert set(versus.perturbations) == {"bias_small", "bias_large"} and versus.eval.n_samples == 2000
    for grid in options("grid"):  # every sampler and option of every grid of runs exists
        for entry in OmegaConf.to_container(load(f"grid={grid}", config_name="compare").grid.runs):
            for steps in entry["steps"]:
                check_sampler(entry["name"], steps=steps, t_min=entry.get("t_min", versus.t_min),
                              options=entry.get("options", {}),
                              sde_type=VPSDE, T=1.0)  # fmt: skip


@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_every_logger_starts_and_finishes(logger, tmp_path):
    with start_tracker(load(f"logger={logger}"), tmp_path, job_type="train") as tracker:
        assert tracker.active == (logger == "wandb")


def test_every_app_shares_the_hydra_defaults_and_records_failures():
    for name in sorted(p.stem for p in CONF.glob("*.yaml")):  # every app's config
        hydra = compose_job(name).hydra
        assert hydra.callbacks.record_failure._target_ == "sde_diffusion.apps.RecordFailure"
        assert hydra.callbacks.quiet_sweeps._target_ == "sde_diffusion.apps.app.QuietSweeps"
        assert hydra.hydra_logging.handlers.console.filters == ["setup_lines"]
        assert (
            hydra.run.dir.startswith(f"outputs/{name}/")
            and "train.resume" in hydra.job.config.override_dirname.exclude_keys
        )


APPS = ["train", "sample", "compare", "tune_timesteps", "inpaint", "likelihood"]  # export: no seed, device or sampling


def test_every_app_has_seed_device_and_threads_at_the_top_and_one_eval_node():
    for name in APPS:
        cfg = load(config_name=name)
        assert {"seed", "device"} <= set(cfg) and ("threads" in cfg or name == "train"), name
    train = load()
    assert (train.train.seed, train.train.device) == (train.seed, train.device)  # the Trainer's, from the top
    nodes = {name: load(config_name=name).eval for name in APPS[:3]}
    assert {name: sorted(node) for name, node in nodes.items()} == {name: sorted(nodes["train"]) for name in nodes}
    for node in nodes.values():  # every key is an argument of the one class they build
        assert set(node) - {"_target_"} <= set(inspect.signature(Evaluator).parameters)


def conf_nodes():
    """(file:key, node) of every config node that builds an object (`_target_`), in every file of conf/."""

    def walk(node, path):
        if "_target_" in node:
            yield path, node
        for key in node:
            child = node._get_node(key)
            if key not in ("defaults", "hydra") and OmegaConf.is_dict(child):
                yield from walk(child, f"{path}.{key}")

    for path in sorted(CONF.rglob("*.yaml")):
        if path.parent.name == "loss":
            continue  # the objective presets: differing from the default objective is their point
        yield from walk(OmegaConf.load(path), str(path.relative_to(CONF)))


# Values a config sets on purpose to something other than the Python default, and why (every other value a config
# restates must equal the default: one source, conf/ restating Python where a user reads it).
DIFFERS = {
    "logger/none.yaml.mode": "the file's whole point: no tracker",
    "logger/wandb.yaml.job_type": "null: each app records its own job_type",
    "schedule/constant.yaml.beta": "10 reaches B(T) >= 6.91 (N(0, I) prior) at T = 1; the class keeps 5",
    "train.yaml.eval.seed": "the evaluation draws apart from training's seed",
    "train.yaml.eval.mmd_samples": "MMD² is quadratic: 2000 of the 10 000 evaluation samples",
    "sample.yaml.eval.mmd_samples": "as train.yaml's",
    "train.yaml.guidance.seed": "guided samples apart from the evaluation's",
}


def test_conf_restates_python_defaults_only_where_equal():
    differ = {}
    for where, node in conf_nodes():
        params = inspect.signature(get_object(node._target_)).parameters
        for key, value in OmegaConf.to_container(node).items():
            default = params[key].default if key in params else inspect.Parameter.empty
            if default is inspect.Parameter.empty or (isinstance(value, str) and value.startswith("${")):
                continue  # required, not an argument (the app's own key), or set from elsewhere in the config
            if value != default and not (isinstance(value, list) and tuple(value) == default):
                differ[f"{where}.{key}"] = (value, default)
    for name in options("sampler"):  # a sampler file's options: its spec's defaults (read off the signature)
        sc = OmegaConf.to_container(OmegaConf.load(CONF / "sampler" / f"{name}.yaml"))
        defaults = SAMPLERS[sc["name"]].defaults()
        differ |= {
            f"sampler/{name}.yaml.options.{k}": (v, defaults[k])
            for k, v in sc.get("options", {}).items()
            if v is not None and v != defaults[k]  # null: the spec's default for the run's steps
        }
    assert differ.keys() == DIFFERS.keys(), differ


def test_a_warning_while_building_names_the_config_node_not_hydra(caplog):
    cfg = load("schedule=constant", "schedule.beta=1.0")  # B(T) = 1: x_T keeps e^(-1/2) of x₀
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        build_sde(cfg)
    assert not leaked
    (record,) = [r for r in caplog.records if r.name == "config"]
    assert record.getMessage().startswith("sde (sde_diffusion.core.sde.VPSDE): PriorMismatchWarning: prior mismatch")


def test_apps_run_one_torch_thread_by_default():
    before = torch.get_num_threads()
    try:
        apply_policy(None)
        assert torch.get_num_threads() == before
        apply_policy(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match="^config error: train.threads=0: "):
            apply_policy(0, "train.threads")
    finally:
        torch.set_num_threads(before)


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


# overrides -> the error line's start (the key and the value), then what else it must name (a node's argument, a path);
# the words after them are the library's own, pinned only by the few ONE_LINE sentences below
BAD_CONFIGS = {
    "train.steps=0": ("train.steps=0",),
    "train.batch_size=-1": ("train.batch_size=-1",),
    "train.lr=0": ("train.lr=0",),
    "train.lr=abc": ("train.lr='abc'",),
    "train.ema_decay=1.0": ("train.ema_decay=1.0",),
    "loss.weighting=foo": ("loss.weighting='foo'",),
    "train.nan_policy=ignore": ("train.nan_policy='ignore'",),
    "train.precision=fp8": ("train.precision='fp8'",),
    "train.device=tpu": ("train.device='tpu'",),
    "device=tpu": ("train.device='tpu'",),  # the top-level key is the Trainer's through ${device}
    "seed=-1": ("train.seed=-1",),
    "train.resume=/no/such/file.pt": ("train.resume='/no/such/file.pt'", "not found: /no/such/file.pt"),
    "loss.t_min=0": ("loss.t_min=0",),
    "loss=edm loss.sigma_data=wide": ("loss.sigma_data='wide'", "auto"),
    "loss=edm loss.sigma_data=-1": ("loss.sigma_data=-1", "auto", "> 0"),
    "loss=edm loss.p_mean=high": ("loss.p_mean='high'", "auto"),
    "train.keep_last=-1": ("train.keep_last=-1",),
    "train.threads=0": ("train.threads=0",),
    "train.ckpt_every=-5": ("train.ckpt_every=-5",),
    "eval.n_samples=1": ("eval.n_samples=1",),
    "eval.floor_repeats=1": ("eval.floor_repeats=1",),
    "eval.samplers.euler_maruyama.name=leapfrog": ("eval.samplers.euler_maruyama.name='leapfrog'",),
    "eval.samplers.euler_maruyama.steps=0": ("eval.samplers.euler_maruyama.steps=0",),
    "eval.samplers.dpm_solver.t_min=2.0": ("eval.samplers.dpm_solver.t_min=2.0",),
    "sde.T=0.001": ("eval.samplers.euler_maruyama.t_min=0.001", "T=0.001"),
    "eval.samplers.dpm_solver.options.order=5": ("eval.samplers.dpm_solver.options.order=5",),
    "+eval.samplers.dpm_solver.options.ordr=2": ("eval.samplers.dpm_solver.options.ordr=2",),
    "sde=ve sampler@eval.samplers.euler_maruyama=ancestral": ("eval.samplers.euler_maruyama.name='ancestral'", "VESDE"),
    "logger.mode=sometimes": ("logger.mode='sometimes'",),
    "schedule.beta_min=-0.1": ("schedule.beta_min=-0.1: must be > 0",),
    "schedule.beta_min=5 schedule.beta_max=1": ("schedule.beta_max=1: must be >= beta_min=5",),
    "schedule=cosine schedule.s=0": ("schedule.s=0: must be > 0",),
    "schedule=constant schedule.beta=0": ("schedule.beta=0: must be > 0",),
    "sde=ve sde.sigma_max=0.001": ("sde.sigma_max=0.001: must be > sigma_min=0.01",),
    "model.hidden=0": ("model.hidden=0: must be >= 1",),
    "data=tensor_file": ("data.path='???'",),
    "data=tensor_file data.path=/no/such.npy": ("data (sde_diffusion.data.TensorFile)", "/no/such.npy"),
    "data=tensor_file data.path={empty}": ("data (", "{empty}"),
    "data=tensor_file data.path={nan}": ("data (", "{nan}"),
    "data=tensor_file data.path={rank3}": ("data (", "{rank3}", "(20, 2, 2)"),
    "data._target_=sde_diffusion.data.datasets.Nope": ("data (sde_diffusion.data.datasets.Nope)",),
}
# The one-line contract in full, for a few: the key, the value, what is allowed or how to fix it.
ONE_LINE = {
    "train.lr=0": "config error: train.lr=0: must be a number > 0",
    "+eval.samplers.dpm_solver.options.ordr=2": "config error: eval.samplers.dpm_solver.options.ordr=2: dpm_solver "
    "takes options: order, method, algorithm, lower_order_final, spacing, rho, timesteps",
    "data=tensor_file": "config error: data.path='???': a value is required: add data.path=... to the command line",
}


@pytest.mark.parametrize("overrides", list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_key_value_and_what_is_allowed(overrides, tmp_path):
    files = {kind: write_data(tmp_path / f"{kind}.npy", kind) for kind in ("empty", "nan", "rank3")}
    start, *named = (text.format(**files) for text in BAD_CONFIGS[overrides])
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_job("train", *TINY, *overrides.format(**files).split(), out=out)
    line = str(info.value)
    assert line.startswith(f"config error: {start}") and all(n in line for n in named) and "\n" not in line, line
    assert line == ONE_LINE.get(overrides, line)
    assert not out.exists()  # no checkpoint, metrics, plots or wandb run


@pytest.mark.parametrize(
    "override", ["data=nope", "sde=nope", "schedule=nope", "sampler@eval.samplers.euler_maruyama=nope"]
)
def test_unknown_group_option_lists_the_available_ones(override):
    group = override.split("=")[0].split("@")[0]
    with pytest.raises(MissingConfigException) as info:
        load(override)
    assert f"Could not find '{group}/nope'" in str(info.value) and f"Available options in '{group}'" in str(info.value)


# A misspelt key in any node, with or without Hydra's "+": the key, and the keys its node holds
# (tests/test_reliability.py has the process's whole stderr for train.stpes).
TYPOS = {
    "train.stpes=100": ("train.stpes=100: unknown key 'stpes' of train; valid keys: steps, batch_size, lr,",),
    "+train.stpes=100": ("train.stpes=100: unknown key 'stpes' of train; valid keys: steps, batch_size, lr,",),
    "eval.n_sampels=10": ("eval.n_sampels=10: unknown key 'n_sampels' of eval; valid keys: samplers, n_samples,",),
    "loss=edm loss.p_maen=0": ("loss.p_maen=0: unknown key 'p_maen' of loss;", "p_mean, p_std"),
    "+loss.wieghting=edm": ("loss.wieghting='edm': unknown key 'wieghting' of loss; valid keys: weighting,",),
    "data.radus=3": ("data.radus=3: unknown key 'radus' of data; valid keys: none", "also takes: radius, std"),
    "model.hiden=8": ("model.hiden=8: unknown key 'hiden' of model; valid keys: hidden, layers",),
    "seeed=3": ("seeed=3: unknown key 'seeed' at the top level; valid keys:", "seed"),
    "eval.samplers.extra={steps:1}": (
        "eval.samplers.extra={'steps': 1}: not in the config: eval.samplers is a "
        "collection of entries, add one with +eval.samplers.extra=...",
    ),
    "-m loss=edm,sigmoid eval.sed=2": ("eval.sed=2: unknown key 'sed' of eval;",),
    "model._target_=torch.nn.Linear model.bias=false": (
        "model.bias=False: not in the config, but torch.nn.Linear takes it: add it with +model.bias=...",
    ),  # fmt: skip
}


@pytest.mark.parametrize("overrides", list(TYPOS))
def test_an_unknown_key_in_any_node_is_one_line_naming_it_and_the_valid_keys(overrides):
    with pytest.raises(ConfigError) as info:
        check_key_overrides(overrides.split(), CONF, "train")
    line = str(info.value)
    start, *named = TYPOS[overrides]
    assert line.startswith(f"config error: {start}") and all(n in line for n in named) and "\n" not in line, line
    assert "To append" not in line and "+train" not in line


@pytest.mark.parametrize(
    "overrides",
    [
        "train.steps=100 +sampler@eval.samplers.rk45=rk45 eval.samplers.rk45.steps=5",  # a group added, then set
        "model._target_=torch.nn.Linear +model.bias=false",  # a key the command line's target takes
        "data._target_=conftest.NaNAt +data.at=[13]",
        "+data.radius=3",  # the config's target takes it
        "++train.stpes=1 ~train.warmup hydra.run.dir=x",  # force-add, deletion, Hydra's own keys: Hydra's
        "eval.samplers.dpm_solver.options.ordr=2",  # sampler options: check_option_overrides and the sampler's spec
        "+eval.samplers.extra={name: rk45, steps: 1}",  # an entry added to a collection
    ],
)
def test_known_keys_and_added_keys_a_target_takes_pass(overrides):
    check_key_overrides(overrides.split(), CONF, "train")


def test_a_mandatory_key_is_a_known_key():
    check_key_overrides(["checkpoint=x.pt", "sampler=ddim"], CONF, "sample")  # sample.yaml's checkpoint is ???
