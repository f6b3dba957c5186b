"""The guidance options of the apps: train.py saves the weak guide at train.guide_at; sample.py draws with
guidance=cfg|auto|cfgpp|apg, guidance.interval and guide=PATH exactly what the library draws, counts the network
evaluations per sample, and every setting that cannot apply fails in one line naming its key."""

import json

import numpy as np
import pytest
import torch
from apps import TINY, run_job

from sde_diffusion.apps import ConfigError, load_run
from sde_diffusion.infra.checkpoint import load_checkpoint
from sde_diffusion.sampling import SamplerRun, SampleSetup
from sde_diffusion.sampling.guidance.guided import Guidance, guided_sample

QUIET = ["logger=none", "progress=false"]
COND = [*TINY, "logger=none", "+model.num_classes=8", "train.cond_drop=0.2", "guidance.per_class=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny conditional eight_gaussians run that saved its guide at step 10 of 30."""
    out = tmp_path_factory.mktemp("runs") / "cond"
    run_job("train", *COND, "train.guide_at=10", out=out)
    return out / "checkpoints"


def test_train_saves_the_weak_guide_at_guide_at(run, tmp_path):
    assert load_checkpoint(run / "guide.pt")["step"] == 10 and load_checkpoint(run / "last.pt")["step"] == 30
    guide, last = load_run(run / "guide.pt")[0], load_run(run / "last.pt")[0]
    weights = [torch.cat([p.flatten() for p in m.parameters()]) for m in (guide, last)]
    assert guide.num_classes == 8 and not torch.equal(*weights)
    with pytest.raises(ConfigError, match=r"^config error: train.guide_at=0: must be an int >= 1 or None"):
        run_job("train", *COND, "train.guide_at=0", out=tmp_path / "bad")


@pytest.mark.parametrize(
    ("overrides", "guidance"),
    [
        (["guidance=auto", "w=1.5"], Guidance("auto", 1.5)),
        (["guidance=apg", "w=2", "guidance.eta=0.5", "guidance.threshold=1.0"], Guidance("apg", 2.0, None, 0.5, 1.0)),
        (["guidance=cfgpp", "w=0.4", "sampler=ddim"], Guidance("cfgpp", 0.4)),
        (["w=3", "guidance.interval=[-2,1]", "sampler=ddim"], Guidance("cfg", 3.0, (-2, 1))),
    ],
)
def test_sample_draws_the_library_guided_samples_and_counts_evaluations(run, tmp_path, overrides, guidance):
    out = tmp_path / "job"
    guide = [f"guide={run / 'guide.pt'}"] if guidance.method == "auto" else []
    run_job("sample", f"checkpoint={run / 'last.pt'}", "labels=all", "n=16", "steps=4", *overrides, *guide, *QUIET,
            out=out)  # fmt: skip
    model, sde, _, cfg = load_run(run / "last.pt")
    x_T = sde.prior_sampling((16, 2), generator=torch.Generator().manual_seed(0))
    sampler = "ddim" if "sampler=ddim" in overrides else "dpm_solver"
    res, evals = guided_sample(guidance, sde, model, torch.arange(8).repeat_interleave(2), 8,
                               SamplerRun(sampler, 4), load_run(run / "guide.pt")[0] if guide else None,
                               setup=SampleSetup(torch.Generator().manual_seed(1), x_T))  # fmt: skip
    torch.testing.assert_close(torch.from_numpy(np.load(out / "samples.npz")["x"]), res.x)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["network_evals"] == evals and metrics["guidance"]["method"] == guidance.method
    assert evals["model"] >= 5 and (evals["guide"] == 5) == (guidance.method == "auto")


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["guidance=auto", "w=1"], "config error: guide=None: must be a checkpoint with guidance=auto"),
        (["guidance=cfgpp", "w=0.5"], "config error: sampler='dpm_solver': must be ddim for guidance=cfgpp"),
        (["guidance.interval=[2,1]", "w=1"], r"config error: guidance.interval=\[2, 1\]: must be null or \[λ_lo"),
        (["guidance=apg", "guidance.threshold=0", "w=1"], "config error: guidance.threshold=0: must be a number > 0"),
        (["guidance=pag", "w=1"], "Could not find 'guidance/pag'"),
    ],
)
def test_bad_guidance_settings_are_one_line(run, tmp_path, overrides, line):
    with pytest.raises(Exception, match=line):
        run_job("sample", f"checkpoint={run / 'last.pt'}", "labels=all", "n=16", "steps=2", *overrides, *QUIET,
                out=tmp_path / "bad")  # fmt: skip


def test_a_guide_needs_labels_and_auto(run, tmp_path):
    with pytest.raises(ConfigError, match="config error: guide=.*: must be a checkpoint with guidance=auto, and null"):
        run_job("sample", f"checkpoint={run / 'last.pt'}", "labels=all", "n=16", "steps=2", "w=1",
                f"guide={run / 'guide.pt'}", *QUIET, out=tmp_path / "bad")  # fmt: skip
    with pytest.raises(ConfigError, match="config error: labels=None: must be a class or 'all'"):
        run_job("sample", f"checkpoint={run / 'last.pt'}", "guidance=apg", "n=16", "steps=2", *QUIET,
                out=tmp_path / "bad2")  # fmt: skip
