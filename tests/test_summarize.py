"""experiments/summarize.py on sweep dirs written by hand: integers stay integers, the main metric is the default
column, final_loss across β(t)/SDEs is labelled as not comparable, and an Optuna sweep's best trial is named and
its objective plotted against each parameter."""

import csv
import json
import sys
from pathlib import Path

import matplotlib.figure
import pytest
from apps import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import summarize  # noqa: E402


def _job(root: Path, name: str, overrides: list[str], metrics: dict | None, config: dict | None = None) -> None:
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if config is not None:
        (root / name / ".hydra" / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    if metrics is not None:
        (root / name / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def axes(monkeypatch) -> list[list[tuple[str, str, str]]]:
    """(title, x scale, y scale) of every panel of every figure summarize saves."""
    saved: list[list[tuple[str, str, str]]] = []
    real = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        saved.append(
            [(a.get_title(), a.get_xscale(), a.get_yscale()) for a in fig.axes if a.get_label() != "<colorbar>"]
        )
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def test_integers_stay_integers(tmp_path):
    for k, steps in enumerate((10000, 20000)):
        metrics = {"train_steps": steps, "samplers": {"em": {"nfe": 1000, "sw2": 0.5 + k}}, "final_loss": 1.0}
        _job(tmp_path, str(k), [f"train.steps={steps}"], metrics)
    jobs = summarize.summarize(tmp_path, metrics=["train_steps", "*nfe", "*sw2"])
    assert jobs[0].metrics["train_steps"] == 10000 and isinstance(jobs[0].metrics["train_steps"], int)
    table = (tmp_path / "summary.md").read_text()
    assert "| 0 | ok | 10000 | 10000 | 1000 | 0.5 |" in table and "10000.0" not in table and "1000.0" not in table
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["train_steps"] for r in rows] == ["10000", "20000"] and rows[1]["samplers/em/nfe"] == "1000"


def test_the_main_metric_is_the_default_column_and_final_loss_is_not(tmp_path):
    for k, lr in enumerate(("0.001", "0.003")):
        metrics = {"samplers": {"em": {"sw2": 0.4 + k}}, "floor": {"sw2": 0.25}, "final_loss": 1.5 - k,
                   "main_metric": {"name": "em/sw2", "value": 0.4 + k}}  # fmt: skip
        _job(tmp_path, str(k), [f"train.lr={lr}"], metrics)
    jobs = summarize.summarize(tmp_path)
    assert [j.metrics["main_metric"] for j in jobs] == [0.4, 1.4] and {j.main_name for j in jobs} == {"em/sw2"}
    table = (tmp_path / "summary.md").read_text()
    assert "| job | status | train.lr | main_metric (em/sw2) | samplers/em/sw2 | floor/sw2 |" in table
    assert "| 1 | ok | 0.003 | 1.4 | 1.4 | 0.25 |" in table and "final_loss" not in table


@pytest.mark.parametrize(
    ("configs", "labelled"),
    [
        ([{"schedule": {"beta_max": 20.0}, "sde": {"T": 1.0}}, {"schedule": {"beta_max": 40.0}, "sde": {"T": 1.0}}], 1),
        ([{"schedule": {"beta_max": 20.0}, "sde": {"T": 1.0}}, {"schedule": {"beta_max": 20.0}, "sde": {"T": 2.0}}], 1),
        ([{"schedule": {"beta_max": 20.0}, "lr": 1.0}, {"schedule": {"beta_max": 20.0}, "lr": 2.0}], 0),
    ],
)
def test_final_loss_across_schedules_or_sdes_is_labelled_not_comparable(tmp_path, axes, configs, labelled):
    for k, config in enumerate(configs):
        _job(tmp_path, str(k), [f"job={k}"], {"final_loss": 1.0 + k}, config)
    summarize.summarize(tmp_path, metrics=["final_loss"])
    label = "final_loss (not comparable across β(t)/SDEs)"
    assert (tmp_path / "summary.md").read_text().count(label) == labelled
    assert [[title for title, _, _ in fig] for fig in axes] == [
        [label.replace(" (", "\n(") if labelled else "final_loss"]
    ]


def _optuna_sweep(root: Path, best: dict) -> None:
    """Three finished trials of a search over schedule.beta_max (5 to 60: log x) and schedule.p (0.5 to 4: linear)."""
    trials = [(5.25, 0.5, 0.3), (60.0, 1.5, 0.1), (20.0, 4.0, 0.2)]
    for k, (beta_max, p, value) in enumerate(trials):
        overrides = [f"schedule.beta_max={beta_max}", f"schedule.p={p}", "experiment=compare/beta_search"]
        _job(root, str(k), overrides, {"eight_gaussians": {"energy": value},
                                       "main_metric": {"name": "eight_gaussians/energy", "value": value}})  # fmt: skip
    (root / "optimization_results.yaml").write_text(json.dumps({"name": "optuna", **best}))


def test_an_optuna_sweep_names_its_best_trial_and_plots_the_objective_per_parameter(tmp_path, axes):
    _optuna_sweep(tmp_path, {"best_params": {"schedule.beta_max": 60.0, "schedule.p": 1.5}, "best_value": 0.1})
    jobs = summarize.summarize(tmp_path)
    search = summarize.read_search(tmp_path, jobs)
    assert search.best is jobs[1] and search.value == 0.1
    table = (tmp_path / "summary.md").read_text()
    assert f"best value 0.1 in job 1 (`{tmp_path / '1'}`): `schedule.beta_max=60` `schedule.p=1.5`" in table
    assert "| 0 | ok | 5.25 | 0.5 | 0.3 |" in table  # the trial table
    # β_max spans 11.4x: log x; p spans 8x and the objective 3x: linear
    assert axes == [[("main_metric vs schedule.beta_max", "log", "linear"), ("main_metric vs schedule.p", "linear",
                                                                             "linear")]]  # fmt: skip


def test_an_optuna_best_trial_without_a_finished_job_is_said_so(tmp_path):
    _optuna_sweep(tmp_path, {"best_params": {"schedule.beta_max": 7.0, "schedule.p": 1.5}, "best_value": 0.05})
    summarize.summarize(tmp_path)
    assert "Optuna search: best value 0.05 in no job of this dir" in (tmp_path / "summary.md").read_text()


def test_jobs_with_the_oracles_diagnosis_get_one_excess_curve_each_at_their_last_step(tmp_path, monkeypatch):
    """score_error.png has a curve per job (named by its swept values) from its last evaluation's excess per λ."""
    for k, loss in enumerate(("simple", "edm")):
        level = {"lam": [-1.0, 0.0, 1.0], "se": [1e-4] * 3}
        steps = {"100": level | {"excess": [9.0] * 3}, "2000": level | {"excess": [0.1 * (k + 1)] * 3}}
        _job(tmp_path, str(k), [f"loss={loss}"], {"samplers": {"em": {"sw2": 0.4}}, "score_error": steps})
    _job(tmp_path, "2", ["loss=sigmoid"], {"samplers": {"em": {"sw2": 0.5}}})  # no oracle: no curve
    summarize.summarize(tmp_path)
    assert (tmp_path / "score_error.png").is_file()
    curves = {}
    monkeypatch.setattr(summarize, "level_error_curves", lambda c, path, title: curves.update(c) or path)
    summarize.summarize(tmp_path)
    assert list(curves) == ["loss=simple", "loss=edm"]
    assert curves["loss=edm"].excess == [0.2, 0.2, 0.2]  # the last step's, not the first


def _train_job(root: Path, name: str, overrides: list[str], nll: float, density: str = "schedule",
               spacing: str | None = None) -> None:  # fmt: skip
    """A train.py job dir: the headline (NLL excess) with its recall pair and floor, and the config parts the β(t)
    caveat reads."""
    floor, floor_sd = {"nll_excess": 0.0, "mode_weight_error": 0.02}, {"nll_excess": 0.01, "mode_weight_error": 0.005}
    main = {"name": "em/nll_excess", "value": nll, "floor_sd": 0.01,
            "recall": {"name": "em/mode_weight_error", "value": 0.03, "floor": 0.02, "floor_sd": 0.005}}  # fmt: skip
    metrics = {"samplers": {"em": {"nll_excess": nll, "mode_weight_error": 0.03, "sw2": 0.2}}, "floor": floor,
               "floor_sd": floor_sd, "main_metric": main}  # fmt: skip
    config = {"loss": {"density": density}, "eval": {"samplers": {"em": {"options": {"spacing": spacing}}}}}
    _job(root, name, overrides, metrics, config)


def test_a_beta_sweep_that_moves_its_objective_and_grid_says_so_and_names_the_fair_preset(tmp_path, axes):
    for k, schedule in enumerate(("linear", "cosine")):
        _train_job(tmp_path / "simple", str(k), [f"schedule={schedule}"], 0.1 * k)
        _train_job(tmp_path / "fair", str(k), [f"schedule={schedule}"], 0.1 * k, "lognormal", "logsnr")
    summarize.summarize(tmp_path / "simple")
    table = (tmp_path / "simple" / "summary.md").read_text()
    assert "> Caution: β(t) is swept while the training objective's λ-density (loss.density=schedule) and the " in table
    assert "experiment=train/fair_schedule_sweep" in table
    summarize.summarize(tmp_path / "fair")
    assert "Caution" not in (tmp_path / "fair" / "summary.md").read_text()


def test_the_headline_and_its_recall_pair_are_columns_with_their_floor_sd_and_seeds_give_mean_and_sd(tmp_path):
    for k, (lr, seed) in enumerate([(1, 0), (1, 1), (3, 0), (3, 1)]):
        _train_job(tmp_path, str(k), [f"train.lr={lr}", f"seed={seed}"], nll=0.1 * k, density="lognormal")
    summarize.summarize(tmp_path)
    table = (tmp_path / "summary.md").read_text()
    assert (
        "main_metric (em/nll_excess; floor sd 0.01) | main_metric_recall (em/mode_weight_error; floor sd 0.005)"
        in table
    )
    assert "Over the seeds (seed): mean ± sd" in table
    assert "| 1 | 2 | 0.05 ± 0.07071 | 0.03 ± 0 |" in table and "| 3 | 2 | 0.25 ± 0.07071 | 0.03 ± 0 |" in table
