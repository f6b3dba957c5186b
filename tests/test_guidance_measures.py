"""The exact conditional measures against closed forms: exact class draws score as the exact class does, a sampler
collapsed onto one component of its class has in-class mode-weight error 2(1 − w_k) exactly; the class mixture's
labels are its components mod C and its Bayes judge sums their responsibilities; the digits' coverage measures:
recall is 1 for the real set itself and 0 for samples far away, the Fréchet distance of two Gaussians' draws is
their closed-form distance."""

import math

import pytest
import torch

from sde_diffusion.data import ClassMixtureData
from sde_diffusion.evaluation.class_coverage import frechet_distance, knn_radii, recall
from sde_diffusion.evaluation.class_eval import fit_judge
from sde_diffusion.evaluation.class_measures import class_measures, summary


@pytest.fixture(scope="module")
def data():
    return ClassMixtureData(dim=16, k=12, num_classes=4, seed=0)


def test_labels_are_components_mod_c_with_the_classes_weights(data):
    g = torch.Generator().manual_seed(0)
    x, y = data.batch_with_labels(20_000, g)
    assert data.classes == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]
    component = data.oracle.responsibilities(x.double()).argmax(1)
    assert torch.equal(data.class_of_components(component), y)  # 16-D components this far apart never overlap
    weights = torch.stack([data.oracle.weights[c].sum() for c in data.classes])
    freq = torch.bincount(y, minlength=4).double() / len(y)
    assert (freq - weights).abs().max() < 4 * math.sqrt(0.25 / len(y))
    judge = fit_judge(data, n_reference=2000)
    assert judge.held_out_accuracy == 1.0 and torch.equal(judge.predict(x[:500]), y[:500])


def test_exact_class_draws_score_as_the_exact_class(data):
    g = torch.Generator().manual_seed(1)
    xs = [data.oracle.given_class(c).sample(4000, g) for c in data.classes]
    x, y = torch.cat(xs), torch.arange(4).repeat_interleave(4000)
    m = class_measures(data.oracle, data.classes, x, y, seed=3)
    for c in range(4):  # E log p has sd ≈ √(D/2)/√n ≈ 0.045 for a 16-D Gaussian: 5 sd
        assert m["precision"][c] == pytest.approx(m["precision_exact"][c], abs=0.25)
        assert m["recall_error"][c] < 0.06 and m["accuracy"][c] == 1.0
        assert m["sw2"][c] < 0.5 and m["sw2_floor"][c] < 0.5  # between exact draws: the components' counts vary
    assert summary(m)["accuracy"] == 1.0


def test_a_sampler_collapsed_onto_one_component_has_the_closed_form_errors(data):
    """Every sample at μ_k of class c's component k: ŵ_k = 1, so Σ|ŵ − w| = 2(1 − w_k) with w_k its in-class weight;
    E log p(x | y) = log p(μ_k | y)."""
    x, y = [], []
    for c, comps in enumerate(data.classes):
        x.append(data.oracle.means[comps[1]].expand(50, -1))
        y.append(torch.full((50,), c))
    m = class_measures(data.oracle, data.classes, torch.cat(x), torch.cat(y))
    for c, comps in enumerate(data.classes):
        p = data.oracle.given_class(comps)
        assert m["recall_error"][c] == pytest.approx(2 * (1 - float(p.weights[1])), abs=1e-12)
        assert m["precision"][c] == pytest.approx(float(p.log_prob(data.oracle.means[comps[1]][None])), abs=1e-9)


def test_recall_is_one_on_the_real_set_and_zero_far_from_it():
    real = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert recall(real, real) == 1.0
    assert recall(real, real + 100.0) == 0.0
    half = real[real[:, 0] > 0]  # samples covering only half: the other half's points are far from every ball
    assert 0.4 < recall(real, half) < 0.8
    assert torch.equal(knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), 1), torch.tensor([1.0, 1.0, 2.0]).double())


def test_frechet_distance_of_gaussian_draws_is_the_closed_form():
    """N(0, I) vs N(m, 4I) in D dims: ‖m‖² + D(1 + 4 − 2·2) = ‖m‖² + D."""
    g = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    m = torch.tensor([1.0, 0.0, -2.0, 0.5])
    x, y = torch.randn(n, d, generator=g), m + 2 * torch.randn(n, d, generator=g)
    assert frechet_distance(x, y) == pytest.approx(float(m.square().sum()) + d, rel=0.02)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_the_benchmark_reads_each_method_at_cfg_w1_precision_along_its_curve():
    """bench_guidance.matched: linear between the bracketing scales of a curve that starts at the conditional model."""
    import sys

    from apps import ROOT

    sys.path.insert(0, str(ROOT / "experiments"))
    from bench_guidance import matched

    rows = [{"method": "cfg", "w": 0.0, "precision": -10.0, "recall_error": 0.0},
            {"method": "cfg", "w": 1.0, "precision": -8.0, "recall_error": 0.2},
            {"method": "auto", "w": 1.0, "precision": -6.0, "recall_error": 0.1},
            {"method": "apg", "w": 1.0, "precision": -9.0, "recall_error": 0.05}]  # fmt: skip
    out = matched(rows, "precision", "recall_error", -8.0)
    assert out["cfg"] == (1.0, 0.2, -8.0, 0.2)
    assert out["auto"] == pytest.approx((0.5, 0.05, -6.0, 0.1))
    w, value, top, best = out["apg"]
    assert math.isnan(w) and math.isnan(value) and top == -9.0 and math.isnan(best)
