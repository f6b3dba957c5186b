"""Tensors stay on the input's device. The meta device stands in for an accelerator on any machine: a hidden
`.cpu()`, `.numpy()`, `.item()` or a tensor created on the default device fails there. Paths that must read
values (metrics returning floats, scipy's RK45 round trips, a training step's NaN check) run on CUDA and are
skipped cleanly without a GPU. Samplers are covered in test_sampling_api.py (meta and CUDA)."""

import pytest
import torch
from conftest import SDES, mlp_trainer

from sde_diffusion import VPSDE, eight_gaussians
from sde_diffusion.core import analytic, metrics
from sde_diffusion.data import Digits, EightGaussians
from sde_diffusion.infra.runtime import resolve_device
from sde_diffusion.likelihood import FlowOptions, bits_per_dim, log_likelihood
from sde_diffusion.models import MLP, ScoreModel, UNet
from sde_diffusion.objectives import Objective
from sde_diffusion.sampling import SampleSetup, sample
from sde_diffusion.training import Trainer

META = torch.device("meta")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("sde", SDES.values(), ids=SDES)
def test_sde_coefficients_and_prior_stay_on_the_device(sde):
    t = torch.rand(5, device=META)
    x = torch.randn(5, 3, device=META)
    outs = [sde.f(t), sde.g(t), sde.scale(t), sde.sigma(t), sde.log_snr(t), sde.log_snr_inverse(sde.log_snr(t))]
    outs += [sde.reverse_drift(x, t, -x), sde.reverse_drift(x, t, -x, probability_flow=True), sde.tweedie(x, t, -x)]
    outs += [sde.prior_sampling((5, 3), device=META), sde.prior_logp(x)]
    assert all(o.device == META for o in outs)


@pytest.mark.parametrize(
    "net, shape", [(lambda s: MLP(s, hidden=16, layers=2), (2,)), (lambda s: UNet(s, channels=8), (1, 8, 8))]
)
def test_networks_score_model_and_loss_stay_on_the_device(net, shape):
    sde = VPSDE()
    model = ScoreModel(net(shape), sde).to(META)
    x0 = torch.randn(4, *shape, device=META)
    assert model(x0, torch.rand(4, device=META)).device == META
    draw = Objective(sde).draw(x0.shape, None, device=META)
    assert draw.t.device == draw.noise.device == META
    assert Objective(sde)(model, x0).device == META


def test_oracle_score_and_density_stay_on_the_device():
    gm, sde = eight_gaussians(), VPSDE()
    x = torch.randn(6, 2, device=META, dtype=torch.float64)
    assert gm.score_fn(sde)(x, torch.rand(6, device=META, dtype=torch.float64)).device == META
    assert gm.log_prob(x).device == META


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_fixed_step_likelihood_stays_on_the_device(solver, divergence):
    x = torch.randn(3, 2, device=META)
    ll = log_likelihood(VPSDE(), lambda x, t: -x, x, FlowOptions(divergence, solver=solver, steps=2))
    assert all(v.device == META for v in (ll.log_p, ll.prior_logp, ll.divergence_integral, ll.z))


def test_a_device_torch_does_not_know_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match=r"^device .*'tpu'$"):
        resolve_device("tpu")


def _mlp_trainer(**kw) -> Trainer:
    return mlp_trainer(**{"steps": 4, **kw})


@pytest.mark.parametrize(
    "precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_precision_runs_the_network_under_autocast_and_keeps_fp32_weights(precision, dtype):
    trainer = _mlp_trainer(precision=precision)
    seen = []
    trainer.model.net.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.fit()
    assert set(seen) == {dtype}
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.model.parameters())
    assert ("scaler" in trainer.state_dict()) == (precision == "fp16")


def test_fp16_overflow_is_skipped_not_fatal_and_halves_the_loss_scale():
    trainer = _mlp_trainer(precision="fp16", nan_policy="stop", steps=1)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # loss · 2⁴⁰ overflows fp16 gradients
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.skipped_steps == 1 and trainer.scaler.get_scale() == 2.0**39
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_compile_wraps_the_module_the_loss_calls_and_bad_precision_is_refused():
    trainer = _mlp_trainer(compile=True)  # compiles lazily at the first step (tens of seconds on a CPU: not here)
    assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.train_model._orig_mod is trainer.model
    with pytest.raises(ValueError, match="precision.*fp8"):
        _mlp_trainer(precision="fp8")


@cuda
def test_compiled_training_on_cuda_matches_eager():
    losses = {flag: [] for flag in (False, True)}
    for flag, out in losses.items():
        trainer = _mlp_trainer(
            compile=flag, device="cuda", callbacks=[lambda _, logs, out=out: out.append(logs["loss"])]
        )
        trainer.fit()
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-4, atol=1e-5)


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_keeps_model_ema_and_generators_there(precision):
    data = EightGaussians()
    model = ScoreModel(MLP(data.shape, hidden=32, layers=2), VPSDE())
    trainer = Trainer(model, VPSDE(), data, steps=5, batch_size=32, device="cuda", precision=precision, progress=False)
    trainer.fit()
    tensors = [*trainer.model.parameters(), *trainer.ema_model.parameters(), *trainer.ema_model.buffers()]
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 and torch.isfinite(p).all() for p in tensors)
    assert trainer.noise_generator.device.type == "cuda"


@cuda
def test_unet_training_and_sampling_on_cuda():
    data = Digits()
    model = ScoreModel(UNet(data.shape, channels=8), VPSDE())
    trainer = Trainer(model, VPSDE(), data, steps=3, batch_size=8, device="cuda", precision="bf16", progress=False)
    trainer.fit()
    x = sample(VPSDE(), trainer.ema_model, (4, *data.shape), steps=3, setup=SampleSetup(device="cuda")).x
    assert x.device.type == "cuda" and torch.isfinite(x).all()


@cuda
def test_scipy_round_trips_return_to_cuda():
    """rk45 likelihood and the exact flow map solve on the CPU with scipy and hand results back on x's device."""
    gm, sde = eight_gaussians(), VPSDE()
    x = gm.sample(4, torch.Generator().manual_seed(0)).float().cuda()
    ll = log_likelihood(sde, gm.score_fn(sde), x, FlowOptions(rtol=1e-3, atol=1e-3))
    assert all(v.device.type == "cuda" for v in (ll.log_p, ll.z))
    assert analytic.exact_flow_map(sde, gm, x, 1e-3, rtol=1e-4, atol=1e-4).device.type == "cuda"


@cuda
def test_metrics_accept_cuda_samples():
    gm = eight_gaussians()
    x, y = (gm.sample(64, torch.Generator().manual_seed(s)).float().cuda() for s in (0, 1))
    values = [metrics.sliced_wasserstein(x, y), metrics.mmd2(x, y), metrics.mode_weight_error(gm, x)]
    assert all(isinstance(v, float) for v in values)


@cuda
def test_bits_per_dim_on_cuda():
    data = Digits()
    x = data.batch(4, torch.Generator().manual_seed(0)).cuda()
    bpd = bits_per_dim(VPSDE(), lambda x, t: -x, x, data.scaler, flow=FlowOptions(solver="euler", steps=2))
    assert bpd.bpd.device.type == "cuda"
