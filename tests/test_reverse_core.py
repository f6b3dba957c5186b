"""One reverse-dynamics core: every caller of the reverse-SDE / probability-flow drift and of Tweedie's step gives
the closed form f(t)x − c·g(t)²∇log p_t(x) and (x + σ²∇log p)/s, to float precision; and the sampler specs."""

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sde_diffusion import VESDE, VPSDE, CosineBeta, SubVPSDE, eight_gaussians
from sde_diffusion.likelihood.ode import _rhs
from sde_diffusion.sampling import INVERSE, SAMPLERS, SampleSetup, sample, sampler_table
from sde_diffusion.sampling.common import drift, tweedie_denoise
from sde_diffusion.sampling.dpm_solver import _Model
from sde_diffusion.sampling.inverse import Measurement
from sde_diffusion.sampling.specs import register
from sde_diffusion.sampling.torchsde_sdeint import _ReverseInS

SDES = {"vp": VPSDE(), "vp_cosine": VPSDE(CosineBeta()), "subvp": SubVPSDE(), "ve": VESDE()}
MIX = eight_gaussians()


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_caller_gives_the_same_drift(name, dtype):
    sde = SDES[name]
    score_fn = MIX.score_fn(sde)
    x = (3 * torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).to(dtype)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for t in (0.05, 0.5, 0.97):
        t64 = torch.tensor([t], dtype=torch.float64)
        f, g2 = float(sde.f(t64)), float(sde.g(t64) ** 2)
        score = score_fn(x, torch.full((7,), t, dtype=dtype))
        for c, pf in ((1.0, False), (0.5, True)):
            closed = (f * x.double() - c * g2 * score.double()).to(dtype)
            callers = {
                "SDE.reverse_drift": sde.reverse_drift(x, torch.full((7,), t, dtype=dtype), score, pf),
                "sampling.drift": drift(sde, score_fn, x, t64[0], pf),
            }
            if pf:
                callers["likelihood"] = _rhs(sde, score_fn, None)(x, t)[0]
            else:  # torchsde solves the reverse SDE in s = T − t
                s = torch.tensor(sde.T - t, dtype=torch.float64)
                callers["torchsde"] = -_ReverseInS(sde, score_fn, x.shape).f(s, x)
            for who, d in callers.items():
                torch.testing.assert_close(d, closed, **tol, msg=lambda m, who=who: f"{who}: {m}")


@pytest.mark.parametrize("name", SDES)
def test_every_caller_gives_the_same_tweedie_step(name):
    sde = SDES[name]
    score_fn = MIX.score_fn(sde)
    x = 3 * torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    s, sigma = float(sde.scale(t.reshape(1))), float(sde.sigma(t.reshape(1)))
    closed = (x + sigma**2 * score_fn(x, t.expand(7))) / s
    torch.testing.assert_close(tweedie_denoise(sde, score_fn, x, t), closed, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_Model(sde, score_fn, data_prediction=True)(x, t), closed, rtol=1e-12, atol=1e-12)


ROOT = Path(__file__).resolve().parents[1]


def test_specs_declare_their_options_and_nfe():
    for name, spec in {**SAMPLERS, **INVERSE}.items():
        assert spec.name == name and spec.summary()
        for steps in (None, *spec.by_steps, *(n + 1 for n in spec.by_steps)):
            for key, default in spec.defaults(steps).items():  # every default is itself allowed
                assert key in spec.options and spec.options[key].accepts(default), (name, steps, key, default)


def test_by_steps_defaults_cover_steps_up_to_their_bound():
    @register("_probe", stochastic=False, nfe=lambda s, o: s, nfe_text="steps", grid="logsnr",
              by_steps={4: {"spacing": "karras"}, 9: {"spacing": "time_uniform"}})  # fmt: skip
    def probe(run, x, t):
        """A probe."""

    spec = SAMPLERS.pop("_probe")
    spacings = [spec.defaults(n)["spacing"] for n in (1, 4, 5, 9, 10, None)]
    assert spacings == ["karras", "karras", "time_uniform", "time_uniform", "logsnr", "logsnr"]
    with pytest.raises(TypeError, match="by_steps"):
        register("_bad", stochastic=False, nfe=lambda s, o: s, nfe_text="", grid="logsnr",
                 by_steps={4: {"spacing": "cosine"}})(probe)  # fmt: skip
    assert "_bad" not in SAMPLERS


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "sampler").glob("*.yaml")), ids=lambda p: p.stem)
def test_sampler_configs_carry_only_what_differs_from_the_python_defaults(path):
    """Every option is listed (so `sampler.options.X=` overrides it), as null unless it differs from the Python
    default: a restated default would pin it against the defaults by steps, and go stale."""
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    spec = SAMPLERS[cfg["name"]]
    assert list(cfg["options"]) == list(spec.options), f"{path.name}: list options {list(spec.options)}, as null"
    same = {k: v for k, v in cfg["options"].items() if v is not None and spec.defaults().get(k) == v}
    assert not same, f"{path.name}: set {sorted(same)} to null, their Python defaults"
    t_min = None if callable(spec.times) else 1e-3  # ancestral's chain takes none
    assert (cfg["t_min"], cfg["denoise"]) == (t_min, True), f"{path.name}: t_min and denoise as sample()'s defaults"
    assert (cfg["steps"] is None) == (spec.times == "span"), f"{path.name}: steps null exactly when adaptive"


SPECS = {**SAMPLERS, **INVERSE}


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.nfe(s.min_steps, s.defaults()) is not None])
def test_nfe_is_what_the_spec_declares(name):
    """NFE = the spec's + 1: sample's Tweedie step, or an inverse method's own."""
    spec, sde = SPECS[name], VPSDE()
    steps = max(spec.min_steps, 50)  # DDPM's chain needs β_i = β(t_i)/N < 1
    measured = {"measurement": Measurement(torch.eye(2)[:1], torch.zeros(1), 0.1)} if spec.measured else {}
    r = sample(
        sde,
        MIX.score_fn(sde),
        (16, 2),
        sampler=name,
        steps=steps,
        setup=SampleSetup(generator=torch.Generator().manual_seed(0)),
        **measured,
    )
    assert r.nfe == spec.nfe(steps, spec.defaults()) + 1


def test_readme_table_is_the_specs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = sampler_table()
    assert table in readme, "README.md's sampler table is stale: paste sde_diffusion.sampling.sampler_table()"
    assert len(re.findall(r"^\| `", table, re.M)) == len(SAMPLERS) + len(INVERSE) == 17
