"""Objects from config nodes with `_target_` (hydra.utils.instantiate), and a trained run rebuilt from its
checkpoint or its export (experiments/export.py). A constructor's argument error becomes
`config error: <node>.<argument>=<value>: ...` (errors.argument_error), any other failure
`config error: <node> (<target>): <message>`, and a warning it raises one log line naming the node, so each value is
checked once, by its object."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..core.checks import ArgumentError, check_number
from ..core.sde import SDE, ScoreFn
from ..data.scale import data_std, edm_p_mean, isotropy_gap
from ..evaluation.evaluator import Evaluator
from ..infra.checkpoint import CheckpointError, load_checkpoint, load_exported
from ..infra.runtime import resolve_device
from ..sampling import SamplerArgError, SamplerRun
from .errors import ConfigError, RunError, argument_error, config_error, config_errors
from .layout import upgrade_targets

log = logging.getLogger("config")
ISOTROPY_GAP = 0.5  # below: the 2-D toy sets on which σ_d = the data's std stalled (docs/training.md)


@dataclass
class Built:
    """What a config describes: the forward SDE, the data set and the score model (network + wrapper)."""

    sde: SDE
    data: Any
    model: torch.nn.Module


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(cfg[key], **kwargs)`; a failing constructor becomes a ConfigError naming `key`, and
    each warning it raises is logged once as `<key> (<target>): <Category>: <message>` (not at Hydra's own line)."""
    target = OmegaConf.select(cfg, f"{key}._target_")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = instantiate(OmegaConf.select(cfg, key), **kwargs)
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ArgumentError | SamplerArgError):
            raise argument_error(key, cause) from err
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(f"config error: {key} ({target}): {message}") from err
    for w in dict.fromkeys((w.category.__name__, str(w.message)) for w in caught):
        log.warning("%s (%s): %s: %s", key, target, *w)
    return obj


def build_sde(cfg: DictConfig, **kwargs: Any) -> SDE:
    """The `sde` node, its β(t) built first from `schedule` (so a bad β(t) names `schedule`), unless given."""
    if "schedule" in cfg.sde and "schedule" not in kwargs:
        kwargs["schedule"] = instantiate_node(cfg, "schedule")
    return instantiate_node(cfg, "sde", **kwargs)


def build(cfg: DictConfig) -> Built:
    """Instantiate `sde`, `data` (and from it loss.sigma_data and loss.p_mean where `auto`: `resolve_data_scale`),
    `model` (the network, given `shape=data.shape`; a conditional one's num_classes must be the data's) and `score`
    (the wrapper, given `net` and `sde`)."""
    sde = build_sde(cfg)
    data = instantiate_node(cfg, "data")
    resolve_data_scale(cfg, data)
    net = instantiate_node(cfg, "model", shape=tuple(data.shape))
    classes, data_classes = getattr(net, "num_classes", None), getattr(data, "num_classes", None)
    if classes is not None and classes != data_classes:
        allowed = f"null (unconditional) or the data's {data_classes}" if data_classes else "null: no labels in data"
        raise config_error("model.num_classes", classes, f"must be {allowed}")
    model = instantiate_node(cfg, "score", net=net, sde=sde)
    return Built(sde=sde, data=data, model=model)


def _number_or_auto(loss: DictConfig, key: str, **bounds: float) -> bool:
    """True if loss.<key> is "auto"; else it must be a number (within `bounds`) or absent: one config-error line."""
    value = loss.get(key)
    if value == "auto" or key not in loss:
        return value == "auto"
    try:
        check_number(key, value, **bounds)
    except ArgumentError as err:
        raise config_error(f"loss.{key}", value, f"must be auto (from the data) or {err.allowed}") from None
    return False


def resolve_data_scale(cfg: DictConfig, data: Any) -> None:
    """`loss.sigma_data: auto` becomes the training data's per-dimension std σ_d (data_scale.data_std) and
    `loss.p_mean: auto` EDM's P_mean moved by log(σ_d/0.5) (data_scale.edm_p_mean), written into `cfg`: the score's
    ${loss.sigma_data}, the objective and the checkpoint's config then hold the number, so an app that rebuilds the run
    reads it. An explicit number wins; any other value is a ConfigError naming the key."""
    loss = cfg.get("loss")
    if loss is None:
        return
    auto_sd, auto_pm = _number_or_auto(loss, "sigma_data", gt=0), _number_or_auto(loss, "p_mean")
    if not (auto_sd or auto_pm):
        return
    sigma_data = data_std(data) if auto_sd or "sigma_data" not in loss else float(loss.sigma_data)
    if auto_sd:
        loss.sigma_data = sigma_data
        log.info("loss.sigma_data=auto: %.4g, the training data's per-dimension std", sigma_data)
        gap = isotropy_gap(data)
        if gap is not None and gap < ISOTROPY_GAP:
            log.warning(
                "loss.sigma_data=auto: %.3g is the std of data whose second moment is ≈ σ_d²·I (gap %.2g), where EDM's "
                "loss may not train (docs/training.md, 'The default objective'); set e.g. loss.sigma_data=1 "
                "loss.p_mean=-1.2", sigma_data, gap)  # fmt: skip
    if auto_pm:
        loss.p_mean = edm_p_mean(sigma_data)
        log.info("loss.p_mean=auto: %.4g = -1.2 + log(sigma_data/0.5)", loss.p_mean)


def build_evaluator(cfg: DictConfig, sde: SDE, key: str = "eval") -> Evaluator:
    """The Evaluator of node `key`, every sampler checked against `sde` (a bad one names its slot's key)."""
    evaluator = instantiate_node(cfg, key, _convert_="all")
    for slot, run in evaluator.samplers.items():
        check_run(run, sde, f"{key}.samplers.{slot}")
    return evaluator


def check_run(run: SamplerRun, sde: SDE, key: str) -> None:
    """`run` against its sampler's spec and `sde`; a bad value is a ConfigError naming `<key>.<argument>`."""
    with config_errors(key):
        run.check(sde)


def run_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(EMA weights, run config) of a trained run: a checkpoint file of experiments/train.py, or a folder of
    experiments/export.py (model.safetensors + config.json); neither runs any pickled code."""
    if Path(path).is_dir():
        weights, config = load_exported(path)
        return weights, upgrade_targets(config)
    state = load_checkpoint(path, map_location="cpu")
    if state.get("config") is None:
        raise ConfigError(f"checkpoint {path}: holds no 'config'; was it written by experiments/train.py?")
    return state["ema"], upgrade_targets(state["config"])


def load_run(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, SDE, Any, DictConfig]:
    """Rebuild a trained run from its checkpoint or export folder (`run_weights`): (EMA score model in eval mode,
    sde, data, config)."""
    weights, config = run_weights(checkpoint_path)
    cfg = OmegaConf.create(config)
    built = build(cfg)
    try:
        built.model.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(
            f"checkpoint {checkpoint_path}: EMA weights do not fit the model of its config: {err}"
        ) from None
    return built.model.to(resolve_device(device)).eval(), built.sde, built.data, cfg


def load_score(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> tuple[ScoreFn, SDE, Any]:
    """A trained run (`load_run`) as (score_fn, sde, data): its EMA model frozen (no parameter gradients, while the
    input can still be differentiated: DPS, tuned grids), run in float32 and returned in the caller's dtype; an
    unreadable checkpoint is a RunError."""
    try:
        model, sde, data, _ = load_run(checkpoint_path, device)
    except CheckpointError as err:
        raise RunError(str(err)) from err
    model.requires_grad_(False)

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x.float(), t.float()).to(x.dtype)

    return score_fn, sde, data
