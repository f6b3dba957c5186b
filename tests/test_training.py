"""The training loop: bitwise reproducibility and lossless resume on the CPU, the NaN guard, the learning-rate
schedule and the EMA against their formulas, stopping on a signal at a step boundary, and a short run that
approaches the oracle's DSM minimum."""

import math
import os
import signal

import numpy as np
import pytest
import torch
from conftest import NaNAt, mlp_trainer

from sde_diffusion import VPSDE
from sde_diffusion.data import Digits, EightGaussians
from sde_diffusion.infra.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sde_diffusion.infra.runtime import seed_everything
from sde_diffusion.models import MLP, ScoreModel, UNet
from sde_diffusion.objectives import Objective
from sde_diffusion.training import NonFiniteLossError, Preempted, StopOnSignal, Trainer
from sde_diffusion.training.preemption import stop_signals


def _unet_trainer(seed=0, steps=12, init_seed=0):
    seed_everything(init_seed)
    data = Digits()
    net = UNet(data.shape, channels=8, mults=(1, 2), dropout=0.2)  # dropout draws from the global RNG
    return Trainer(
        ScoreModel(net, VPSDE()), VPSDE(), data, steps=steps, batch_size=8, warmup=3, seed=seed, progress=False
    )


def _weights(trainer):
    return [
        t.clone() for t in list(trainer.model.state_dict().values()) + list(trainer.ema_model.state_dict().values())
    ]


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_same_seed_gives_bitwise_the_same_weights():
    a, b, c = mlp_trainer(), mlp_trainer(), mlp_trainer(seed=1)
    for t in (a, b, c):
        t.fit()
    assert _equal(_weights(a), _weights(b)) and not _equal(_weights(a), _weights(c))


@pytest.mark.parametrize("make, n, k", [(mlp_trainer, 30, 13), (_unet_trainer, 12, 5)])
def test_resume_from_a_checkpoint_is_bitwise_lossless(tmp_path, make, n, k):
    full = make(steps=n)
    full.fit()
    first = make(steps=n)
    first.steps = k
    first.fit()
    first.steps = n
    save_checkpoint(tmp_path / "ck.pt", first.state_dict())
    torch.rand(100), np.random.rand()  # noqa: NPY002 (the global RNGs move on before the new process loads)
    resumed = make(steps=n, init_seed=123)  # a new process: different initial weights, same config
    resumed.load_state_dict(load_checkpoint(tmp_path / "ck.pt"))
    assert resumed.step == k
    resumed.fit()
    assert _equal(_weights(full), _weights(resumed))
    assert _equal(
        list(full.optimizer.state_dict()["state"][0].values()),
        list(resumed.optimizer.state_dict()["state"][0].values()),
    )
    assert torch.equal(full.data_generator.get_state(), resumed.data_generator.get_state())


def test_loading_a_state_for_another_model_names_the_keys():
    state = mlp_trainer().state_dict()
    seed_everything(0)
    other = Trainer(
        ScoreModel(MLP((2,), hidden=16, layers=3), VPSDE()), VPSDE(), EightGaussians(), steps=5, batch_size=4
    )
    with pytest.raises(CheckpointError, match=r"'model' does not fit.*unexpected|missing.*net\.6"):
        other.load_state_dict(state)


def _nan_trainer(policy, steps=8, logs=None):
    seed_everything(0)
    model = ScoreModel(MLP((2,), hidden=16, layers=1), VPSDE())
    cbs = [lambda t, log: logs.append(log)] if logs is not None else []
    return Trainer(
        model, VPSDE(), NaNAt([5]), steps=steps, batch_size=16, seed=0, nan_policy=policy, progress=False, callbacks=cbs
    )


def test_nan_in_the_data_stops_before_touching_the_weights():
    clean = _nan_trainer("stop", steps=4)
    clean.fit()
    t = _nan_trainer("stop")
    with pytest.raises(NonFiniteLossError, match=r"at step 5 .*data batch contains NaN") as e:
        t.fit()
    assert "\n" not in str(e.value)
    assert t.step == 4 and _equal(_weights(t), _weights(clean))


def test_nan_skip_policy_skips_and_counts():
    logs = []
    t = _nan_trainer("skip", logs=logs)
    t.fit()
    assert t.step == 8 and t.skipped_steps == 1
    assert [log["skipped_steps"] for log in logs] == [0, 0, 0, 0, 1, 1, 1, 1] and math.isnan(logs[4]["loss"])
    assert all(torch.isfinite(w).all() for w in _weights(t))


def test_huge_learning_rate_trips_the_guard_with_the_lr_in_the_message():
    seed_everything(0)
    model = ScoreModel(MLP((2,), hidden=64, layers=3), VPSDE())
    t = Trainer(
        model, VPSDE(), EightGaussians(), steps=200, batch_size=64, lr=1e15, warmup=0, grad_clip=None, progress=False
    )
    with pytest.raises(NonFiniteLossError, match=r"diverged: lower the learning rate \(lr=1e\+15"):
        t.fit()


def test_learning_rate_and_ema_follow_their_formulas():
    logs, params = [], []
    record = lambda t, log: (logs.append(log), params.append([p.detach().clone() for p in t.model.parameters()]))  # noqa: E731
    t = mlp_trainer(steps=20, callbacks=[record], lr=1e-2)
    ema = [p.detach().clone() for p in t.model.parameters()]
    t.fit()
    warmup, steps = 5, 20
    expected_lr = [
        1e-2 * ((s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
        for s in range(steps)
    ]
    assert [log["lr"] for log in logs] == pytest.approx(expected_lr, rel=1e-12)
    assert [log["step"] for log in logs] == list(range(1, 21)) and all(log["grad_norm"] > 0 for log in logs)
    for n, p in enumerate(params):  # EMA with decay min(0.999, (1 + n)/(10 + n)) after step n
        d = min(0.999, (1 + n) / (10 + n))
        ema = [d * e.double() + (1 - d) * q.double() for e, q in zip(ema, p, strict=True)]
    for e, q in zip(ema, t.ema_model.parameters(), strict=True):
        assert torch.allclose(e.float(), q, atol=1e-6)


def test_gradient_clipping_bounds_the_applied_gradient():
    norms = []
    t = mlp_trainer(
        steps=3,
        grad_clip=1e-3,
        callbacks=[
            lambda t, log: norms.append(
                (log["grad_norm"], torch.cat([p.grad.flatten() for p in t.model.parameters()]).norm().item())
            )
        ],
    )
    t.fit()
    assert all(reported > 1e-3 and applied == pytest.approx(1e-3, rel=1e-4) for reported, applied in norms)


@pytest.mark.parametrize(
    "kw",
    [
        {"steps": 0},
        {"batch_size": 1.5},
        {"lr": 0.0},
        {"ema_decay": 1.0},
        {"nan_policy": "ignore"},
        {"grad_clip": -1.0},
        {"warmup": -1},
        {"seed": -1},
        {"precision": "fp8"},
        {"compile": "yes"},
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_parameter_and_value(kw):
    ((name, value),) = kw.items()
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got {value!r}$"):
        Trainer(ScoreModel(MLP((2,)), VPSDE()), VPSDE(), EightGaussians(), **({"steps": 10, "batch_size": 8} | kw))


# ---------------------------------------------------------------------------- stopping on a signal (preemption)


@pytest.fixture
def usr1():
    """SIGUSR1 with its default action before and after the test."""
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield signal.SIGUSR1
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def _signal_during_step(n: int):
    """A forward pre-hook that sends this process SIGUSR1 during the forward pass of step n (1-based)."""
    calls = []

    def hook(module, args):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGUSR1)

    return hook


def test_a_signal_mid_step_stops_after_that_step_and_the_resumed_run_is_bitwise_the_same(tmp_path, usr1):
    full = mlp_trainer(steps=20)
    full.fit()
    stop = StopOnSignal([usr1])
    first = mlp_trainer(steps=20, callbacks=[stop])
    first.model.register_forward_pre_hook(_signal_during_step(7))
    with stop, pytest.raises(Preempted, match="stopped by SIGUSR1 after step 7") as info:
        first.fit()
    assert first.step == info.value.step == 7 and info.value.signum == usr1  # step 7 itself was completed
    assert signal.getsignal(usr1) is signal.SIG_DFL  # the handler is restored when the block ends
    save_checkpoint(tmp_path / "last.pt", first.state_dict())
    resumed = mlp_trainer(steps=20, init_seed=5)
    resumed.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    resumed.fit()
    assert _equal(_weights(full), _weights(resumed))


def test_resend_hands_the_signal_to_the_handler_installed_before(usr1):
    seen = []
    signal.signal(usr1, lambda signum, frame: seen.append(signum))
    stop = StopOnSignal([usr1])
    send = lambda t, logs: os.kill(os.getpid(), usr1) if t.step == 3 else None  # noqa: E731
    trainer = mlp_trainer(steps=10, callbacks=[send, stop])
    with stop, pytest.raises(Preempted) as info:
        trainer.fit()
    assert trainer.step == 3 and seen == []  # held while the block was active
    with pytest.raises(SystemExit) as exit_info:
        info.value.resend()  # e.g. submitit's handler, which requeues; it returned, so 128 + signum
    assert seen == [usr1] and exit_info.value.code == 128 + usr1


def test_a_signal_after_the_last_step_is_resent_when_the_block_ends(usr1):
    events = []
    signal.signal(usr1, lambda signum, frame: events.append("handler"))
    stop = StopOnSignal([usr1])
    send = lambda t, logs: os.kill(os.getpid(), usr1) if t.step == 4 else None  # noqa: E731
    trainer = mlp_trainer(steps=4, callbacks=[stop, send])  # after the stop's last look
    with pytest.raises(SystemExit), stop:
        trainer.fit()
        events.append("saved")
    assert trainer.step == 4 and events == ["saved", "handler"]


def test_ignored_signals_stay_ignored_and_no_signal_means_no_stop(usr1):
    signal.signal(usr1, signal.SIG_IGN)
    stop = StopOnSignal([usr1, signal.SIGUSR2])
    trainer = mlp_trainer(steps=3, callbacks=[stop])
    with stop:
        assert signal.getsignal(usr1) is signal.SIG_IGN and signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL
        trainer.fit()
    assert trainer.step == 3 and signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def test_submitit_jobs_prefer_submitits_signal(monkeypatch, usr1):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert stop_signals() == (signal.SIGTERM, signal.SIGUSR1)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert stop_signals() == (signal.SIGUSR2, signal.SIGTERM, signal.SIGUSR1)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert stop_signals() == (signal.SIGUSR1, signal.SIGTERM)
    stop = StopOnSignal([signal.SIGUSR2, usr1])
    send = lambda t, logs: (os.kill(os.getpid(), usr1), os.kill(os.getpid(), signal.SIGUSR2)) if t.step == 2 else 0  # noqa: E731
    with stop, pytest.raises(Preempted) as info:
        mlp_trainer(steps=5, callbacks=[send, stop]).fit()
    assert info.value.signum == signal.SIGUSR2 and info.value.step == 2


@pytest.mark.slow
def test_short_mlp_run_approaches_the_oracle_dsm_minimum():
    """1500 steps on eight_gaussians: the EMA model's DSM loss is within 10% of the exact score's (the minimum)."""
    seed_everything(0)
    sde, data = VPSDE(), EightGaussians()
    t = Trainer(
        ScoreModel(MLP(data.shape, hidden=128), sde), sde, data, steps=1500, batch_size=256, lr=5e-3, progress=False
    )
    t.fit()
    x0 = data.batch(50_000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        dsm = Objective(sde)
        learned = dsm(t.ema_model, x0, generator=torch.Generator().manual_seed(2)).mean()
        untrained = dsm(ScoreModel(MLP(data.shape, hidden=128), sde), x0, generator=torch.Generator().manual_seed(2))
    exact = dsm(data.oracle.score_fn(sde), x0, generator=torch.Generator().manual_seed(2)).mean()
    assert exact < learned < 1.1 * exact < untrained.mean()
