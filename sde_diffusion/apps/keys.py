"""Unknown config keys on the command line, caught before Hydra composes. Hydra answers `train.stpes=100` with its
struct error and the advice "To append to your config use +train.stpes=100", and following it ends in a traceback
(`TrainOptions.__init__() got an unexpected keyword argument 'stpes'`). Here both get one line naming the key and
the valid ones: `config error: train.stpes=100: unknown key 'stpes' of train; valid keys: steps, batch_size, ...`.

A `+node.key=...` is allowed where the node's `_target_` (the command line's, else the config's) takes `key` as a
named argument, e.g. `model._target_=my_pkg.MyNet +model.width=64`, or the node is a collection of entries
(`+perturbations.big={kind: scale, size: 3}`); a target outside sde_diffusion that takes
`**kwargs` takes any key. Sampler options (app.check_option_overrides), `++` (force-add), deletions, `hydra.*` and
keys whose node is not a mapping of the composed config are left to Hydra."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from .errors import config_error

_SPECIAL = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def check_key_overrides(overrides: list[str], conf: Path, config_name: str) -> None:
    """Each `key=value` and `+key=value` override of the command line names a key its config node has (or, for
    `+`, that the node's target takes); else a ConfigError naming the key and the valid keys (module docstring)."""
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in overrides if "=" in a and a[0] != "-"])
    except HydraException:
        return  # Hydra reports a malformed override itself
    groups = [o for o in parsed if _is_group(o, conf)]
    cfg = _compose(conf, config_name, [_first(o) for o in groups])
    if cfg is None:
        return
    targets = {
        o.key_or_group.rpartition(".")[0]: str(o.value()) for o in parsed if o.key_or_group.endswith("._target_")
    }
    for o in parsed:
        key = o.key_or_group
        if o in groups or o.is_delete() or o.is_force_add() or key.split(".")[0] == "hydra":
            continue
        parent, _, leaf = key.rpartition(".")
        if parent.endswith(".options") or parent == "options":
            continue  # a sampler's options: app.check_option_overrides, or the sampler's spec when it is built
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf in set(node):  # `in` is False for a mandatory (???) key
            continue
        target = targets.get(parent, node.get("_target_"))
        if o.is_add() and (_takes(target, leaf) or _collection(node, target)):
            continue
        value = o.get_value_element_as_str() if o.is_sweep_override() else o.value()
        raise config_error(key, value, _unknown(node, parent, leaf, target))


def _unknown(node: DictConfig, parent: str, leaf: str, target: Any) -> str:
    """What the error says about key `leaf` of `node`: the keys the node holds and those its target also takes."""
    where = f"of {parent}" if parent else "at the top level"
    if target is not None and _takes(target, leaf):
        return f"not in the config, but {target} takes it: add it with +{parent}.{leaf}=..."
    if _collection(node, target):
        return f"not in the config: {parent} is a collection of entries, add one with +{parent}.{leaf}=..."
    held = [str(k) for k in node if k not in _SPECIAL]
    more = [k for k in _named(target) if k not in held] if not node.get("_partial_") else []  # the app adds the rest
    text = f"unknown key {leaf!r} {where}; valid keys: {', '.join(held) or 'none'}"
    return text + (f" (and, with +{parent}.KEY=..., {target} also takes: {', '.join(more)})" if more else "")


def _is_group(override: Any, conf: Path) -> bool:
    """Whether an override picks a config group option (`loss=edm`, `sampler@eval.samplers.x=rk45`)."""
    group = override.key_or_group.split("@")[0]
    return (conf / group).is_dir()


def _first(override: Any) -> str:
    """The override as Hydra's compose takes it, a sweep's first value (`loss=edm,sigmoid` -> `loss=edm`)."""
    value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else override.value()
    prefix = "+" if override.is_add() else ""
    package = f"@{override.package}" if override.package else ""
    return f"{prefix}{override.key_or_group}{package}={'null' if value is None else value}"


def _compose(conf: Path, config_name: str, overrides: list[str]) -> DictConfig | None:
    """The app's config with the group overrides only (None if Hydra cannot compose it: Hydra reports that)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except (HydraException, ValueError):
        return None
    finally:
        GlobalHydra.instance().clear()


def _collection(node: DictConfig, target: Any) -> bool:
    """Whether `node` is a collection its user adds entries to (eval.samplers, perturbations, checkpoints): no
    target, and empty or every entry a mapping."""
    return target is None and all(isinstance(v, DictConfig) for v in node.values())


def _named(target: Any) -> list[str]:
    """The named keyword arguments with defaults of `target` (a dotted name; none if it cannot be imported): those
    without one the app passes (a model's `shape`)."""
    try:
        params = inspect.signature(get_object(str(target))).parameters.values() if target is not None else []
    except (ImportError, AttributeError, ValueError, TypeError, HydraException):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty]


def _takes(target: Any, key: str) -> bool:
    """Whether `target` (a dotted name) takes `key` as a keyword argument; an unimportable target is left to the
    app, which reports it while building."""
    if target is None:
        return False
    try:
        fn: Callable = get_object(str(target))
        params = inspect.signature(fn).parameters
    except (ImportError, AttributeError, ValueError, TypeError, HydraException):
        return target is not None
    if key in params and params[key].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return var_kw and not str(target).startswith("sde_diffusion.")
