"""The inpainting app: on the oracle its metrics are those of the exact posterior (a second exact draw is the floor;
with noise_std = 0 the exact draws hold y exactly), TDS lands near the floor where replacement does not, a multirun
over methods gives one job and one wandb run each; on a trained run it writes the grid; bad values fail up front."""

import json
import math

import pytest
import torch
from apps import run_app, run_job
from wandb_reader import find_run_files, read_run

from sde_diffusion.apps import ConfigError, RunError
from sde_diffusion.apps.guard import check_samples, count_bad

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["data=eight_gaussians", "n=128", "truths=2", "steps=20", "logger=none"]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_oracle_metrics_hold_the_exact_posterior_floor(tmp_path):
    run_job("inpaint", *SMALL, "noise_std=0", out=tmp_path / "run")
    m = _metrics(tmp_path / "run")
    assert m["method"] == "replacement" and (m["mask"], m["of"]) == (1, 2) and m["nfe"] == 21
    assert m["floor_consistency"] == 0 and m["consistency"] < 1e-6  # exact draws and replacement both hold y
    assert abs(m["floor_energy"]) < 0.02 and m["energy"] > m["floor_energy"]
    assert m["main_metric"] == {"name": "energy", "value": m["energy"]}
    assert len(m["per_truth"]) == 2 and (tmp_path / "run" / "inpaint.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_multirun_over_methods_gives_one_job_and_run_each_and_tds_is_near_the_floor(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_app("inpaint.py", "-m", "method=replacement,tds", "n=512", "truths=2", "steps=100",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    replacement, tds = (_metrics(sweep / str(k)) for k in (0, 1))
    assert (replacement["method"], tds["method"]) == ("replacement", "tds") and tds["vjp"] == 100
    assert tds["energy"] < 0.05 and tds["mean_error"] < 3 * tds["floor_mean_error"] + 0.05
    assert replacement["energy"] > 10 * tds["energy"]  # replacement's bias, measured: it misweights the modes
    assert tds["consistency"] == pytest.approx(tds["floor_consistency"], rel=0.2)  # both at the noise level
    runs = [read_run(p) for p in find_run_files(sweep)]
    assert len(runs) == 2 and {r.job_type for r in runs} == {"inpaint"} and len({r.group for r in runs}) == 1
    by_name = {r.config["method"]["_target_"].rsplit(".", 1)[1]: r for r in runs}
    assert by_name["tds"].summary["main_metric"] == pytest.approx(tds["energy"])


def test_a_trained_image_run_writes_the_grid_and_its_consistency(tmp_path):
    train = tmp_path / "train"
    run_job("train", "experiment=train/digits_unet", "model.channels=8", "train.steps=3", "eval.n_samples=16",
            "eval.samplers.euler_maruyama.steps=3", "eval.samplers.dpm_solver.steps=3", "logger=none",
            "train.progress=false", out=train)  # fmt: skip
    out = tmp_path / "inpaint"
    ckpt = train / "checkpoints" / "last.pt"
    run_job("inpaint", f"checkpoint={ckpt}", "mask=random", "method=dps", "n=4", "truths=2", "steps=3",
            "show=3", "logger=none", out=out)  # fmt: skip
    m = _metrics(out)
    assert "energy" not in m and m["main_metric"]["name"] == "consistency" and m["vjp"] == 3
    assert m["of"] == 64 and 0 < m["mask"] < 64
    assert (out / "inpaint.png").read_bytes()[:8] == PNG


BAD = {
    "eta=2": "config error: eta=2: must be a number in [0, 1]",
    "steps=0": "config error: steps=0: must be an int >= 1",
    "t_min=1.5": "config error: t_min=1.5: must be < the SDE's T = 1",
    "spacing=karas": "config error: spacing='karas': must be one of",
    "n=1": "config error: n=1: must be an int >= 2",
    "noise_std=-1": "config error: noise_std=-1: must be a number >= 0",
    "data=moons": "config error: data='sde_diffusion.data.Moons': without a checkpoint, a data set with an exact",
    "checkpoint=/no/such.pt": "config error: checkpoint='/no/such.pt': not found: /no/such.pt",
    "mask=box mask.size=1.5": "config error: mask.size=1.5: must be a number in (0, 1)",
    "mask=random mask.fraction=0": "config error: mask.fraction=0: must be a number in (0, 1)",
    "mask.side=middle": "config error: mask.side='middle': must be one of ['top', 'bottom', 'left', 'right']",
    "method=dps method.zeta=-1": "config error: method.zeta=-1: a number >= 0",
    "method=repaint method.resample=0": "config error: method.resample=0: an int >= 1",
    "method=tds noise_std=0": "config error: noise_std=0: a number > 0 for tds",
    "method=tds n=100": "config error: method.particles=16: an int >= 1 that divides the batch 100",
    "method=tds eta=0": "config error: eta=0: a number in (0, 1]",
    "method=tds method.max_shift=0": "config error: method.max_shift=0: a number > 0 (inf: unbounded)",
    "+method.zeta=1": "config error: method.zeta=1: replacement takes options: measurement, eta, spacing",
}


@pytest.mark.parametrize("overrides", list(BAD))
def test_bad_values_fail_up_front_in_one_line(overrides, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_job("inpaint", *SMALL, *overrides.split(), out=out)
    line = str(info.value)
    assert line.startswith(BAD[overrides]) and "\n" not in line, line
    assert not out.exists()


def test_diverged_samples_stop_the_app_after_its_outputs_with_their_count(tmp_path):
    """DPS with a step size far too large (ζ = 10⁶) throws every sample 10⁵ half-ranges off the data: the app writes
    its outputs, then stops with one line counting them per truth."""
    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run_job("inpaint", *SMALL, "method=dps", "method.zeta=1e6", out=out)
    line = str(info.value)
    assert "diverged samples" in line and "truth 1: 0 non-finite and 128 beyond" in line and "\n" not in line
    assert (out / "metrics.json").is_file() and (out / "inpaint.png").is_file()


def test_the_guard_counts_non_finite_and_absurd_rows():
    """Rows with a NaN/inf are non-finite; finite rows with a coordinate beyond `factor` half-ranges of the data's
    range from its centre are absurd (data in [−1, 3]: centre 1, half-range 2; factor 10: limit 20)."""
    reference = torch.tensor([[-1.0, 0.0], [3.0, 2.0]])
    x = torch.tensor([[0.0, 1.0], [math.nan, 0.0], [21.5, 0.0], [-18.9, 0.0], [1.0, -19.5], [math.inf, 99.0]])
    assert count_bad(x, reference, factor=10) == (2, 2, 20.0)
    assert count_bad(x * 1000, reference) == (2, 1, 2e4)  # FACTOR = 10⁴: only 21 500 is beyond 1 ± 20 000
    check_samples({"fine": x[[0, 3]]}, reference, factor=10)
    with pytest.raises(RunError, match="bad: 2 non-finite and 2 beyond ±20 of its centre, of 6"):
        check_samples({"fine": x[:1], "bad": x}, reference, factor=10)


def test_the_exact_posterior_helper_matches_the_oracle_for_noisy_and_exact_measurements():
    from inpaint import Posterior

    from sde_diffusion import eight_gaussians
    from sde_diffusion.sampling.masks import half, measurement_matrix

    oracle, mask, y = eight_gaussians(), half((2,)), torch.tensor([2.0], dtype=torch.float64)
    noisy = Posterior(oracle, mask, y, 0.3)
    full = oracle.posterior(measurement_matrix(mask), y, 0.3)
    assert torch.equal(noisy.mean, full.mean) and torch.equal(noisy.cov, full.covariance)
    exact = Posterior(oracle, mask, y, 0.0)
    part = oracle.inpainting_posterior(mask, y)
    assert exact.mean[0] == 2 and exact.mean[1] == part.mean[0]
    assert torch.equal(exact.cov[1:, 1:], part.covariance) and (exact.cov[0] == 0).all()
    x = exact.sample(20_000, torch.Generator().manual_seed(0))
    assert (x[:, 0] == 2).all() and abs(x[:, 1].mean() - part.mean[0]) < 4 * (part.covariance[0, 0] / 20_000) ** 0.5
