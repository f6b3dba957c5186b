"""The evaluation protocol against the exact oracle: the exact score solved accurately sits on the sampling floor and on
the exact flow map; the documented seeds; a failing sampler named by its slot; bad settings named."""

import pytest
import torch

from sde_diffusion import VPSDE, eight_gaussians
from sde_diffusion.core import metrics
from sde_diffusion.evaluation.evaluator import Evaluator, SamplerFailed
from sde_diffusion.sampling import SamplerArgError, SamplerRun, SampleSetup, sample

ORACLE, SDE = eight_gaussians(), VPSDE()


def test_the_exact_score_solved_accurately_sits_on_the_floor_and_the_exact_flow_map():
    runs = {"rk45": {"name": "rk45", "steps": None, "options": {"rtol": 1e-6, "atol": 1e-6}}}
    ev = Evaluator(runs, n_samples=1000, flow_error=True)(SDE, ORACLE.score_fn(SDE), ORACLE.sample, (2,), ORACLE)
    row = ev.rows["rk45"]
    assert row["flow_error"] < 1e-3  # the probability-flow ODE of the exact score is the exact flow map
    for metric in ("sw2", "mmd2", "energy", "mode_weight_error", "oracle_nll"):  # and its samples are the data's
        assert abs(row[metric] - ev.floor[metric]) < 4 * ev.floor_sd[metric], metric


def test_the_documented_seeds():
    """x_T from `seed`, every sampler's noise from `seed + 1`, the reference from `seed + 500`, floor draw k from
    `seed + 1000 + k`."""
    n, seed, score = 300, 7, ORACLE.score_fn(SDE)
    runs = {"em": SamplerRun("euler_maruyama", 10), "em again": SamplerRun("euler_maruyama", 10)}
    ev = Evaluator(runs, n_samples=n, seed=seed, floor_repeats=3)(SDE, score, ORACLE.sample, (2,), ORACLE)
    x_T = SDE.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed))
    x = sample(
        SDE,
        score,
        (n, 2),
        "euler_maruyama",
        10,
        setup=SampleSetup(x_T=x_T, generator=torch.Generator().manual_seed(seed + 1)),
    ).x
    assert torch.equal(ev.samples["em"], x) and torch.equal(ev.samples["em again"], x)  # common random numbers
    assert torch.equal(ev.reference, ORACLE.sample(n, torch.Generator().manual_seed(seed + 500)).float())
    floor_sw2 = [
        metrics.sliced_wasserstein(ORACLE.sample(n, torch.Generator().manual_seed(seed + 1000 + k)).float(),
                                   ev.reference, seed=seed)
        for k in range(3)
    ]  # fmt: skip
    assert ev.floor["sw2"] == pytest.approx(sum(floor_sw2) / 3, rel=1e-12)


def test_a_failing_sampler_is_named_by_its_slot():
    def not_finite(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))

    evaluator = Evaluator({"em": SamplerRun("euler_maruyama", 2), "ode": SamplerRun("rk45", None)}, n_samples=8)
    with pytest.raises(SamplerFailed, match=r"^sampler ode \(rk45\): ") as info:
        evaluator(SDE, not_finite, ORACLE.sample, (2,), ORACLE)
    assert (info.value.slot, info.value.name) == ("ode", "rk45")


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"n_samples": 1}, "^n_samples .*1$"),
        ({"floor_repeats": 1}, "^floor_repeats .*1$"),
        ({"mmd_samples": 1}, "^mmd_samples .*1$"),
        ({"batch_size": 0}, "^batch_size .*0$"),
        ({"samplers": {}}, r"^samplers must be at least one sampler, got \{\}$"),
    ],
)
def test_bad_settings_are_one_line_value_errors_naming_the_argument_and_value(kw, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        Evaluator(**{"samplers": {"em": SamplerRun("euler_maruyama", 2)}, "n_samples": 8, **kw})
    assert "\n" not in str(info.value)
    with pytest.raises(SamplerArgError, match="steps=0"):
        SamplerRun("euler_maruyama", 0).check(SDE)
