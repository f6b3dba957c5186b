"""Sample quality of a set of samplers: every metric (`sample_metrics`) against one held-out draw of the data, beside
the sampling floor, the same metrics for independent draws of the data itself (mean ± sd).

    evaluator = Evaluator({"em": {"name": "euler_maruyama", "steps": 1000}}, n_samples=10_000)
    result = evaluator(sde, score_fn, data.reference, data.shape, oracle=data.oracle)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core import metrics
from ..core.analytic import GaussianMixture, exact_flow_map
from ..core.checks import ArgumentError, check_choice, check_number
from ..core.sde import SDE, ScoreFn
from ..infra import distributed
from ..sampling import DETERMINISTIC, SamplerRun, SampleSetup, sample

Draw = Callable[[int, torch.Generator], Tensor]

# What the numbers of an evaluation mean, for the apps' metrics.json ("legend") and markdown tables: one text per key.
LEGEND = {
    "floor": "the same metrics between independent draws of the data itself (mean, and sd over floor_repeats draws): "
    "what a perfect sampler scores with this many samples; a sampler is judged against it, not against 0",
    "sw2": "sliced Wasserstein-2 distance to a held-out data draw (in data units, model space)",
    "sw2_over_floor": "SW2 / the floor's mean SW2: 1 = as good as this sample size can tell; below 1 by chance, "
    "as the floor is itself an estimate with spread floor_sd",
    "mmd2": "unbiased MMD^2 (Gaussian kernels at 5 bandwidths): 0 in expectation when the laws agree, so estimates "
    "scatter around 0 and can be negative",
    "energy": "squared energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo): 0 iff the laws agree, no "
    "bandwidth; its unbiased estimate can be negative too",
    "mode_weight_error": "sum over mixture components of |fraction of samples assigned - true weight|",
    "oracle_nll": "mean -log p(x) of the samples under the exact data density, in nats (the data's own: the floor)",
    "nll_excess": "oracle_nll minus the data's own (the floor's): the headline with an oracle, a precision measure: "
    "0 = as sharp as the data, > 0 = mass where the data has little (smeared, between the modes), < 0 = sharper "
    "than the data; read it beside mode_weight_error, its recall pair (missed or unevenly weighted modes)",
    "flow_error": "deterministic samplers: RMS distance to the exact probability-flow map of the true data from the "
    "same prior noise x_T, free of sampling noise: the solver's own error on the exact score, plus the model's on a "
    "trained one",
    "time_ratio": "wall time / (NFE x one score call on the batch): the sampler's cost per NFE beyond the score; "
    "1 = score calls only",
}


def legend(keys: Iterable[str]) -> dict[str, str]:
    """The LEGEND entries of the metrics in `keys`, and always the floor's."""
    keys = set(keys) | {"floor"}
    return {k: text for k, text in LEGEND.items() if k in keys}


def sample_metrics(
    x: Tensor,
    reference: Tensor,
    oracle: GaussianMixture | None = None,
    *,
    n_projections: int = 256,
    mmd_samples: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of samples `x` against `reference`: SW₂ (`n_projections` directions seeded with `seed`),
    unbiased MMD² and the energy distance (on the first `mmd_samples` points of each: their cost is quadratic), and
    with an oracle the mode-weight error and the mean negative log-likelihood of x under the exact density."""
    out = {
        "sw2": metrics.sliced_wasserstein(x, reference, n_projections=n_projections, seed=seed),
        "mmd2": metrics.mmd2(x[:mmd_samples], reference[:mmd_samples]),
    }
    out["energy"] = metrics.energy_distance(x[:mmd_samples], reference[:mmd_samples])
    if oracle is not None:
        out["mode_weight_error"] = metrics.mode_weight_error(oracle, x)
        out["oracle_nll"] = float(-oracle.log_prob(x.flatten(1).double()).mean())
    return out


class SamplerFailed(RuntimeError):
    """Sampler `slot` raised while sampling (a solver that stopped, out of memory, ...)."""

    def __init__(self, slot: str, name: str, cause: BaseException):
        super().__init__(f"sampler {slot} ({name}): {str(cause).splitlines()[0] if str(cause) else type(cause)}")
        self.slot, self.name = slot, name


@dataclass
class Evaluation:
    """`rows`: per sampler slot its name, steps, NFE, wall time, every metric, `sw2_over_floor` and (deterministic
    samplers, with `flow_error`) the RMS distance to the exact probability-flow map of the same x_T; `floor` and
    `floor_sd`: each metric's mean and sd over the floor draws; `samples` per slot; the `reference` draw."""

    rows: dict[str, dict[str, Any]]
    floor: dict[str, float]
    floor_sd: dict[str, float]
    samples: dict[str, Tensor]
    reference: Tensor


def headline(ev: Evaluation, slot: str | None = None) -> dict[str, Any]:
    """The main metric of sampler `slot` (default: the first) with its resolution, the floor's sd. With an oracle, the
    precision/recall pair: `nll_excess` (its value) and `mode_weight_error` ("recall": value, floor, floor_sd), which
    rank what a person sees (SW₂ at 10 000 samples cannot tell samples smeared into a ring from sharp ones,
    docs/training.md); without one, SW₂."""
    slot = next(iter(ev.rows)) if slot is None else slot
    row = ev.rows[slot]
    if "nll_excess" not in row:
        return {"name": f"{slot}/sw2", "value": row["sw2"], "floor": ev.floor["sw2"], "floor_sd": ev.floor_sd["sw2"]}
    recall = {"name": f"{slot}/mode_weight_error", "value": row["mode_weight_error"]}
    recall |= {"floor": ev.floor["mode_weight_error"], "floor_sd": ev.floor_sd["mode_weight_error"]}
    return {
        "name": f"{slot}/nll_excess",
        "value": row["nll_excess"],
        "floor_sd": ev.floor_sd["nll_excess"],
        "recall": recall,
    }


class Evaluator:
    """Samples `n_samples` points with every sampler of `samplers` ({slot: SamplerRun or its fields}) and measures
    them. `batch_size` bounds the samples solved at once; `floor_repeats` data draws give the floor; `flow_error` also
    compares the deterministic samplers with the exact flow map (needs an oracle).

    One protocol for every app: x_T is drawn with `seed`, every sampler's own noise with `seed + 1` (common random
    numbers: the samplers differ only in themselves), the reference with `seed + 500` and floor draw k with
    `seed + 1000 + k`. Under torchrun each process samples its share of x_T and all get every sample back."""

    def __init__(
        self,
        samplers: Mapping[str, SamplerRun | Mapping[str, Any]],
        *,
        n_samples: int,
        seed: int = 0,
        batch_size: int | None = None,
        n_projections: int = 256,
        mmd_samples: int | None = None,
        floor_repeats: int = 5,
        flow_error: bool = False,
    ):
        check_number("n_samples", n_samples, integer=True, ge=2)
        check_number("seed", seed, integer=True, ge=0)
        check_number("batch_size", batch_size, integer=True, ge=1, optional=True)
        check_number("n_projections", n_projections, integer=True, ge=1)
        check_number("mmd_samples", mmd_samples, integer=True, ge=2, optional=True)
        check_number("floor_repeats", floor_repeats, integer=True, ge=2)
        check_choice("flow_error", flow_error, (True, False))
        if not samplers:
            raise ArgumentError("samplers", samplers, "at least one sampler")
        self.samplers = {k: v if isinstance(v, SamplerRun) else SamplerRun(**v) for k, v in samplers.items()}
        self.n, self.seed, self.batch_size, self.floor_repeats, self.flow_error = (
            n_samples,
            seed,
            batch_size,
            floor_repeats,
            flow_error,
        )
        self.metric_kw = {"n_projections": n_projections, "mmd_samples": mmd_samples, "seed": seed}

    def reference(self, draw: Draw) -> Tensor:
        """The held-out draw every sampler is scored against: `draw(n_samples)` seeded with `seed + 500`."""
        return draw(self.n, torch.Generator().manual_seed(self.seed + 500)).float()

    def metrics(
        self, x: Tensor, reference: Tensor, floor: dict[str, float], oracle: GaussianMixture | None = None
    ) -> dict[str, float]:
        """Every metric of samples `x` against `reference`, `sw2_over_floor` (SW₂ over the floor's mean) and, with an
        oracle, `nll_excess` (the NLL under the exact density over the data's)."""
        row = sample_metrics(x, reference, oracle, **self.metric_kw)
        row |= {"nll_excess": row["oracle_nll"] - floor["oracle_nll"]} if "oracle_nll" in row else {}
        return row | {"sw2_over_floor": row["sw2"] / floor["sw2"]}

    def floor(self, draw: Draw, reference: Tensor, oracle: GaussianMixture | None) -> tuple[dict, dict]:
        """(mean, sd) of every metric over `floor_repeats` independent data draws against `reference`."""
        rows = [
            sample_metrics(
                draw(self.n, torch.Generator().manual_seed(self.seed + 1000 + k)).float(),
                reference,
                oracle,
                **self.metric_kw,
            )
            for k in range(self.floor_repeats)
        ]
        mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
        sd = {k: statistics.stdev(r[k] for r in rows) for k in rows[0]}
        if oracle is not None:  # the data's own NLL excess: 0 by definition, with the spread of its NLL
            mean["nll_excess"], sd["nll_excess"] = 0.0, sd["oracle_nll"]
        return mean, sd

    def __call__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        draw: Draw,
        shape: tuple[int, ...],
        oracle: GaussianMixture | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> Evaluation:
        """Sample with every sampler from the same x_T, score each against a held-out `draw(n, generator)` of the
        data, and compute the floor; `shape` is one example's shape, `device` the one `score_fn` runs on, `progress`
        shows each sampler's progress bar."""
        rank, world_size = distributed.rank(), distributed.world_size()
        reference = self.reference(draw)
        floor, floor_sd = self.floor(draw, reference, oracle)
        x_T = sde.prior_sampling((self.n, *shape), generator=torch.Generator().manual_seed(self.seed))
        start = sum(distributed.split(self.n, r, world_size) for r in range(rank))
        mine = x_T[start : start + distributed.split(self.n, rank, world_size)]
        rows, samples, exact = {}, {}, {}
        for slot, run in self.samplers.items():
            generator = torch.Generator(device).manual_seed(distributed.rank_seed(self.seed + 1, rank))
            t0 = time.perf_counter()
            try:
                res = sample(
                    sde,
                    score_fn,
                    tuple(mine.shape),
                    sampler=run.name,
                    steps=run.steps,
                    t_min=run.t_min,
                    denoise=run.denoise,
                    setup=SampleSetup(
                        x_T=mine, generator=generator, device=device, batch_size=self.batch_size, progress=progress
                    ),
                    **run.options,
                )
            except (RuntimeError, ValueError) as err:
                raise SamplerFailed(slot, run.name, err) from err
            x, nfe = distributed.gather(res.x.float()).cpu(), distributed.all_reduce_max(res.nfe)
            row = {"sampler": run.name, "steps": run.steps, "nfe": nfe, "wall_s": time.perf_counter() - t0}
            row |= self.metrics(x, reference, floor, oracle)
            if self.flow_error and oracle is not None and run.name in DETERMINISTIC:
                key = (run.t_min, run.denoise)
                if key not in exact:
                    exact[key] = exact_flow_map(sde, oracle, x_T, run.t_min, denoise=run.denoise)
                row["flow_error"] = metrics.flow_error(x, exact[key])
            rows[slot], samples[slot] = row, x
        return Evaluation(rows, floor, floor_sd, samples, reference)
