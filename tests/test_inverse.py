"""Inverse-problem samplers against the exact posterior of a linear-Gaussian measurement on Gaussian data
(`GaussianMixture.posterior`, the textbook Gaussian conditional): TDS reaches its mean and converges in the particle
count, and stays finite on a trained network; replacement, RePaint and DPS are biased, and their biases are measured
and asserted as biases."""

import math

import pytest
import torch

from sde_diffusion import VESDE, VPSDE, GaussianMixture, SubVPSDE, eight_gaussians
from sde_diffusion.core.metrics import energy_distance
from sde_diffusion.data import EightGaussians
from sde_diffusion.models import MLP, ScoreModel
from sde_diffusion.sampling import SampleSetup, sample
from sde_diffusion.sampling.inverse import Measurement, _resample
from sde_diffusion.training import Trainer

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
N, D = 4096, 4
F64 = dict(dtype=torch.float64)


def gaussian(seed: int = 0) -> GaussianMixture:
    """N(μ, Σ) in 4-D with Σ's eigenvalues 4, 1, 0.1, 0.02 in random directions: strongly correlated coordinates."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, **F64))
    cov = q @ torch.diag(torch.tensor([4.0, 1.0, 0.1, 0.02], **F64)) @ q.T
    return GaussianMixture(torch.ones(1), torch.randn(1, D, generator=g, **F64), (0.5 * (cov + cov.T))[None])


def problem(kind: str = "mask"):
    """Coordinates 0 and 2 observed (noise_std 0.05) or a random 2×4 A (noise_std 0.1), y 2 units off A μ per row."""
    prior = gaussian()
    if kind == "mask":
        A, noise_std = torch.eye(D, **F64)[[0, 2]], 0.05
    else:
        A, noise_std = torch.randn(2, D, generator=torch.Generator().manual_seed(5), **F64), 0.1
    y = A @ prior.mean + torch.tensor([2.0, -2.0], **F64)
    return prior, A, y, noise_std, prior.posterior(A, y, noise_std)


def run(method, sde, prior, A, y, seed=1, noise_std=0.0, steps=None, **kw):
    m = Measurement(A, y, noise_std)
    return sample(
        sde,
        prior.score_fn(sde),
        (N, D),
        method,
        steps,
        measurement=m,
        setup=SampleSetup(generator=torch.Generator().manual_seed(seed), **F64),
        **kw,
    )


def mean_error(x, post) -> float:
    return float((x.mean(0) - post.mean).norm())


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("kind", ["mask", "matrix"])
def test_tds_reaches_the_exact_posterior_mean(sde_name, kind):
    """64 particles: within 0.1 (the posterior's std is 0.31–0.38 on the unobserved coordinates, its mean 3.8 from
    the prior's; measured 0.006–0.054); a single particle (the twisted proposal alone, ΠGDM-like) misses by > 0.15."""
    sde = SDES[sde_name]
    prior, A, y, noise_std, post = problem(kind)
    assert mean_error(run("tds", sde, prior, A, y, steps=100, noise_std=noise_std, particles=64).x, post) < 0.1
    assert mean_error(run("tds", sde, prior, A, y, steps=100, noise_std=noise_std, particles=1).x, post) > 0.15


def test_tds_error_shrinks_as_particles_grow():
    """Asymptotically exact: the mean's error falls with the particle count (measured 0.48, 0.23, 0.07, 0.012)."""
    prior, A, y, noise_std, post = problem()
    errors = [
        mean_error(run("tds", VPSDE(), prior, A, y, steps=100, noise_std=noise_std, particles=k).x, post)
        for k in (1, 4, 16, 64)
    ]
    assert all(a > 1.5 * b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < errors[0] / 10, errors


def test_replacement_is_biased_toward_the_prior_and_consistent():
    """Song et al.'s imputation: the unobserved mean stops short of the exact posterior's, at a fraction f of the
    way from the prior's (measured f = 0.59–0.60 with η = 1, 0.41–0.42 with η = 0, alike at 100 and 1000 steps: a
    bias, not a discretisation error, > 50 standard errors); the observed coordinates equal y exactly."""
    prior, A, y, _, post = problem()
    unknown = torch.tensor([False, True, False, True])
    shift = (post.mean - prior.mean)[unknown]
    for eta, steps, lo, hi in ((1.0, 100, 0.5, 0.7), (1.0, 1000, 0.5, 0.7), (0.0, 100, 0.33, 0.5)):
        x = run("replacement", VPSDE(), prior, A, y, steps=steps, eta=eta).x
        f = float((x.mean(0) - prior.mean)[unknown] @ shift / shift.square().sum())
        assert lo < f < hi, (eta, steps, f)
        se = float(x[:, unknown].std(0).max()) / math.sqrt(N)
        assert (1 - f) * float(shift.norm()) > 50 * se
        torch.testing.assert_close(x @ A.T, y.expand(N, 2), atol=1e-12, rtol=0)


def test_repaint_resampling_shrinks_the_replacement_bias():
    """RePaint's resampling harmonises the unknown part with the known: the mean's error falls with the resample
    count at 50 steps, jump length 5 (measured 1.11, 0.34, 0.081 for r = 1, 5, 20), though it does not vanish."""
    prior, A, y, _, post = problem()
    errors = [
        mean_error(run("repaint", VPSDE(), prior, A, y, steps=50, jump_length=5, resample=r).x, post)
        for r in (1, 5, 20)
    ]
    assert errors[0] > 0.9 and errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2, errors
    assert errors[2] > 0.04, errors


def test_dps_is_biased_beyond_monte_carlo_error():
    """DPS replaces p(y | x_t) by p(y | x̂₀(x_t)) and is not consistent: at 1000 steps its mean misses the exact one by
    0.41–0.59 for ζ in [0.1, 3] (measured), 1.1–1.6 posterior stds and > 40 standard errors, yet is far nearer than
    the prior's (3.8 away); its consistency error ‖A x − y‖ RMS grows with ζ (0.04 at ζ = 0.1, 1.1 at ζ = 3)."""
    prior, A, y, _, post = problem()
    for zeta in (0.1, 1.0):
        x = run("dps", VPSDE(), prior, A, y, steps=1000, zeta=zeta).x
        err, se = mean_error(x, post), float(x.std(0).max()) / math.sqrt(N)
        assert 0.3 < err < 0.7 and err > 40 * se, (zeta, err, se)
    assert float((x @ A.T - y).square().mean().sqrt()) > 0.2


class _Counter(torch.autograd.Function):
    """Identity that counts the backward passes through it."""

    backward_calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        _Counter.backward_calls += 1
        return grad


@pytest.mark.parametrize(
    "method, kw, nfe, vjp",
    [
        ("replacement", dict(steps=7), 8, 0),
        ("repaint", dict(steps=7, jump_length=3, resample=4), 7 * 4 + 1, 0),
        ("dps", dict(steps=7), 8, 7),
        ("tds", dict(steps=7, particles=4), 8, 7),
    ],
)
def test_nfe_counts_every_score_call_and_backward_pass(method, kw, nfe, vjp):
    prior, A, y, _, _ = problem()
    sde, calls = VPSDE(), []
    _Counter.backward_calls = 0

    def score(x, t):
        calls.append(len(x))
        return prior.score_fn(sde)(_Counter.apply(x), t)

    r = sample(sde, score, (16, D), method, measurement=Measurement(A, y, 0.1), **kw)
    assert (r.nfe, r.vjp) == (nfe, vjp) == (len(calls), _Counter.backward_calls)
    assert set(calls) == {16} and r.x.shape == (16, D)


def test_bad_arguments_are_named():
    prior, A, y, _, _ = problem()
    sde, score = VPSDE(), prior.score_fn(VPSDE())
    cases = [
        ("replacement", dict(A=A[:, :3]), "A must be"),
        ("replacement", dict(steps=0), "steps"),
        ("replacement", dict(t_min=2.0), "t_min.*2.0"),
        ("replacement", dict(eta=1.5), "eta"),
        ("replacement", dict(denoise=False), "denoise=False: True"),
        ("repaint", dict(resample=0), "resample"),
        ("dps", dict(zeta=-1.0), "zeta"),
        ("dps", dict(measurement=None), "measurement=None: Measurement"),
        ("tds", dict(noise_std=0.0), "noise_std"),
        ("tds", dict(particles=3), "particles"),
        ("tds", dict(eta=0.0), "eta"),
        ("tds", dict(max_shift=0.0), "max_shift.*0.0"),
    ]
    for method, kw, match in cases:
        args = dict(A=A, y=y, noise_std=0.1) | kw
        m = Measurement(args.pop("A"), args.pop("y"), args.pop("noise_std"))
        with pytest.raises(ValueError, match=match):
            sample(sde, score, (16, D), method, **{"measurement": m} | args)
    with pytest.raises(ValueError, match="noise_std must be a number >= 0"):
        Measurement(A, y, -0.1)
    with pytest.raises(ValueError, match=r"A must be an \(m, D\) matrix with y of shape \(m,\)"):
        Measurement(A, y[:1])


def test_resampling_drops_non_finite_weights_and_names_a_dead_group():
    """A NaN or ±inf log weight is a zero weight: never drawn, even when every other weight is tiny; a group with no
    finite weight left is a FloatingPointError naming it and t."""
    log_w = torch.tensor([[math.nan, -1e4, math.inf, -math.inf], [0.0, 0.0, 0.0, 0.0]], **F64)
    for seed in range(20):
        ancestor, after = _resample(log_w, torch.Generator().manual_seed(seed), 0.5, every=True)
        assert (ancestor[0] == 1).all() and (after == 0).all()
    with pytest.raises(FloatingPointError, match="group 1 .*t=0.25"):
        _resample(torch.tensor([[0.0, 1.0], [math.nan, -math.inf]], **F64), None, 0.25, every=False)


@pytest.fixture(scope="module")
def trained_score():
    """An MLP (3×128) trained on 8-Gaussians for 2000 steps: its samples are good, but the Jacobian of its x̂₀ near T
    is far from the exact one (its ε error is multiplied by 1/α there)."""
    torch.manual_seed(0)
    sde = VPSDE()
    net = ScoreModel(MLP((2,), hidden=128, layers=3), sde)  # the settings its figures were measured with
    t = Trainer(net, sde, EightGaussians(), steps=2000, batch_size=512, lr=2e-3, warmup=50, ema_decay=0.999, seed=0,
                progress=False)  # fmt: skip
    t.fit()
    model = t.ema_model.requires_grad_(False)
    return sde, lambda x, t: model(x, t)


@pytest.mark.slow
def test_tds_on_a_trained_network_stays_finite_and_consistent(trained_score):
    """x₂ observed at three values (σ_y = 0.05): the bounded proposal gives finite samples within the data's range,
    their consistency RMS within 25% of σ_y, their energy distance to the exact posterior below 0.1 (measured
    −0.012–0.034; replacement's 0.077 at y = −2.8). Wu et al.'s unbounded proposal (max_shift = inf) on the same
    network throws whole groups far off the data (or stops with FloatingPointError): the twisting gradient through
    the network's x̂₀ near T is the cause."""
    sde, score = trained_score
    A, oracle = torch.tensor([[0.0, 1.0]]), eight_gaussians()
    for y in (-2.8, 0.1, 2.8):
        y = torch.tensor([y])
        kw = dict(
            measurement=Measurement(A, y, 0.05),
            particles=16,
            setup=SampleSetup(generator=torch.Generator().manual_seed(1)),
        )
        x = sample(sde, score, (256, 2), "tds", 100, **kw).x
        assert torch.isfinite(x).all() and x.abs().max() < 10
        assert 0.8 * 0.05 < float((x[:, 1] - y).square().mean().sqrt()) < 1.25 * 0.05
        exact = oracle.posterior(A.double(), y.double(), 0.05).sample(256, torch.Generator().manual_seed(2))
        assert energy_distance(x.double(), exact) < 0.1
        try:
            wild = sample(sde, score, (256, 2), "tds", 100, max_shift=math.inf, **kw).x
            assert (~torch.isfinite(wild) | (wild.abs() > 100)).any(1).sum() >= 16  # a whole group at least
        except FloatingPointError:
            pass
