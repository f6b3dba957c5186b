"""Guidance against the exact conditional oracle: classifier guidance at w = 1 is the class-conditional score,
classifier-free guidance at w = 0 is the conditional score and at w is classifier guidance at 1 + w."""

import pytest
import torch
from conftest import diffused

from sde_diffusion import VESDE, VPSDE, SubVPSDE, eight_gaussians, mixture
from sde_diffusion.sampling import SampleSetup, sample
from sde_diffusion.sampling.guidance.conditional import classifier, classifier_free

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
CLASSES = [[0, 3], [1], [2, 4]]  # each class a set of the mixture's components
NULL = len(CLASSES)


def oracle_model(mix, sde, classes=CLASSES):
    """A conditional score model made exact: model(x, t, y) = the score of class y, or p_t's own for the null label
    len(classes)."""
    scores = [mix.given_class(c).score_fn(sde) for c in classes] + [mix.score_fn(sde)]

    def model(x, t, y):
        out = torch.empty_like(x)
        for k in y.unique().tolist():
            rows = y == k
            out[rows] = scores[k](x[rows], t[rows])
        return out

    return model


def draws(sde, mix, n=24, seed=0):
    """x_t ~ p_t at times spread over (0, T], with per-sample labels covering every class."""
    g = torch.Generator().manual_seed(seed)
    x, t = diffused(mix, sde, torch.rand(n, generator=g, dtype=torch.float64) * 0.999 + 1e-3, n, g)
    return x, t, torch.arange(n) % len(CLASSES)


def class_scores(mix, sde, x, t, y):
    """Row i: the score of class y_i's own mixture, given_class(CLASSES[y_i])."""
    rows = [mix.given_class(CLASSES[int(k)]).score_fn(sde)(x[i : i + 1], t[i : i + 1])[0] for i, k in enumerate(y)]
    return torch.stack(rows)


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_classifier_guidance_at_w1_is_the_class_conditional_score(sde_name):
    sde, mix = SDES[sde_name], mixture(dim=4, k=5, seed=1)
    x, t, y = draws(sde, mix)
    guided = classifier(mix.score_fn(sde), lambda x, t: mix.classifier_log_prob(sde, x, t, CLASSES), y, 1.0)
    torch.testing.assert_close(guided(x, t), class_scores(mix, sde, x, t, y), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("sde_name", SDES)
def test_classifier_free_at_w0_is_the_conditional_score(sde_name):
    sde, mix = SDES[sde_name], mixture(dim=4, k=5, seed=1)
    x, t, y = draws(sde, mix)
    score = classifier_free(oracle_model(mix, sde), y, 0.0, NULL)
    torch.testing.assert_close(score(x, t), class_scores(mix, sde, x, t, y), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_classifier_free_at_w_is_exact_classifier_guidance_at_1_plus_w(w):
    """p_t(x | y)^{1+w} p_t(x)^{−w} = p_t(x) p_t(y | x)^{1+w}/p(y)^{1+w}: the two guided scores agree exactly."""
    sde, mix = VPSDE(), mixture(dim=4, k=5, seed=1)
    x, t, y = draws(sde, mix)
    cfg = classifier_free(oracle_model(mix, sde), y, w, NULL)
    cg = classifier(mix.score_fn(sde), lambda x, t: mix.classifier_log_prob(sde, x, t, CLASSES), y, 1 + w)
    torch.testing.assert_close(cfg(x, t), cg(x, t), atol=1e-8, rtol=1e-8)


def test_unconditional_models_and_the_null_label_are_unaffected():
    sde, mix = VPSDE(), mixture(dim=4, k=5, seed=1)
    x, t, y = draws(sde, mix)
    s = mix.score_fn(sde)(x, t)
    ignores_labels = classifier_free(lambda x, t, y: mix.score_fn(sde)(x, t), y, 3.0, NULL)
    torch.testing.assert_close(ignores_labels(x, t), s, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(
        classifier_free(oracle_model(mix, sde), NULL, 3.0, NULL)(x, t), s, atol=1e-12, rtol=1e-12
    )
    zero = classifier(mix.score_fn(sde), lambda x, t: mix.classifier_log_prob(sde, x, t), 0, 0.0)
    assert torch.equal(zero(x, t), s)


@pytest.mark.parametrize("kind", ["classifier", "classifier_free"])
def test_a_sampler_runs_the_guided_score_unchanged(kind):
    """Under `sample` (no_grad) the w = 1 classifier-guided / w = 0 classifier-free score draws class 5 only."""
    sde, mix = VPSDE(), eight_gaussians()
    if kind == "classifier":
        score = classifier(mix.score_fn(sde), lambda x, t: mix.classifier_log_prob(sde, x, t), 5, 1.0)
    else:
        score = classifier_free(oracle_model(mix, sde, range(8)), 5, 0.0, 8)
    x = sample(
        sde, score, (512, 2), "dpm_solver", steps=20, setup=SampleSetup(generator=torch.Generator().manual_seed(0))
    ).x
    assert (mix.responsibilities(x).argmax(1) == 5).float().mean() > 0.99


def test_bad_labels_and_scales_are_named():
    sde, mix = VPSDE(), mixture(dim=4, k=5, seed=1)
    score = mix.score_fn(sde)
    log_p = lambda x, t: mix.classifier_log_prob(sde, x, t)  # noqa: E731
    with pytest.raises(ValueError, match="^labels .*float32"):
        classifier(score, log_p, torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="^labels .*True"):
        classifier(score, log_p, True, 1.0)
    with pytest.raises(ValueError, match="^w .*nan"):
        classifier(score, log_p, 0, float("nan"))
    with pytest.raises(ValueError, match="^null_label .*None"):
        classifier_free(lambda x, t, y: x, 0, 1.0, None)
    with pytest.raises(ValueError, match=r"^log_prob_fn .*labels in \[5, 5\]"):
        classifier(score, log_p, 5, 1.0)(torch.zeros(2, 4), torch.full((2,), 0.5))
    labelled = classifier(score, log_p, torch.arange(4), 1.0)
    with pytest.raises(ValueError, match="^labels has 4 entries .*batch of 2"):
        sample(VPSDE(), labelled, (4, 4), "ode_euler", steps=2, setup=SampleSetup(batch_size=2))
