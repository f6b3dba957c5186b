"""The `sample` entry point: validation, shapes, dtype, devices, reproducibility, chunking, NFE and failures."""

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, eight_gaussians
from sde_diffusion.core.checks import ArgumentError
from sde_diffusion.sampling import INVERSE, SAMPLERS, SampleSetup, SolverError, sample, timesteps
from sde_diffusion.sampling.inverse import Measurement

SDE = VPSDE()
MIX = eight_gaussians()
STEPS = {"ancestral": 50, "rk45": None, "adaptive_sde": None}  # DDPM's chain needs β_i = β(t_i)/N < 1; adaptive


def image_score(x, t):
    """The oracle's score for samples shaped (n, 1, 2, 1): any-rank inputs through a flat score."""
    return MIX.score_fn(SDE)(x.flatten(1), t).view_as(x)


MEASURED = {"measurement": Measurement(torch.eye(2)[:1], torch.ones(1), 0.1), "particles": 2}  # x₁ = 1 seen


@pytest.mark.parametrize("name", [*SAMPLERS, *INVERSE])
def test_any_rank_dtype_reproducible_and_no_graph(name):
    def score(x, t):
        assert (not torch.is_grad_enabled() or name in ("dps", "tds")) and t.shape == (x.shape[0],)
        assert t.dtype == x.dtype
        return image_score(x, t)

    def run(seed):
        extra = {k: v for k, v in MEASURED.items() if k in INVERSE[name].options} if name in INVERSE else {}
        return sample(
            SDE,
            score,
            (6, 1, 2, 1),
            sampler=name,
            steps=STEPS.get(name, 8),
            setup=SampleSetup(dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
            **extra,
        )

    a, b, c = run(0), run(0), run(1)
    assert a.x.shape == (6, 1, 2, 1) and a.x.dtype == torch.float64 and not a.x.requires_grad
    assert torch.isfinite(a.x).all()
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize(
    ("name", "steps", "opts", "nfe"),
    [
        ("euler_maruyama", 7, {}, 8),
        ("pc", 7, {"corrector_steps": 2}, 22),
        ("ancestral", 50, {}, 50),
        ("ode_euler", 7, {}, 8),
        ("ode_heun", 7, {}, 15),
        ("dpm_solver", 7, {"method": "multistep"}, 8),
        ("dpm_solver", 7, {"method": "singlestep", "order": 3}, 8),
        ("torchsde", 7, {}, 9),
    ],
)
def test_nfe_is_counted_honestly(name, steps, opts, nfe):
    calls = []

    def score(x, t):
        calls.append(1)
        return MIX.score_fn(SDE)(x, t)

    r = sample(
        SDE,
        score,
        (5, 2),
        sampler=name,
        steps=steps,
        setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
        **opts,
    )
    assert r.nfe == len(calls) == nfe


def test_rk45_nfe_is_the_solvers():
    calls = []

    def score(x, t):
        calls.append(1)
        return MIX.score_fn(SDE)(x, t)

    r = sample(
        SDE, score, (5, 2), sampler="rk45", denoise=False, setup=SampleSetup(generator=torch.Generator().manual_seed(0))
    )
    assert r.nfe == len(calls) > 20


@pytest.mark.parametrize(
    ("name", "opts", "atol"),
    [("ode_heun", {}, 1e-12), ("dpm_solver", {}, 1e-12), ("rk45", {"rtol": 1e-9, "atol": 1e-9}, 1e-6)],
)
def test_batch_size_chunks_give_the_same_samples_for_deterministic_solvers(name, opts, atol):
    """float64: fixed grids agree to rounding; rk45 picks its steps per chunk, so to its tolerance (global error
    of a 1e-9 local tolerance over one unit of time, with room)."""
    x_T = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    run = dict(sampler=name, steps=STEPS.get(name, 10), **opts)
    whole = sample(SDE, MIX.score_fn(SDE), (10, 2), setup=SampleSetup(x_T=x_T, dtype=torch.float64), **run)
    chunked = sample(
        SDE, MIX.score_fn(SDE), (10, 2), setup=SampleSetup(x_T=x_T, dtype=torch.float64, batch_size=3), **run
    )
    torch.testing.assert_close(chunked.x, whole.x, rtol=0, atol=atol)


def test_chunks_draw_their_noise_from_the_one_generator_in_chunk_order():
    """batch_size=3 is the chunks 3, 3, 3, 1 sampled one after the other from the same generator, bit for bit."""
    x_T = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    run = dict(sampler="euler_maruyama", steps=10)
    chunked = sample(
        SDE,
        MIX.score_fn(SDE),
        (10, 2),
        setup=SampleSetup(x_T=x_T, batch_size=3, generator=torch.Generator().manual_seed(1)),
        **run,
    ).x
    g = torch.Generator().manual_seed(1)
    parts = [
        sample(SDE, MIX.score_fn(SDE), tuple(c.shape), setup=SampleSetup(x_T=c, generator=g), **run).x
        for c in x_T.split(3)
    ]
    torch.testing.assert_close(chunked, torch.cat(parts), rtol=0, atol=0)
    once = sample(
        SDE, MIX.score_fn(SDE), (10, 2), setup=SampleSetup(x_T=x_T, generator=torch.Generator().manual_seed(1)), **run
    ).x
    assert not torch.equal(chunked, once)  # the noise of a chunk is not the whole batch's rows


def test_rk45_failure_names_the_time_reached():
    def score(x, t):
        out = MIX.score_fn(SDE)(x, t)
        return out if float(t[0]) > 0.5 else out * float("nan")

    with pytest.raises(SolverError, match=r"rk45 stopped at t=(1|0\.[5-9]\d*) .*not finite at t=0\.[0-4]"):
        sample(SDE, score, (4, 2), sampler="rk45", setup=SampleSetup(generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in ("rk45", "torchsde", "adaptive_sde")])
def test_tensors_stay_on_the_input_device(name):
    """The meta device stands in for an accelerator: any hidden .cpu() or float() of a sample would fail."""
    x_T = torch.randn(4, 3, device="meta")
    r = sample(
        SDE, lambda x, t: -x * t[:, None], (4, 3), sampler=name, steps=STEPS.get(name, 5), setup=SampleSetup(x_T=x_T)
    )
    assert r.x.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", [*SAMPLERS, *INVERSE])
def test_cuda_samples_stay_on_cuda(name):
    g = torch.Generator(device="cuda").manual_seed(0)
    extra = {k: v for k, v in MEASURED.items() if k in INVERSE[name].options} if name in INVERSE else {}
    r = sample(
        SDE,
        MIX.score_fn(SDE),
        (16, 2),
        sampler=name,
        steps=STEPS.get(name, 10),
        setup=SampleSetup(generator=g, device="cuda"),
        **extra,
    )
    assert r.x.device.type == "cuda" and torch.isfinite(r.x).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "heun"}, r"name='heun': one of \[.*'ancestral'"),
        ({"sampler": "ode_euler", "order": 2}, r"options\.order=2: .*takes options: spacing"),
        ({"sampler": "dpm_solver", "order": 4}, r"options\.order=4: one of \[1, 2, 3\]"),
        ({"sampler": "dpm_solver", "method": "adaptive"}, r"options\.method='adaptive': one of \['multistep'"),
        ({"sampler": "dpm_solver", "algorithm": "unipc"}, r"options\.algorithm='unipc': one of"),
        ({"sampler": "dpm_solver", "spacing": "cosine"}, r"options\.spacing='cosine': one of \['time_uniform'"),
        ({"sampler": "dpm_solver", "lower_order_final": 1}, r"options\.lower_order_final=1: one of \[True, False\]"),
        ({"sampler": "ode_heun", "rho": 0}, r"options\.rho=0: a number > 0"),
        ({"sampler": "pc", "predictor": "ancestral"}, r"options\.predictor='ancestral': one of"),
        ({"sampler": "pc", "snr": -1.0}, r"options\.snr=-1\.0: a number > 0"),
        ({"sampler": "pc", "corrector_steps": -1}, r"options\.corrector_steps=-1: an int >= 0"),
        ({"sampler": "pc", "corrector_steps": 1.5}, r"options\.corrector_steps=1\.5: an int >= 0"),
        ({"sampler": "ancestral", "variance": "learned"}, r"options\.variance='learned': one of \['beta'"),
        ({"sampler": "rk45", "steps": None, "rtol": 0.0}, r"options\.rtol=0\.0: a number > 0"),
        ({"sampler": "rk45"}, r"rk45: steps=10: None: an adaptive sampler picks its own steps"),
        ({"sampler": "ancestral", "t_min": 0.01}, r"ancestral: t_min=0\.01: None: its last time is its chain's"),
        ({"sampler": "torchsde", "spacing": "logsnr"}, r"options\.spacing='logsnr': one of \['time_uniform', 'cus"),
        ({"sampler": "torchsde", "method": "heun"}, r"options\.method='heun': one of \['euler'"),
        ({"steps": 0}, r"steps=0: an int >= 1"),
        ({"steps": 2.5}, r"steps=2\.5: an int >= 1"),
        ({"sampler": "ancestral", "steps": 1}, r"steps=1: an int >= 2"),
        ({"t_min": 0.0}, r"t_min=0\.0: a number in \(0, T=1\)"),
        ({"batch_size": 0}, r"batch_size=0"),
        ({"x_T": torch.zeros(3, 2)}, r"x_T must be of shape=\(4, 2\), got \(3, 2\)"),
    ],
)
def test_bad_input_raises_value_error_naming_key_and_value(kwargs, match):
    setup = {k: v for k, v in kwargs.items() if k in SampleSetup.__dataclass_fields__}
    options = {k: v for k, v in kwargs.items() if k not in setup}
    with pytest.raises(ValueError, match=match):
        sample(SDE, MIX.score_fn(SDE), (4, 2), setup=SampleSetup(**setup), **{"steps": 10, **options})


def test_a_setup_field_given_as_an_option_says_where_it_goes():
    with pytest.raises(ArgumentError, match=r"generator must be given as setup=SampleSetup\(generator=...\)"):
        sample(SDE, MIX.score_fn(SDE), (4, 2), steps=10, generator=torch.Generator())


def test_ancestral_needs_a_vp_sde():
    with pytest.raises(ValueError, match="name='ancestral': needs a VPSDE, got VESDE"):
        sample(VESDE(), lambda x, t: -x, (4, 2), sampler="ancestral", steps=10)


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if s.spacing])
def test_a_custom_grid_is_the_grid_it_names(name):
    """timesteps = the logSNR grid (with or without spacing="custom") is the logSNR run, sample for sample (the
    uniform grid for torchsde, which takes no other)."""
    spacing = "time_uniform" if name == "torchsde" else "logsnr"
    grid = timesteps(SDE, 6, 1e-3, spacing).tolist()
    runs = [
        sample(
            SDE,
            MIX.score_fn(SDE),
            (5, 2),
            sampler=name,
            steps=6,
            setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
            **o,
        )
        for o in ({"spacing": spacing}, {"spacing": "custom", "timesteps": grid}, {"timesteps": grid})
    ]
    for run in runs[1:]:
        torch.testing.assert_close(run.x, runs[0].x, rtol=0, atol=0)


def test_the_sampler_walks_the_grid_sample_builds():
    """A grid sampler gets the grid of its spacing at `steps` and nothing else: ode_euler's result is Euler's
    recursion on `timesteps(sde, steps, t_min, spacing)` written out here."""
    score, x_T = MIX.score_fn(SDE), torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = timesteps(SDE, 4, 0.01, "time_quadratic")
    x = x_T
    for s, u in zip(t[:-1], t[1:], strict=True):
        x = x + (u - s) * SDE.reverse_drift(x, s, score(x, s.expand(5)), True)
    out = sample(
        SDE,
        score,
        (5, 2),
        "ode_euler",
        4,
        0.01,
        denoise=False,
        spacing="time_quadratic",
        setup=SampleSetup(x_T=x_T, dtype=torch.float64),
    ).x
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("grid", "spacing"),
    [([1.0, 0.5, 1e-3], "custom"), ([1.0, 0.3, 0.5, 1e-3], "custom"), ([0.9, 0.5, 0.2, 1e-3], "custom"),
     (None, "custom"), ([1.0, 0.5, 0.2, 1e-3], "logsnr")],
)  # fmt: skip
def test_a_bad_custom_grid_is_named(grid, spacing):
    with pytest.raises(ValueError, match="timesteps"):
        sample(SDE, MIX.score_fn(SDE), (4, 2), sampler="ode_euler", steps=3, spacing=spacing, timesteps=grid)


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if s.by_steps])
def test_options_not_given_or_none_are_the_defaults_for_these_steps(name):
    """`sample` runs `defaults(steps)` of the spec (README's last column) when no option or None is given."""
    spec = SAMPLERS[name]
    for steps in sorted({*spec.by_steps, max(spec.by_steps) + 1}):
        x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
        run = dict(sampler=name, steps=steps)
        given = spec.defaults(steps)
        plain = sample(
            SDE,
            MIX.score_fn(SDE),
            (5, 2),
            setup=SampleSetup(torch.Generator().manual_seed(0), x_T=x_T, dtype=torch.float64),
            **run,
        ).x
        nulls = sample(
            SDE,
            MIX.score_fn(SDE),
            (5, 2),
            setup=SampleSetup(torch.Generator().manual_seed(0), x_T=x_T, dtype=torch.float64),
            **run,
            **dict.fromkeys(given),
        ).x
        full = sample(
            SDE,
            MIX.score_fn(SDE),
            (5, 2),
            setup=SampleSetup(torch.Generator().manual_seed(0), x_T=x_T, dtype=torch.float64),
            **run,
            **given,
        ).x
        torch.testing.assert_close(plain, full, rtol=0, atol=0)
        torch.testing.assert_close(nulls, full, rtol=0, atol=0)
