"""The one sampler protocol's callback(i, t, x, denoised), over the whole registry (samplers and inverse methods):
once per step at the time the step starts, with Tweedie's E[x₀ | x_t = x] of the state it passes (recomputed here
from the oracle's score), on the grid at its index for the samplers that walk one, once more at the final time with
the sample returned, and without changing a single sample."""

from itertools import accumulate

import pytest
import torch

from sde_diffusion import VPSDE, eight_gaussians
from sde_diffusion.sampling import INVERSE, SAMPLERS, SampleSetup, sample
from sde_diffusion.sampling.dpm_solver import singlestep_orders
from sde_diffusion.sampling.inverse import Measurement

SDE, MIX = VPSDE(), eight_gaussians()
SCORE = MIX.score_fn(SDE)
F64 = dict(dtype=torch.float64)
A, Y = torch.tensor([[1.0, 0.0]], **F64), torch.tensor([0.5], **F64)  # x₁ observed
STEPS = {"ancestral": 50, "rk45": None, "adaptive_sde": None}  # DDPM's chain needs β_i < 1; adaptive: no steps


def run(name: str, callback=None, denoise: bool = True, **options):
    if name in INVERSE:
        options["measurement"] = Measurement(A, Y, 0.1)
    return sample(
        SDE,
        SCORE,
        (16, 2),
        name,
        STEPS.get(name, 8),
        denoise=denoise,
        setup=SampleSetup(callback=callback, generator=torch.Generator().manual_seed(0), **F64),
        **options,
    )


def record(name: str, **options):
    """The result and every call (i, t, x, denoised), copied."""
    calls = []
    result = run(name, lambda i, t, x, d: calls.append((i, t.clone(), x.clone(), d.clone())), **options)
    return result, calls


def grid_of(name: str) -> torch.Tensor:
    spec = SAMPLERS.get(name) or INVERSE[name]
    return spec.grid(SDE, STEPS.get(name, 8), None if callable(spec.times) else 1e-3, {}).t


@pytest.mark.parametrize("name", [*SAMPLERS, *INVERSE])
def test_every_sampler_reports_every_step_with_tweedies_estimate_and_changes_nothing(name):
    result, calls = record(name)
    assert torch.equal(result.x, run(name).x)  # the callback draws nothing and changes nothing
    assert len(calls) >= 2
    for _, t, x, denoised in calls:
        assert t.dtype == torch.float64 and t.ndim == 0
        torch.testing.assert_close(denoised, SDE.tweedie(x, t, SCORE(x, t.expand(len(x)))), rtol=1e-10, atol=1e-10)
    grid = grid_of(name)
    i_last, t_last, x_last, d_last = calls[-1]
    assert float(t_last) == float(grid[-1])  # the final time: t_min, or the chain's last
    if name in ("replacement", "repaint"):  # the returned sample is x̂₀ with A x̂₀ set to y
        assert torch.equal(result.x[:, 1], d_last[:, 1]) and torch.allclose(result.x[:, 0], Y.expand(16))
    else:
        assert torch.equal(result.x, d_last)
    if name in SAMPLERS:  # the state at the last call is the sample before the Tweedie step
        assert torch.equal(x_last, run(name, denoise=False).x)


@pytest.mark.parametrize("name", [n for n, s in {**SAMPLERS, **INVERSE}.items() if s.times != "span"])
def test_samplers_on_a_grid_report_each_step_at_its_grid_time(name):
    """i indexes the grid and t = t_i: steps + 1 calls (RePaint: steps·resample + 1, its walk down the grid), edm's
    at its raised noise level σ̂ ≥ σ̃_i, torchsde's in its own steps of (T − t_min)/steps (1 + 1e-9)."""
    _, calls = record(name)
    grid = grid_of(name)
    index = [i for i, *_ in calls]
    times = torch.stack([t for _, t, *_ in calls])
    if name == "repaint":
        assert len(calls) == (len(grid) - 1) * 10 + 1 and index[-1] == len(grid) - 1
    else:
        assert index == list(range(len(grid)))
    if name == "edm":
        assert bool((times >= grid[index] - 1e-12).all()) and bool((times[1:] < times[:-1]).all())
    else:
        torch.testing.assert_close(times, grid[index], rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", ["milstein", "srk"])
def test_torchsde_reports_each_step_whatever_its_stages(method):
    """A step of torchsde's solver makes PER_STEP drift calls; the first is at its start (s_n, y_n)."""
    _, calls = record("torchsde", method=method)
    assert [i for i, *_ in calls] == list(range(9))
    torch.testing.assert_close(torch.stack([t for _, t, *_ in calls]), grid_of("torchsde"), rtol=0, atol=1e-8)
    for _, t, x, denoised in calls:
        torch.testing.assert_close(denoised, SDE.tweedie(x, t, SCORE(x, t.expand(len(x)))), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["dpm_solver", "sde_dpm_solver"])
def test_singlestep_solvers_report_where_each_of_their_steps_starts(name):
    """A singlestep step spans 1–3 grid intervals: its report is at its first grid index."""
    _, calls = record(name, method="singlestep", order=3)
    starts = [0, *accumulate(singlestep_orders(8, 3))]
    assert [i for i, *_ in calls] == starts and starts == [0, 3, 6, 8]
    torch.testing.assert_close(torch.stack([t for _, t, *_ in calls]), grid_of(name)[starts], rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if s.times == "span"])
def test_adaptive_samplers_report_their_accepted_or_tried_steps_from_T_to_t_min(name):
    """rk45: each accepted step, from T down; adaptive_sde: each tried step (a rejected one stays at its time)."""
    _, calls = record(name)
    index = [i for i, *_ in calls]
    times = torch.stack([t for _, t, *_ in calls])
    assert index == list(range(len(calls))) and float(times[0]) == SDE.T and float(times[-1]) == 1e-3
    assert bool((times[1:] < times[:-1]).all() if name == "rk45" else (times[1:] <= times[:-1]).all())


def test_per_sample_adaptive_steps_report_each_samples_time():
    _, calls = record("adaptive_sde", per_sample=True)
    for _, t, x, denoised in calls[:-1]:  # the last: sample's Tweedie step at t_min
        assert t.shape == (16,)
        torch.testing.assert_close(denoised, SDE.tweedie(x, t, SCORE(x, t)), rtol=1e-10, atol=1e-10)
