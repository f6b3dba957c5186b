"""Class-conditional models, loss and training: unconditional networks keep their parameters and function, the label
embedding is added to the time embedding (a zero embedding gives the unconditional network back), y = None is the null
label, and the DSM loss with labels is minimised by the exact class-conditional score of the oracle: its excess for
the unconditional score is E‖σ(s(x_t) − s(x_t | y))‖² (DSM = ESM + const, Vincent 2011). Label dropout replaces
labels by ∅ at rate cond_drop, and a briefly trained model learns both the class-conditional and the unconditional
exact scores: its DSM loss is within a small fraction of that gap of the exact scores' losses on the same draws."""

import numpy as np
import pytest
import torch
from torch import nn

from sde_diffusion import VPSDE
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.core.checks import ArgumentError
from sde_diffusion.data import MixtureSet, Moons
from sde_diffusion.infra.runtime import seed_everything
from sde_diffusion.models import MLP, ScoreModel, UNet
from sde_diffusion.objectives import Objective
from sde_diffusion.training import Trainer


def _nets(num_classes=None):
    """An MLP and a U-Net (non-zero output layer) built from one seed each."""
    torch.manual_seed(0)
    mlp = MLP((3,), hidden=16, layers=2, num_classes=num_classes)
    torch.manual_seed(0)
    unet = UNet((1, 8, 8), channels=8, num_classes=num_classes)
    nn.init.normal_(unet.conv_out.weight, std=0.1)
    return {"mlp": mlp, "unet": unet}


def _input(name, n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *((3,) if name == "mlp" else (1, 8, 8)), generator=g), torch.rand(n, generator=g)


def test_unconditional_mlp_keeps_its_state_dict_keys():
    keys = ["time.W", "net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias"]
    assert list(_nets()["mlp"].state_dict()) == keys


@pytest.mark.parametrize("name", ["mlp", "unet"])
def test_a_zero_label_embedding_gives_the_unconditional_network(name):
    plain, cond = _nets()[name], _nets(num_classes=4)[name]
    assert not any("label" in k for k in plain.state_dict())
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["label_emb.weight"] and unexpected == []
    assert cond.label_emb.weight.shape[0] == 5  # 4 classes and the null label
    x, tau = _input(name)
    y = torch.tensor([0, 1, 2, 3, 4, 1])
    assert not torch.allclose(cond(x, tau, y), plain(x, tau))
    nn.init.zeros_(cond.label_emb.weight)
    assert torch.equal(cond(x, tau, y), plain(x, tau))


@pytest.mark.parametrize("name", ["mlp", "unet"])
def test_conditional_output_depends_on_the_label_and_none_is_the_null_label(name):
    """In float64, so that a row computed beside other labels equals it computed alone to rounding on any CPU."""
    net = _nets(num_classes=3)[name].double()
    x, tau = (v.double() for v in _input(name))
    out = [net(x, tau, torch.full((6,), k)) for k in range(4)]
    assert all(not torch.allclose(out[i], out[j]) for i in range(4) for j in range(i))
    assert torch.equal(net(x, tau), out[3]) and torch.equal(net(x, tau, None), out[3])
    mixed = net(x, tau, torch.tensor([0, 1, 2, 0, 1, 2]))
    torch.testing.assert_close(mixed[:3], torch.stack([out[k][k] for k in range(3)]))
    mixed.sum().backward()
    grad = net.label_emb.weight.grad
    assert (grad[:3].abs().sum(1) > 0).all() and (grad[3] == 0).all()  # only the labels used get gradients


def test_labels_for_an_unconditional_network_and_bad_num_classes_are_refused():
    x, tau = _input("mlp")
    with pytest.raises(ValueError, match="without num_classes"):
        _nets()["mlp"](x, tau, torch.zeros(6, dtype=torch.long))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_classes"):
            MLP((3,), num_classes=bad)


def test_score_model_passes_labels_and_keeps_the_eps_map():
    sde, net = VPSDE(), _nets(num_classes=3)["mlp"]
    model = ScoreModel(net, sde)
    x, t = _input("mlp")
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    sigma = sde.sigma(t)[:, None]
    assert model.num_classes == 3 and ScoreModel(_nets()["mlp"], sde).num_classes is None
    assert torch.allclose(model(x, t, y), -net(x, t / sde.T, y) / sigma)  # VP: c_in = 1
    assert torch.equal(model(x, t), model(x, t, torch.full((6,), 3)))


def _overlapping():
    """Three overlapping 2-D Gaussians: the class-conditional and unconditional scores differ visibly."""
    rot = torch.tensor([[0.8, -0.6], [0.6, 0.8]], dtype=torch.float64)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([0.6, 0.2], [0.3, 0.3], [1.0, 0.1])])
    covs[2] = rot @ covs[2] @ rot.T
    return GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]]), covs
    )


class ExactConditionalScore(nn.Module):
    """s(x, t | y) of the oracle's `given_class(y)` per row; y = None or the null index K: the unconditional score."""

    def __init__(self, gm, sde):
        super().__init__()
        k = len(gm.weights)
        self.num_classes = k
        self.scores = [gm.given_class(c).score_fn(sde) for c in range(k)] + [gm.score_fn(sde)]

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), self.num_classes) if y is None else y
        t = t.expand(x.shape[0])
        out = torch.empty_like(x)
        for c, score in enumerate(self.scores):
            rows = y == c
            out[rows] = score(x[rows], t[rows])
        return out


def test_dsm_loss_with_labels_is_minimised_by_the_class_conditional_score():
    sde, gm, n, t_min = VPSDE(), _overlapping(), 200_000, 1e-3
    x0, y = MixtureSet(gm).batch_with_labels(n, torch.Generator().manual_seed(0))
    x0 = x0.double()
    dsm = Objective(sde, t_min=t_min)
    draw = dsm.draw(x0.shape, torch.Generator().manual_seed(1), torch.float64)
    t, noise = draw.t, draw.noise
    exact = ExactConditionalScore(gm, sde)
    cond = dsm(exact, x0, y, t, noise)
    plain = dsm(exact, x0, None, t, noise)
    wrong = dsm(exact, x0, (y + 1) % 3, t, noise)
    x_t = sde.scale(t)[:, None] * x0 + sde.sigma(t)[:, None] * noise
    esm = (sde.sigma(t)[:, None] * (exact(x_t, t) - exact(x_t, t, y))).square().mean(1)  # 'simple': mean over dims
    excess = plain - cond - esm  # zero-mean: E[σ s(x_t | y) + ε | x_t, y] = 0
    assert esm.mean() > 50 * esm.std() / n**0.5  # the two scores differ measurably
    assert excess.mean().abs() < 4 * excess.std() / n**0.5
    assert wrong.mean() > plain.mean() > cond.mean()


def _cond_trainer(steps=10, cond_drop=0.2, hidden=16, batch_size=64, init_seed=0, **kw):
    seed_everything(init_seed)
    model = ScoreModel(MLP((2,), hidden=hidden, layers=3, num_classes=3), VPSDE())
    return Trainer(model, VPSDE(), MixtureSet(_overlapping()), steps=steps, batch_size=batch_size, warmup=5,
                   cond_drop=cond_drop, progress=False, **kw)  # fmt: skip


def test_label_dropout_replaces_labels_by_the_null_label_at_rate_cond_drop():
    n, p = 20_000, 0.3
    trainer = _cond_trainer(cond_drop=p, batch_size=n)
    state = trainer.data_generator.get_state()
    x0, y = trainer._batch()
    x_data, y_data = trainer.data.batch_with_labels(n, torch.Generator().set_state(state))
    dropped = y == 3
    assert torch.equal(x0, x_data) and torch.equal(y[~dropped], y_data[~dropped])
    assert abs(dropped.double().mean() - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_the_trainer_refuses_labels_it_cannot_use():
    seed_everything(0)
    plain = ScoreModel(MLP((2,), hidden=8, layers=1), VPSDE())
    with pytest.raises(ArgumentError, match=r"^cond_drop .*0\.1$"):
        Trainer(plain, VPSDE(), MixtureSet(_overlapping()), steps=1, batch_size=4, cond_drop=0.1)
    for data, classes in ((Moons(), 2), (MixtureSet(_overlapping()), 4)):
        model = ScoreModel(MLP((2,), hidden=8, layers=1, num_classes=classes), VPSDE())
        with pytest.raises(ValueError, match=f"conditional on {classes} classes.*num_classes={data.num_classes}"):
            Trainer(model, VPSDE(), data, steps=1, batch_size=4)
    with pytest.raises(ArgumentError, match=r"^cond_drop .*1\.5$"):
        _cond_trainer(cond_drop=1.5)


def test_conditional_resume_is_bitwise_lossless(tmp_path):
    full = _cond_trainer(steps=12)
    full.fit()
    first = _cond_trainer(steps=12)
    first.steps = 5
    first.fit()
    state = first.state_dict()
    torch.rand(10), np.random.rand()  # noqa: NPY002
    resumed = _cond_trainer(steps=12, init_seed=7)
    resumed.load_state_dict(state)
    resumed.fit()
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(),
                                                 strict=True))  # fmt: skip


@pytest.mark.slow
def test_label_dropout_training_learns_the_conditional_and_the_unconditional_score():
    gm, sde, n, t_min = _overlapping(), VPSDE(), 20_000, 1e-2
    trainer = _cond_trainer(steps=2500, hidden=64, batch_size=256, lr=3e-3, ema_decay=0.99)
    trainer.fit()
    x0, y = trainer.data.batch_with_labels(n, torch.Generator().manual_seed(7))
    dsm = Objective(sde, t_min=t_min)
    draw = dsm.draw(x0.shape, torch.Generator().manual_seed(8))
    t, noise = draw.t, draw.noise
    exact = ExactConditionalScore(gm, sde)

    def loss(model, labels=None):
        with torch.no_grad():
            return dsm(model, x0.double(), labels, t.double(), noise.double()).mean()

    model = trainer.ema_model.double()
    floor_cond, floor_plain, zero = loss(exact, y), loss(exact), loss(lambda x, t: torch.zeros_like(x))
    label_info = floor_plain - floor_cond  # what the label is worth: the unconditional score as a conditional one
    gap_cond, gap_null = loss(model, y) - floor_cond, loss(model, torch.full_like(y, 3)) - floor_plain
    assert label_info > 0.05
    assert 0 < gap_cond < 0.2 * label_info
    assert 0 < gap_null < 0.2 * label_info and gap_null < 0.02 * (zero - floor_plain)
