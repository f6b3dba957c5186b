"""End-to-end runs of experiments/train.py (tiny step counts), in a subprocess or as one job in this process: what
lands in the output dir, what the offline wandb run holds, resuming a finished run, image data (multiruns:
tests/test_experiments.py)."""

import json
import logging
from pathlib import Path

import pytest
import torch
from apps import TINY, run_app, run_job
from wandb_reader import find_run_files, read_run

from sde_diffusion.apps import load_run
from sde_diffusion.infra.checkpoint import load_checkpoint

RUN = [*TINY, "eval.samplers.euler_maruyama.steps=20"]  # the metrics test counts >= 20 evaluations
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("app") / "run"
    proc = run_app("train.py", *RUN, f"hydra.run.dir={out}", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_writes_metrics_checkpoint_and_plots(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert list(metrics["samplers"]) == ["euler_maruyama", "dpm_solver"]
    em = metrics["samplers"]["euler_maruyama"]
    assert em["nfe"] >= 20 and em["wall_s"] > 0
    for key in ("sw2", "mmd2", "energy", "mode_weight_error", "oracle_nll"):
        assert key in em and key in metrics["floor"] and metrics["floor_sd"][key] > 0
    assert em["sw2_over_floor"] == pytest.approx(em["sw2"] / metrics["floor"]["sw2"])
    assert {"floor", "sw2_over_floor", "mmd2", "energy"} <= metrics["legend"].keys()
    assert "time_ratio" not in metrics["legend"]  # compare_samplers.py's column
    main = metrics["main_metric"]  # the headline with an oracle: NLL excess over the data's, and its recall pair
    assert main["name"] == "euler_maruyama/nll_excess" and main["value"] == em["nll_excess"]
    assert em["nll_excess"] == pytest.approx(em["oracle_nll"] - metrics["floor"]["oracle_nll"])
    assert main["floor_sd"] == metrics["floor_sd"]["nll_excess"] == pytest.approx(metrics["floor_sd"]["oracle_nll"])
    assert main["recall"] == {"name": "euler_maruyama/mode_weight_error", "value": em["mode_weight_error"],
                              "floor": metrics["floor"]["mode_weight_error"],
                              "floor_sd": metrics["floor_sd"]["mode_weight_error"]}  # fmt: skip
    assert metrics["train_wall_s_total"] == metrics["train_wall_s"] > 0  # one segment
    log = (tiny_run / "train.log").read_text().splitlines()  # the job's log gets the steps as the run goes
    steps = [ln.split("] - ", 1)[1].split(":")[0] for ln in log if "][train][INFO] - step " in ln]
    assert steps == [f"step {k}/30" for k in range(5, 31, 5)]
    assert log.index(next(ln for ln in log if "step 30/30" in ln)) < log.index(next(ln for ln in log if "floor:" in ln))
    assert metrics["train_steps"] == 30
    for name in ("samples.png", "loss.png"):
        assert (tiny_run / name).read_bytes()[:8] == PNG

    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    assert state["step"] == 30 and state["config"]["train"]["steps"] == 30
    assert state["loss_history"].shape == (6, 2)

    model, sde, data, cfg = load_run(tiny_run / "checkpoints" / "last.pt")
    assert all(torch.equal(v, state["ema"][k]) for k, v in model.state_dict().items())
    x = data.batch(8, torch.Generator().manual_seed(0))
    assert model(x, torch.full((8,), 0.5)).shape == x.shape and cfg.train.steps == 30


@pytest.mark.slow
def test_offline_wandb_run_holds_loss_series_and_final_metrics(tiny_run):
    (path,) = find_run_files(tiny_run / "wandb")
    run = read_run(path)
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert run.run_id == state["wandb_run_id"] and run.job_type == "train" and run.exit_code == 0
    assert run.group == "train" and run.config["train"]["steps"] == 30 and run.config["logger"]["job_type"] == "train"
    assert run.name.startswith("eight_gaussians vp linear-β simple-loss ") and "train.steps=30" in run.name
    history = state["loss_history"]
    assert run.series("train/loss") == pytest.approx(history[:, 1].tolist())
    assert [row["trainer/step"] for row in run.history if "train/loss" in row] == [5, 10, 15, 20, 25, 30]
    assert len(run.series("train/grad_norm")) == 6 and len(run.series("train/lr")) == 6
    em = metrics["samplers"]["euler_maruyama"]
    assert run.summary["eval/euler_maruyama/sw2"] == pytest.approx(em["sw2"])
    assert run.summary["eval/floor/sw2"] == pytest.approx(metrics["floor"]["sw2"])
    assert run.summary["main_metric"] == pytest.approx(em["nll_excess"])
    assert run.summary["eval/floor_sd/sw2"] == pytest.approx(metrics["floor_sd"]["sw2"])
    assert run.summary["eval/samplers.nrows"] == 4  # two samplers, the floor and its sd
    ((artifact),) = [a for a in run.artifacts if a["type"] == "model"]  # the checkpoint (tables are artifacts too)
    assert (artifact["name"], artifact["type"]) == (f"model-{run.run_id}", "model")
    assert [f["path"] for f in artifact["manifest"]["contents"]] == ["last.pt"]


@pytest.mark.slow
def test_resume_auto_of_a_finished_run_evaluates_again_in_the_same_wandb_run(tmp_path, caplog):
    out = tmp_path / "run"
    run_job("train", *TINY, out=out)
    with caplog.at_level(logging.INFO, logger="train"):
        run_job("train", *TINY, "train.resume=auto", out=out)
    assert f"resumed from step 30 of {out / 'checkpoints' / 'last.pt'}" in caplog.text
    first, second = (read_run(p) for p in find_run_files(out / "wandb"))
    assert first.run_id == second.run_id == load_checkpoint(out / "checkpoints" / "last.pt")["wandb_run_id"]
    assert second.summary["main_metric"] == json.loads((out / "metrics.json").read_text())["main_metric"]["value"]
    assert second.summary["main_metric"] == first.summary["main_metric"]  # the same state, evaluated the same way


def test_digits_writes_image_grids(tmp_path):
    out = tmp_path / "digits"
    run_job("train", "experiment=train/digits_unet", "model.channels=8", "train.steps=3", "eval.n_samples=16",
            "eval.samplers.euler_maruyama.steps=3", "eval.samplers.dpm_solver.steps=3", "logger=none",
            "train.progress=false", out=out)  # fmt: skip
    for name in ("samples_data.png", "samples_euler_maruyama.png", "samples_dpm_solver.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert "mode_weight_error" not in json.loads((out / "metrics.json").read_text())["floor"]  # no oracle
    assert not (out / "wandb").exists()
