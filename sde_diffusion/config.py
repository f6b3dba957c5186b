"""Glue between Hydra configs and the library: validate up front, build objects, reload a trained run.

This is the only library module that imports hydra/omegaconf. The apps call, in order:

    validate(cfg)                      # every bad value -> ConfigError naming key, value and what is allowed
    built = build(cfg)                 # sde, data, score model via hydra.utils.instantiate (`_target_`)
    tracker = start_tracker(cfg, output_dir, job_type="train")

`ConfigError` is a Hydra `CompactHydraException`: raised from a task function, Hydra prints its one-line message
and exits with status 1, no traceback (the full one with HYDRA_FULL_ERROR=1); in a multirun the other jobs still
run. Validation is a list of checks, `CHECKS`; add one with the `@check` decorator. A check looks only at the
keys it knows and skips absent ones, so every app can run `validate` on its own config.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from .sde import SDE

_ABSENT = object()


class ConfigError(CompactHydraException, ValueError):
    """A bad config value, reported as one line: `config error: <key>=<value>: <what is allowed>`."""


class RunError(CompactHydraException, RuntimeError):
    """A fault while running (divergence, unreadable checkpoint), reported as one line like a ConfigError."""


def config_error(key: str, value: Any, allowed: str) -> ConfigError:
    """The one-line error for `key` holding `value`, saying what is allowed."""
    return ConfigError(f"config error: {key}={value!r}: {allowed}")


# ----------------------------------------------------------------------------------------------- validation

Check = Callable[[DictConfig], None]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    """Register a validation check (a function of the whole config that raises ConfigError)."""
    CHECKS.append(fn)
    return fn


def validate(cfg: DictConfig, checks: list[Check] | None = None) -> None:
    """Run every registered check (or `checks`) on `cfg`; the first bad value raises ConfigError."""
    for fn in CHECKS if checks is None else checks:
        fn(cfg)


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except Exception as err:  # a missing mandatory value (???) or a broken interpolation
        raise config_error(key, "???", f"a value is required ({type(err).__name__}: {err})") from None


def require_number(
    cfg: DictConfig,
    key: str,
    *,
    integer: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    optional: bool = False,
) -> None:
    """`key`, if present, is a finite number (an integer if `integer`) within the given bounds (or null if
    `optional`)."""
    value = _get(cfg, key)
    if value is _ABSENT or (optional and value is None):
        return
    kind = "an integer" if integer else "a number"
    bounds = [f"{op} {b:g}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
    allowed = f"must be {kind}" + (" " + " and ".join(bounds) if bounds else "") + (" (or null)" if optional else "")
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise config_error(key, value, allowed)
    if (
        (gt is not None and not value > gt)
        or (ge is not None and not value >= ge)
        or (lt is not None and not value < lt)
        or (le is not None and not value <= le)
    ):
        raise config_error(key, value, allowed)


def require_choice(cfg: DictConfig, key: str, choices: list[Any] | tuple[Any, ...]) -> None:
    """`key`, if present, is one of `choices`."""
    value = _get(cfg, key)
    if value is not _ABSENT and value not in choices:
        raise config_error(key, value, "allowed: " + ", ".join(map(str, choices)))


@check
def _check_required(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise config_error(missing[0], "???", f"a value is required: add {missing[0]}=... to the command line")


@check
def _check_data(cfg: DictConfig) -> None:
    path = _get(cfg, "data.path")
    if path not in (_ABSENT, None) and not Path(str(path)).is_file():
        raise config_error("data.path", path, "the path of an existing .npy or .pt file")


@check
def _check_train(cfg: DictConfig) -> None:
    for key in ("steps", "batch_size", "log_every"):
        require_number(cfg, f"train.{key}", integer=True, ge=1)
    for key in ("warmup", "eval_every", "ckpt_every", "keep_last", "seed"):
        require_number(cfg, f"train.{key}", integer=True, ge=0)
    require_number(cfg, "train.threads", integer=True, ge=1, optional=True)
    require_number(cfg, "train.lr", gt=0)
    require_number(cfg, "train.weight_decay", ge=0)
    require_number(cfg, "train.ema_decay", ge=0, lt=1)
    require_number(cfg, "train.grad_clip", gt=0, optional=True)
    require_number(cfg, "train.loss_eps", gt=0, lt=_get_T(cfg))
    require_choice(cfg, "train.weighting", ("simple", "likelihood", "sigma2"))
    require_choice(cfg, "train.nan_policy", ("stop", "skip"))
    require_choice(cfg, "train.precision", ("fp32", "bf16", "fp16"))
    require_choice(cfg, "train.compile", (True, False))
    device = _get(cfg, "train.device")
    if device is not _ABSENT and not (
        device in ("auto", "cpu", "cuda", "mps") or (isinstance(device, str) and device.startswith("cuda:"))
    ):
        raise config_error("train.device", device, "allowed: auto, cpu, cuda, cuda:N, mps")
    resume = _get(cfg, "train.resume")
    if resume not in (_ABSENT, None, "auto") and not Path(str(resume)).is_file():
        raise config_error("train.resume", resume, "allowed: null, auto, or the path of an existing checkpoint file")


@check
def _check_logger(cfg: DictConfig) -> None:
    require_choice(cfg, "logger.mode", ("offline", "online", "disabled"))


def _get_T(cfg: DictConfig) -> float:
    T = _get(cfg, "sde.T")
    return T if isinstance(T, int | float) and not isinstance(T, bool) and T > 0 else math.inf


@check
def _check_sde(cfg: DictConfig) -> None:
    require_number(cfg, "sde.T", gt=0)
    require_number(cfg, "sde.sigma_min", gt=0)
    sigma_min = _get(cfg, "sde.sigma_min")
    require_number(cfg, "sde.sigma_max", gt=sigma_min if isinstance(sigma_min, int | float) else 0)


@check
def _check_schedule(cfg: DictConfig) -> None:
    for key in ("beta_min", "beta", "s", "T"):
        require_number(cfg, f"schedule.{key}", gt=0)
    beta_min = _get(cfg, "schedule.beta_min")
    require_number(cfg, "schedule.beta_max", ge=beta_min if isinstance(beta_min, int | float) else 0, gt=0)


@check
def _check_eval(cfg: DictConfig) -> None:
    require_number(cfg, "eval.n_samples", integer=True, ge=2)
    require_number(cfg, "eval.seed", integer=True, ge=0)
    require_number(cfg, "eval.batch_size", integer=True, ge=1, optional=True)
    require_number(cfg, "eval.n_projections", integer=True, ge=1)
    require_number(cfg, "eval.mmd_samples", integer=True, ge=2)
    samplers = _get(cfg, "eval.samplers")
    if samplers is _ABSENT:
        return
    if not isinstance(samplers, DictConfig) or len(samplers) == 0:
        raise config_error("eval.samplers", samplers, "at least one sampler, e.g. +sampler@eval.samplers.rk45=rk45")
    for slot in samplers:
        check_sampler(cfg, f"eval.samplers.{slot}")


def check_sampler(cfg: DictConfig, key: str) -> None:
    """A sampler node (`name`, `steps`, `eps`, `denoise`, `options`, as in conf/sampler/) at `key`, checked against
    the sampler's spec (`sde_diffusion.sampling.check_sampler`): name, steps, eps, every option value, and the SDE."""
    from .sampling import SamplerArgError
    from .sampling import check_sampler as check_spec

    require_choice(cfg, f"{key}.denoise", (True, False))
    options = _get(cfg, f"{key}.options")
    options = OmegaConf.to_container(options) if isinstance(options, DictConfig) else {}
    target = _get(cfg, "sde._target_")
    sde_type = _sde_class(target) if isinstance(target, str) else SDE
    try:
        check_spec(str(_get(cfg, f"{key}.name")), steps=_get(cfg, f"{key}.steps"), eps=_get(cfg, f"{key}.eps"),
                   options=options, sde_type=sde_type, T=_get_T(cfg))  # fmt: skip
    except SamplerArgError as err:
        raise config_error(f"{key}.{err.key}", err.value, err.allowed) from None


def _sde_class(target: str) -> type:
    """The class `_target_` names (an unimportable target counts as a plain SDE here and fails, named, in `build`)."""
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001
        return SDE
    return cls if isinstance(cls, type) else SDE


# ------------------------------------------------------------------------------------------------- building


@dataclass
class Built:
    """What a config describes: the forward SDE, the data set and the score model (network + wrapper)."""

    sde: SDE
    data: Any
    model: torch.nn.Module


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(cfg[key], **kwargs)`; a failing constructor becomes a ConfigError naming `key`."""
    try:
        return instantiate(OmegaConf.select(cfg, key), **kwargs)
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        target = OmegaConf.select(cfg, f"{key}._target_")
        raise ConfigError(f"config error: {key} ({target}): {message}") from err


def build(cfg: DictConfig) -> Built:
    """Instantiate `sde`, `data`, `model` (the network, given `shape=data.shape`) and `score` (the wrapper,
    given `net` and `sde`)."""
    sde = instantiate_node(cfg, "sde")
    data = instantiate_node(cfg, "data")
    net = instantiate_node(cfg, "model", shape=tuple(data.shape))
    model = instantiate_node(cfg, "score", net=net, sde=sde)
    return Built(sde=sde, data=data, model=model)


def load_run(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, SDE, Any, DictConfig]:
    """Rebuild a trained run from its checkpoint: (EMA score model in eval mode, sde, data, config)."""
    from .checkpoint import load_checkpoint
    from .training import resolve_device

    state = load_checkpoint(checkpoint_path, map_location="cpu")
    if "config" not in state:
        raise ConfigError(f"checkpoint {checkpoint_path}: holds no 'config'; was it written by experiments/train.py?")
    cfg = OmegaConf.create(state["config"])
    built = build(cfg)
    try:
        built.model.load_state_dict(state["ema"])
    except RuntimeError as err:
        raise ConfigError(
            f"checkpoint {checkpoint_path}: EMA weights do not fit the model of its config: {err}"
        ) from None
    return built.model.to(resolve_device(device)).eval(), built.sde, built.data, cfg


# ------------------------------------------------------------------------------------------------- tracking


def run_names(cfg: DictConfig) -> tuple[str, str]:
    """(wandb group, run name): `logger.group`/`logger.name` if set; otherwise the group is the experiment
    `name` (in a multirun, `name` + the sweep directory's name, so one sweep = one group) and the run name is
    the job's command-line overrides (e.g. "schedule=cosine"), or `name` without overrides."""
    name = str(cfg.get("name", "run"))
    group, run_name = name, name
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            group = f"{name}-{Path(hc.sweep.dir).name}"
        run_name = hc.job.override_dirname or name
    logger = cfg.get("logger") or {}
    return logger.get("group") or group, logger.get("name") or run_name


def start_tracker(cfg: DictConfig, output_dir: str | Path, job_type: str | None = None, resume_id: str | None = None):
    """Instantiate `cfg.logger` (sde_diffusion.tracking.start_run by default) with files in `output_dir`, the
    resolved config, the group/run names of `run_names`, and `resume_id` to continue a run."""
    if cfg.get("logger") is None:
        from .tracking import Tracker

        return Tracker()
    group, name = run_names(cfg)
    kwargs: dict[str, Any] = {"dir": str(output_dir), "config": OmegaConf.to_container(cfg, resolve=True)}
    if cfg.logger.get("mode") != "disabled":
        kwargs.update(group=group, name=name, resume_id=resume_id)
        if job_type is not None:
            kwargs["job_type"] = job_type
    return instantiate(cfg.logger, _partial_=True, _convert_="all")(**kwargs)


# ---------------------------------------------------------------------------------------------- job failures


class RecordFailure(Callback):
    """Hydra callback (`hydra.callbacks`): a job that raises writes `failure.json` (error type, message, overrides)
    to its output dir and logs the error to the job's log. Hydra's launchers run every job of a sweep and re-raise
    only the first failure at the end, so this is how experiments/summarize.py names every failed job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Write the record if the job failed."""
        if job_return.status != JobStatus.FAILED:
            return
        err = job_return._return_value
        record = {"error": type(err).__name__, "message": str(err), "overrides": list(job_return.overrides or [])}
        out = Path(config.hydra.runtime.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "failure.json").write_text(json.dumps(record, indent=2))
        logging.getLogger(config.hydra.job.name).error("job failed: %s: %s", record["error"], record["message"])
