"""Run configs written before the package was split into sub-packages (0.1) name their classes by the old flat
modules, e.g. `_target_: sde_diffusion.sde.VPSDE`; `upgrade_targets` rewrites them to today's paths, so a checkpoint or
export of 0.1 still loads (CHANGELOG.md)."""

from __future__ import annotations

from typing import Any

FLAT_MODULES = {  # 0.1's module -> today's
    "schedules": "core.schedules",
    "sde": "core.sde",
    "learned_schedule": "core.learned_schedule",
    "tracking": "infra.tracking",
    "evaluation": "evaluation.evaluator",
    "class_eval": "evaluation.class_eval",
    "inverse": "sampling.inverse",
    "masks": "sampling.masks",
}


def upgrade_targets(node: Any) -> Any:
    """A copy of a config tree whose `_target_` strings of 0.1's flat modules name today's modules."""
    if isinstance(node, dict):
        return {k: _upgrade(v) if k == "_target_" else upgrade_targets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [upgrade_targets(v) for v in node]
    return node


def _upgrade(target: Any) -> Any:
    parts = target.split(".") if isinstance(target, str) else []
    if len(parts) >= 3 and parts[0] == "sde_diffusion" and parts[1] in FLAT_MODULES:
        return ".".join(["sde_diffusion", FLAT_MODULES[parts[1]], *parts[2:]])
    return target
