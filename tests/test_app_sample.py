"""experiments/sample.py and experiments/export.py on tiny trained runs, as one job in this process (a multirun in a
subprocess): the samples are the library's `sample` with the documented seeds, in data space; metrics, a tuned time
grid (also in compare_samplers.py), class labels with guidance, the export round trip, and bad configs in one line."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from apps import ROOT, TINY, run_app, run_job
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file
from wandb_reader import find_run_files, read_run

from sde_diffusion.apps import ConfigError, load_run
from sde_diffusion.apps.app import check_option_overrides
from sde_diffusion.core.metrics import sliced_wasserstein
from sde_diffusion.infra.checkpoint import load_checkpoint, save_checkpoint
from sde_diffusion.sampling import SampleSetup, sample
from sde_diffusion.sampling.guidance.conditional import classifier_free

PNG = b"\x89PNG\r\n\x1a\n"
QUIET = ["logger=none", "progress=false"]
GRID = [1.0, 0.6, 0.3, 0.1, 0.001]  # a hand-made 4-step grid from T to t_min, saved as tune_timesteps.py saves one


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of tiny train.py runs: eight_gaussians, class-conditional eight_gaussians, digits (U-Net)."""
    root = tmp_path_factory.mktemp("runs")
    run_job("train", *TINY, "logger=none", out=root / "vector")
    run_job("train", *TINY, "logger=none", "+model.num_classes=8", "train.cond_drop=0.2", "guidance.per_class=2",
            out=root / "cond")  # fmt: skip
    run_job("train", "experiment=train/digits_unet", "model.channels=8", "train.steps=3", "eval.n_samples=16",
            "eval.samplers.euler_maruyama.steps=3", "eval.samplers.dpm_solver.steps=3", "logger=none",
            "train.progress=false", out=root / "digits")  # fmt: skip
    return {name: root / name / "checkpoints" / "last.pt" for name in ("vector", "cond", "digits")}


def sampler_options(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "sampler" / f"{name}.yaml").options)


def library_samples(
    checkpoint: Path, n: int, name: str, steps: int, score=None, batch_size=None, **options
) -> torch.Tensor:
    """`sample` on the run's EMA model as the app documents it: x_T from seed 0, the sampler's noise from seed 1."""
    model, sde, data, _ = load_run(checkpoint)
    x_T = sde.prior_sampling((n, *data.shape), generator=torch.Generator().manual_seed(0))
    res = sample(
        sde,
        score or model,
        tuple(x_T.shape),
        sampler=name,
        steps=steps,
        setup=SampleSetup(x_T=x_T, generator=torch.Generator().manual_seed(1), batch_size=batch_size),
        **sampler_options(name) | options,
    )
    return res.x


def test_vector_samples_are_the_library_samples(runs, tmp_path):
    out = tmp_path / "job"
    run_job("sample", f"checkpoint={runs['vector']}", "sampler=euler_maruyama", "steps=5", "n=50", "batch_size=20",
            *QUIET, out=out)  # fmt: skip
    x = np.load(out / "samples.npz")["x"]
    expected = library_samples(runs["vector"], 50, "euler_maruyama", 5, batch_size=20)
    torch.testing.assert_close(torch.from_numpy(x), expected)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["sampler"], metrics["steps"], metrics["nfe"], metrics["n"]) == ("euler_maruyama", 5, 6, 50)
    assert "metrics" not in metrics and (out / "samples.png").read_bytes()[:8] == PNG


def test_image_samples_are_raw_levels_with_a_large_grid(runs, tmp_path):
    out = tmp_path / "job"
    run_job("sample", f"checkpoint={runs['digits']}", "sampler=ddim", "steps=3", "n=20", *QUIET, out=out)
    arrays = np.load(out / "samples.npz")
    expected = library_samples(runs["digits"], 20, "ddim", 3)
    torch.testing.assert_close(torch.from_numpy(arrays["x"]), (expected + 1) * 16 / 2)  # [-1, 1] -> levels 0..16
    levels = arrays["quantised"]
    assert levels.shape == (20, 1, 8, 8) and levels.dtype == np.uint8 and levels.max() <= 16
    inside = (arrays["x"] >= 0) & (arrays["x"] <= 16)
    assert np.array_equal(levels[inside], np.round(arrays["x"][inside]).astype(np.uint8))
    assert Image.open(out / "samples.png").size[0] >= 512


def test_metrics_against_the_held_out_draw_and_a_wandb_run(runs, tmp_path):
    out = tmp_path / "job"
    sw2 = run_job("sample", f"checkpoint={runs['vector']}", "n=300", "metrics=true", "progress=false", out=out)
    metrics = json.loads((out / "metrics.json").read_text())
    _, _, data, _ = load_run(runs["vector"])
    reference = data.reference(300, torch.Generator().manual_seed(500))  # the Evaluator's held-out draw: seed + 500
    x = torch.from_numpy(np.load(out / "samples.npz")["x"])
    assert metrics["metrics"]["sw2"] == pytest.approx(sliced_wasserstein(x, reference, 256, seed=0)) == sw2
    assert metrics["floor_sd"]["sw2"] > 0 and {"floor", "sw2_over_floor", "mmd2", "energy"} <= set(metrics["legend"])
    (path,) = find_run_files(out / "wandb")
    run = read_run(path)
    assert run.job_type == "sample" and run.exit_code == 0 and run.config["sampler"]["name"] == "dpm_solver"
    assert run.summary["sample/sw2"] == pytest.approx(sw2) and run.summary["sample/nfe"] == metrics["nfe"] == 21


def write_grid(run_dir: Path, checkpoint: Path, sampler: str = "dpm_solver") -> Path:
    """A timesteps.json as tune_timesteps.py writes it into its own run dir, recording the checkpoint it tuned."""
    run_dir.mkdir(parents=True)
    saved = {"sampler": sampler, "options": {"order": 3}, "t_min": 0.001, "sde": "VPSDE", "source": str(checkpoint),
             "checkpoint": str(checkpoint.resolve()), "grids": {"5": GRID}}  # fmt: skip
    (run_dir / "timesteps.json").write_text(json.dumps(saved))
    return run_dir / "timesteps.json"


def test_a_tuned_grid_is_found_by_its_checkpoint_or_path(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # apps find tune_timesteps.py's runs under ./outputs and ./multirun
    checkpoint = tmp_path / "run" / "last.pt"
    checkpoint.parent.mkdir()
    shutil.copy(runs["vector"], checkpoint)
    grid_file = write_grid(tmp_path / "outputs" / "tune_timesteps" / "2026-01-01_00-00-00", checkpoint)
    write_grid(tmp_path / "elsewhere", tmp_path / "another.pt")  # another checkpoint's: never found by `tuned`
    out = tmp_path / "job"
    run_job("sample", f"checkpoint={checkpoint}", "sampler=dpm_solver", "steps=4", "timesteps=tuned", "n=40", *QUIET,
            out=out)  # fmt: skip
    x = torch.from_numpy(np.load(out / "samples.npz")["x"])
    assert json.loads((out / "metrics.json").read_text())["timesteps"] == {
        "file": str(grid_file.resolve()), "budget": 5, "timesteps": GRID,
    }  # fmt: skip
    torch.testing.assert_close(x, library_samples(checkpoint, 40, "dpm_solver", 4, spacing="custom", timesteps=GRID))
    assert not torch.allclose(x, library_samples(checkpoint, 40, "dpm_solver", 4), atol=1e-3)  # the grid matters
    run_job("sample", f"checkpoint={checkpoint}", "steps=4", f"timesteps={grid_file.parent}", "n=40", *QUIET,
            out=tmp_path / "by_path")  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "by_path" / "samples.npz")["x"], x.numpy())
    assert not (checkpoint.parent / "timesteps.json").exists() and sorted(checkpoint.parent.iterdir()) == [checkpoint]

    with pytest.raises(ConfigError, match=r"timesteps='tuned': .*has no grid of 9 steps; it has 5 NFE \(steps=4\)$"):
        run_job("sample", f"checkpoint={checkpoint}", "steps=9", "timesteps=tuned", *QUIET, out=tmp_path / "bad")
    with pytest.raises(ConfigError, match="timesteps='tuned': no timesteps.json for ddim on "):
        run_job("sample", f"checkpoint={checkpoint}", "sampler=ddim", "timesteps=tuned", *QUIET, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_compare_samplers_records_its_model_a_legend_and_the_tuned_grid(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "run" / "last.pt"
    checkpoint.parent.mkdir()
    shutil.copy(runs["vector"], checkpoint)
    write_grid(tmp_path / "multirun" / "tune_timesteps" / "2026-01-01_00-00-00" / "0", checkpoint)
    out, oracle_out = tmp_path / "job", tmp_path / "oracle"
    out.mkdir(), oracle_out.mkdir()  # compare_samplers.py writes into the dir Hydra made
    run_job("compare_samplers", f"checkpoint={checkpoint}", "sampler=dpm_solver", "sampler.steps=4", "timesteps=tuned",
            "eval.n_samples=100", "eval.floor_repeats=2", "logger=none", out=out)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["source"] == str(checkpoint) and metrics["model"]["config"]["train"]["steps"] == 30
    assert metrics["timesteps"]["timesteps"] == GRID and {"floor", "time_ratio"} <= set(metrics["legend"])
    assert "flow_error" not in metrics["legend"]  # a checkpoint's flow is not the oracle's: not measured
    table = (out / "comparison.md").read_text()
    assert f"Model: checkpoint `{checkpoint}`" in table
    assert "| dpm_solver tuned | ODE | 4 | 5 |" in table  # ints stay ints
    assert "- time_ratio: wall time / (NFE x one score call" in table

    run_job("compare_samplers", "sampler=ode_euler", "sampler.steps=3", "eval.n_samples=100", "eval.floor_repeats=2",
            "oracles=[eight_gaussians]", "logger=none", out=oracle_out)  # fmt: skip
    oracle = json.loads((oracle_out / "metrics.json").read_text())
    assert oracle["model"] == {"source": "oracle: eight_gaussians (exact score)"}


def test_class_labels_with_guidance(runs, tmp_path):
    out = tmp_path / "job"
    run_job("sample", f"checkpoint={runs['cond']}", "labels=all", "w=1.5", "n=16", "batch_size=5", "steps=3", *QUIET,
            out=out)  # fmt: skip
    arrays = np.load(out / "samples.npz")
    labels = torch.arange(8).repeat_interleave(2)
    assert np.array_equal(arrays["labels"], labels.numpy())
    model, sde, _, _ = load_run(runs["cond"])
    x_T = sde.prior_sampling((16, 2), generator=torch.Generator().manual_seed(0))
    expected = torch.cat(
        [  # the app's chunks of batch_size=5, each guided with its own labels (equal chunking: float32
            sample(
                sde,
                classifier_free(model, y, 1.5, null_label=8),
                tuple(x.shape),
                sampler="dpm_solver",
                steps=3,
                setup=SampleSetup(x_T=x),
                **sampler_options("dpm_solver"),
            ).x  # matmuls round differently at other batch sizes)
            for x, y in zip(x_T.split(5), labels.split(5), strict=True)
        ]
    )
    torch.testing.assert_close(torch.from_numpy(arrays["x"]), expected)

    for overrides, line in [
        (["labels=3"], "config error: labels=3: must be null: this run's model is unconditional"),
        (["w=2"], "config error: w=2: must be 0 without labels"),
    ]:
        with pytest.raises(ConfigError, match=line):
            run_job("sample", f"checkpoint={runs['vector']}", *overrides, *QUIET, out=tmp_path / "bad")
    with pytest.raises(ConfigError, match="config error: n=15: must be a multiple of num_classes=8"):
        run_job("sample", f"checkpoint={runs['cond']}", "labels=all", "n=15", *QUIET, out=tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"config error: labels=8: must be null, 'all' or a class index in \[0, 7\]"):
        run_job("sample", f"checkpoint={runs['cond']}", "labels=8", *QUIET, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


BAD = {  # overrides -> the line's start: the key and the value (the library's words after it are its own)
    "sampler.options.order=5": "config error: sampler.options.order=5: ",
    "+sampler.options.ordr=2": "config error: sampler.options.ordr=2: dpm_solver takes options: order, ",
    "steps=0": "config error: sampler.steps=0: ",
    "sampler=ancestral steps=1": "config error: sampler.steps=1: ",
    "n=0": "config error: n=0: ",
    "metrics=true n=1": "config error: eval.n_samples=1: ",
    "metrics=true eval.floor_repeats=1": "config error: eval.floor_repeats=1: ",
    "checkpoint=/no/such.pt": "config error: checkpoint='/no/such.pt': not found: /no/such.pt",
    "timesteps=/no/such.json": "config error: timesteps='/no/such.json': not found: /no/such.json",
    "device=tpu": "config error: device='tpu': ",
    "threads=0": "config error: threads=0: ",
}


@pytest.mark.parametrize(
    ("config", "overrides", "line"),
    [
        ("sample", ["sampler.options.ordr=2"], "sampler.options.ordr=2: dpm_solver takes options: order, "),
        ("sample", ["sampler=ddim,dpm_solver", "sampler.options.order=2"], "sampler.options.order=2: ddim takes "),
        ("train", ["experiment=train/digits_unet", "eval.samplers.dpm_solver.options.ordr=2"],
         "eval.samplers.dpm_solver.options.ordr=2: dpm_solver takes options: order, "),
    ],
)  # fmt: skip
def test_an_unknown_option_key_gets_the_samplers_options_before_hydra(config, overrides, line):
    with pytest.raises(ConfigError, match=f"^config error: {re.escape(line)}"):
        check_option_overrides(overrides, ROOT / "conf", config)
    for fine in (["sampler.options.order=2", "+sampler.options.ordr=2"], ["--cfg=job", "a=[1,"]):  # Hydra's to judge
        check_option_overrides(fine, ROOT / "conf", "sample")


@pytest.mark.slow
def test_an_unknown_option_key_on_the_command_line_is_one_line_and_writes_nothing(runs, tmp_path):
    proc = run_app("sample.py", f"checkpoint={runs['vector']}", "sampler.options.ordr=2", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "config error: sampler.options.ordr=2: dpm_solver takes options: order, method, algorithm, "
        "lower_order_final, spacing, rho, timesteps"
    ), proc.stderr  # fmt: skip
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("overrides", list(BAD))
def test_bad_config_is_one_line_before_any_output(runs, overrides, tmp_path):
    out = tmp_path / "job"
    with pytest.raises(ConfigError) as info:
        run_job("sample", f"checkpoint={runs['vector']}", *overrides.split(), *QUIET, out=out)
    assert str(info.value).startswith(BAD[overrides]) and "\n" not in str(info.value), str(info.value)
    assert not out.exists()


def test_export_then_sample_gives_the_checkpoint_samples(runs, tmp_path):
    folder = tmp_path / "exported"
    run_job("export", f"checkpoint={runs['digits']}", f"out={folder}", out=tmp_path / "export_job")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    state = load_checkpoint(runs["digits"])
    assert json.loads((folder / "config.json").read_text()) == state["config"]
    weights = load_file(folder / "model.safetensors")  # safetensors: tensors only, nothing to unpickle
    assert weights.keys() == state["ema"].keys() and all(torch.equal(weights[k], v) for k, v in state["ema"].items())
    for source, out in ((runs["digits"], tmp_path / "from_checkpoint"), (folder, tmp_path / "from_export")):
        run_job("sample", f"checkpoint={source}", "sampler=ddim", "steps=3", "n=8", *QUIET, out=out)
    a, b = (np.load(tmp_path / d / "samples.npz")["x"] for d in ("from_checkpoint", "from_export"))
    assert np.array_equal(a, b)

    with pytest.raises(ConfigError, match="config error: checkpoint="):
        run_job("export", f"checkpoint={folder}", out=tmp_path / "bad")


@pytest.mark.slow
def test_multirun_over_samplers_and_steps_on_one_checkpoint(runs, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app("sample.py", "-m", f"checkpoint={runs['vector']}", "sampler=ddim,dpm_solver", "steps=3,4", "n=32",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(4)]
    assert {(j["sampler"], j["steps"]) for j in jobs} == {(s, n) for s in ("ddim", "dpm_solver") for n in (3, 4)}
    assert all(np.load(sweep / str(i) / "samples.npz")["x"].shape == (32, 2) for i in range(4))
    logged = [read_run(p) for p in find_run_files(sweep)]
    assert len(logged) == 4 and {(r.group, r.job_type) for r in logged} == {("sample-sweep", "sample")}
    assert "%|" in proc.stderr  # the samplers' progress bars


def test_a_run_of_the_flat_layout_still_loads(runs, tmp_path):
    """A 0.1 checkpoint's config names its classes by the old flat modules (sde_diffusion.sde.VPSDE, …): load_run
    rebuilds the same model from it."""
    state = load_checkpoint(runs["vector"], map_location="cpu")
    text = json.dumps(state["config"])
    for new, old in (("core.", ""), ("evaluation.evaluator.", "evaluation."), ("infra.tracking", "tracking")):
        text = text.replace(f"sde_diffusion.{new}", f"sde_diffusion.{old}")
    assert '"sde_diffusion.sde.VPSDE"' in text and '"sde_diffusion.schedules.LinearBeta"' in text
    save_checkpoint(tmp_path / "old.pt", {**state, "config": json.loads(text)})
    (old, *_), (new, *_) = load_run(tmp_path / "old.pt"), load_run(runs["vector"])
    x, t = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), torch.full((8,), 0.5)
    with torch.no_grad():
        assert torch.equal(old(x, t), new(x, t))
