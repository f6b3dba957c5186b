"""The class-conditional train app: a run with model.num_classes and train.cond_drop writes the guided samples per
guidance scale and their class accuracy beside the judge's own (the oracle's Bayes classifier on 8-Gaussians, an
SVC on the digits), and every bad conditional setting fails up front in one line naming its key."""

import json

import pytest
import torch
from apps import TINY, run_job
from test_conditional import ExactConditionalScore

from sde_diffusion import VPSDE
from sde_diffusion.apps import ConfigError
from sde_diffusion.data import Digits, EightGaussians
from sde_diffusion.evaluation.class_eval import GuidedEvaluator, fit_judge

PNG = b"\x89PNG\r\n\x1a\n"
COND = [*TINY, "+model.num_classes=8", "train.cond_drop=0.1", "guidance.per_class=8", "guidance.sampler.steps=5",
        "logger=none"]  # fmt: skip


def test_a_conditional_run_reports_accuracy_per_guidance_scale(tmp_path):
    out = tmp_path / "run"
    run_job("train", *COND, out=out)
    metrics = json.loads((out / "metrics.json").read_text())
    guidance = metrics["guidance"]
    assert guidance["judge"] == "the oracle's Bayes classifier" and guidance["judge_held_out_accuracy"] > 0.999
    assert list(guidance["scales"]) == ["0", "1", "3"]
    for row in guidance["scales"].values():
        assert len(row["per_class"]) == 8 and row["accuracy"] == pytest.approx(sum(row["per_class"]) / 8)
        assert row["nfe"] == 6  # 5 steps and Tweedie's denoising step, each one doubled-batch model call
    assert (out / "guided.png").read_bytes()[:8] == PNG and str(out / "guided.png") in metrics["plots"]


def test_digits_judge_is_an_svc_of_the_training_split_and_guided_grids_have_a_row_per_class(tmp_path):
    judge = fit_judge(Digits())
    x, y = Digits().labelled_examples(held_out=True)
    assert judge.held_out_accuracy > 0.95 and judge.held_out_accuracy == pytest.approx(
        float((judge.predict(x) == y).double().mean())
    )
    out = tmp_path / "digits"
    run_job("train", "experiment=train/digits_cond", "model.channels=8", "train.steps=3", "eval.n_samples=16",
            "eval.samplers.euler_maruyama.steps=3", "eval.samplers.dpm_solver.steps=3", "guidance.per_class=2",
            "guidance.sampler.steps=3", "guidance.scales=[0,2]", "logger=none", "train.progress=false",
            out=out)  # fmt: skip
    for w in ("0", "2"):
        assert (out / f"guided_w{w}.png").read_bytes()[:8] == PNG
    guidance = json.loads((out / "metrics.json").read_text())["guidance"]
    assert guidance["judge_held_out_accuracy"] == pytest.approx(judge.held_out_accuracy)


def test_guided_samples_of_the_exact_conditional_score_are_all_judged_right():
    sde, data = VPSDE(), EightGaussians()
    evaluator = GuidedEvaluator({"name": "ddim", "steps": 20}, scales=[0.0, 2.0], per_class=10)
    ev = evaluator(sde, ExactConditionalScore(data.oracle, sde), data)
    assert torch.equal(ev.labels, torch.arange(8).repeat_interleave(10))
    for w in (0.0, 2.0):
        assert ev.rows[w]["accuracy"] == 1.0 and ev.rows[w]["nfe"] == 21
        centre = ev.samples[w].view(8, 10, 2).mean(1).double()
        assert torch.allclose(centre, data.oracle.means, atol=0.2)


BAD = {
    "model.num_classes=3": "config error: model.num_classes=3: must be null (unconditional) or the data's 8",
    "data=moons model.num_classes=2": "config error: model.num_classes=2: must be null: no labels in data",
    "model.num_classes=null": "config error: train.cond_drop=0.1: must be 0 for an unconditional model",
    "train.cond_drop=1.5": "config error: train.cond_drop=1.5: must be a number in [0, 1]",
    "guidance.scales=[-1]": "config error: guidance.scales=-1: must be a number >= 0",
    "guidance.per_class=0": "config error: guidance.per_class=0: must be an int >= 1",
    "guidance.sampler.steps=0": "config error: guidance.sampler.steps=0: ",
}


@pytest.mark.parametrize("override", list(BAD))
def test_bad_conditional_settings_fail_up_front_in_one_line(override, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_job("train", *COND, *override.split(), out=out)
    assert str(info.value).startswith(BAD[override]) and "\n" not in str(info.value), str(info.value)
    assert not out.exists()
