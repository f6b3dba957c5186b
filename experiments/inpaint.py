"""Inpainting with an unconditional score: samples of p(x | y) for y = A x* + noise_std·n, A a mask's row selection,
by one method of sampling.inverse, on the exact oracle or a trained run. Per held-out truth x*: the consistency
RMS of A x − y (noise_std is its exact draws' level) and, with an exact oracle, the energy distance, mean and
covariance errors against exact posterior draws beside their floor. Writes metrics.json, inpaint.png and a wandb
run; returns the energy distance (oracle) or the consistency for sweepers.

    python experiments/inpaint.py                                         # 16-D mixture, half observed, replacement
    python experiments/inpaint.py -m method=replacement,repaint,dps,tds   # one job, one wandb run per method
    python experiments/inpaint.py checkpoint=outputs/train/DATE/checkpoints/last.pt mask=box method=tds
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from sde_diffusion.apps import (
    ConfigError,
    RunError,
    argument_error,
    build_sde,
    config_error,
    hydra_app,
    instantiate_node,
    load_score,
    output_dir,
    require_choice,
    require_file,
    require_number,
    require_values,
    start_tracker,
    sweep_run_name,
)
from sde_diffusion.apps.guard import check_samples
from sde_diffusion.core.analytic import GaussianMixture
from sde_diffusion.core.checks import ArgumentError
from sde_diffusion.core.metrics import energy_distance
from sde_diffusion.evaluation import plots
from sde_diffusion.infra.runtime import resolve_device
from sde_diffusion.sampling import SamplerArgError, SampleSetup, sample
from sde_diffusion.sampling.inverse import Measurement
from sde_diffusion.sampling.masks import measurement_matrix
from sde_diffusion.sampling.timesteps import SPACINGS

log = logging.getLogger("inpaint")


def check(cfg: DictConfig) -> None:
    """The keys this app reads itself (the mask and the method check theirs when they are built and dry-run)."""
    require_values(cfg)
    for key in ("truths", "show"):
        require_number(cfg, key, integer=True, ge=1)
    require_number(cfg, "n", integer=True, ge=2)
    require_number(cfg, "seed", integer=True, ge=0)
    require_number(cfg, "noise_std", ge=0)
    require_number(cfg, "steps", integer=True, ge=1)
    require_number(cfg, "t_min", gt=0)
    require_number(cfg, "eta", ge=0, le=1)
    require_choice(cfg, "spacing", [s for s in SPACINGS if s != "custom"])
    require_file(cfg, "checkpoint", "null (the oracle) or the path of an existing checkpoint")


class Posterior:
    """The exact p(x | y) over all D coordinates: its draws, mean and covariance (a point mass on the observed
    coordinates when noise_std = 0)."""

    def __init__(self, oracle: GaussianMixture, mask: Tensor, y: Tensor, noise_std: float):
        self.mask = mask.flatten()
        if noise_std > 0:
            self.full, self.y = oracle.posterior(measurement_matrix(mask), y, noise_std), None
            self.mean, self.cov = self.full.mean, self.full.covariance
        else:
            self.full, self.y = oracle.inpainting_posterior(self.mask, y), y.double()
            u = ~self.mask
            self.mean = torch.zeros(len(self.mask), dtype=torch.float64).masked_scatter(self.mask, self.y)
            self.mean[u] = self.full.mean
            self.cov = torch.zeros(len(self.mask), len(self.mask), dtype=torch.float64)
            idx = u.nonzero()[:, 0]
            self.cov[idx[:, None], idx] = self.full.covariance

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n exact draws, (n, D) float64."""
        if self.y is None:
            return self.full.sample(n, generator)
        x = self.y.new_zeros(n, len(self.mask))
        x[:, self.mask], x[:, ~self.mask] = self.y, self.full.sample(n, generator)
        return x


def posterior_metrics(x: Tensor, post: Posterior, exact: Tensor) -> dict[str, float]:
    """Energy distance to exact draws, posterior-mean error and relative covariance error of samples x (n, D)."""
    x = x.flatten(1).double()
    cov_error = (torch.cov(x.T) - post.cov).norm() / post.cov.norm()
    return {
        "energy": energy_distance(x, exact),
        "mean_error": float((x.mean(0) - post.mean).norm()),
        "cov_error": float(cov_error),
    }


def consistency(x: Tensor, mask: Tensor, y: Tensor) -> float:
    """RMS of A x − y over the samples and the observed coordinates."""
    return float((x.flatten(1)[:, mask.flatten()].double() - y.double()).square().mean().sqrt())


def dry_run(method: partial, cfg: DictConfig, sde, A: Tensor, shape: tuple[int, ...], device: torch.device) -> int:
    """Run the method once on the exact score of data at the origin, −x/σ(t)² (x̂₀ = 0, stable for every method): the
    library's checks of every argument (and of the options in conf/method/) fail here, before any output, as one
    ConfigError naming the key (`method.<option>` for conf/method/'s). Returns its NFE per truth."""

    def origin(x: Tensor, t: Tensor) -> Tensor:
        return -x / sde.sigma(t).to(x.dtype).view(-1, *(1,) * (x.ndim - 1)) ** 2

    try:
        dry = run(method, cfg, sde, origin, A, A.new_zeros(len(A)), (cfg.n, *shape), 0, device)
    except SamplerArgError as err:
        key = err.key.removeprefix("options.").removeprefix("measurement.")
        raise config_error(f"method.{key}" if key in method.keywords else key, err.value, err.allowed) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config error: method ({method.func.__name__}): {str(err).splitlines()[0]}") from None
    return dry.nfe


def counted(score_fn, bar: tqdm):
    """score_fn, advancing the progress bar by one NFE per call."""

    def score(x: Tensor, t: Tensor) -> Tensor:
        bar.update(1)
        return score_fn(x, t)

    return score


def run(method: partial, cfg: DictConfig, sde, score_fn, A: Tensor, y: Tensor, shape, seed: int, device):
    """The method (`sampling.INVERSE`) on measurement y with the base-step settings of `cfg`; a divergence it detects
    is a RunError."""
    options = {"eta": cfg.eta, "spacing": cfg.spacing, "measurement": Measurement(A, y, cfg.noise_std)}
    try:
        return sample(
            sde,
            score_fn,
            shape,
            method.func.__name__,
            cfg.steps,
            cfg.t_min,
            setup=SampleSetup(device=device, generator=torch.Generator(device).manual_seed(seed)),
            **options,
            **method.keywords,
        )
    except FloatingPointError as err:
        raise RunError(f"{method.func.__name__} diverged: {err}") from err


def score_of(cfg: DictConfig, device: torch.device):
    """(score_fn, sde, data, source): the oracle's exact score, or a checkpoint's EMA model (its null label if
    class-conditional) with its SDE and data set."""
    if cfg.checkpoint is None:
        sde, data = build_sde(cfg), instantiate_node(cfg, "data")
        if data.oracle is None:
            raise config_error("data", cfg.data._target_, "without a checkpoint, a data set with an exact oracle")
        return data.oracle.score_fn(sde), sde, data, "oracle"
    score_fn, sde, data = load_score(cfg.checkpoint, device)
    return score_fn, sde, data, str(cfg.checkpoint)


def solve_truth(cfg: DictConfig, method: partial, sde, score_fn, data, mask: Tensor, A: Tensor, y: Tensor, device):
    """The method's samples for one measurement y (CPU, float32), their metrics row, and (oracle) the exact draws."""
    t0 = time.perf_counter()
    res = run(method, cfg, sde, score_fn, A, y.to(device), (cfg.n, *data.shape), cfg.seed + 1, device)
    row = {"nfe": res.nfe, "vjp": res.vjp, "wall_s": time.perf_counter() - t0}
    x = res.x.detach().float().cpu()
    row["consistency"] = consistency(x, mask, y)
    if data.oracle is None:
        return row, x, None
    post = Posterior(data.oracle, mask, y.double(), cfg.noise_std)
    exact = post.sample(cfg.n, torch.Generator().manual_seed(cfg.seed + 2))
    row |= posterior_metrics(x, post, exact)
    floor = posterior_metrics(post.sample(cfg.n, torch.Generator().manual_seed(cfg.seed + 3)), post, exact)
    row |= {f"floor_{k}": v for k, v in floor.items()}
    row["floor_consistency"] = consistency(exact, mask, y)
    return row, x, exact


def summary_line(name: str, metrics: dict) -> str:
    """The figure's line of results: NFE, the consistency RMS beside the exact draws' (the noise level), and with an
    oracle the energy distance to the exact posterior beside its floor."""
    line = f"{name}: {metrics['nfe']:g} NFE, consistency RMS {metrics['consistency']:.3g}"
    if "energy" not in metrics:
        return line
    line += f" (exact: {metrics['floor_consistency']:.3g})"
    return line + f", energy distance {metrics['energy']:.2g} (floor {metrics['floor_energy']:.2g})"


@hydra_app("inpaint")
def main(cfg: DictConfig) -> float:
    """Check, build (mask, method: dry run), sample per truth, measure, write and log."""
    check(cfg)
    out = output_dir()
    try:
        device = resolve_device(cfg.device)
    except ArgumentError as err:
        raise argument_error("", err) from None
    score_fn, sde, data, source = score_of(cfg, device)
    shape = tuple(data.shape)
    mask = instantiate_node(cfg, "mask", shape=shape)
    method = instantiate_node(cfg, "method")
    name = method.func.__name__
    if not cfg.t_min < sde.T:
        raise config_error("t_min", cfg.t_min, f"must be < the SDE's T = {sde.T}")
    A = measurement_matrix(mask).float().to(device)
    nfe = dry_run(method, cfg, sde, A, shape, device)
    g = torch.Generator().manual_seed(cfg.seed)
    truths = data.reference(cfg.truths, g)
    ys = truths.flatten(1)[:, mask.flatten()] + cfg.noise_std * torch.randn(cfg.truths, int(mask.sum()), generator=g)
    bar = tqdm(total=cfg.truths * nfe, unit="NFE", desc=f"{name}, {cfg.truths} truths", disable=not cfg.progress)
    with start_tracker(cfg, out, job_type="inpaint") as tracker, bar:
        rows, samples = [], []
        for i, y in enumerate(ys):
            row, x, exact = solve_truth(cfg, method, sde, counted(score_fn, bar), data, mask, A, y, device)
            rows.append({"truth": i} | row)
            samples.append((x, exact))
            log.info("truth %d: %s", i, ", ".join(f"{k}={v:.4g}" for k, v in row.items()))
        metrics = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if k != "truth"}
        result = {
            "method": name,
            "options": dict(method.keywords),
            "source": source,
            "sde": repr(sde),
            "mask": int(mask.sum()),
            "of": mask.numel(),
            **metrics,
            "per_truth": rows,
        }
        main_name = "energy" if data.oracle is not None else "consistency"
        result["main_metric"] = {"name": main_name, "value": metrics[main_name]}
        title = plots.describe(type(data).__name__, sde, sweep_run_name(cfg))
        title += f"\n{summary_line(name, metrics)}"
        plot = figure(cfg, data, mask, truths, ys, samples, out / "inpaint.png", title)
        result["plots"] = [str(plot)]
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info("%s: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        log.info("wrote %s", out / "metrics.json")
        tracker.log_table("inpaint", rows)
        tracker.log_images({"inpaint": plot})
        tracker.summary({f"inpaint/{k}": v for k, v in metrics.items()} | {"main_metric": metrics[main_name]})
        check_samples({f"truth {i}": x for i, (x, _) in enumerate(samples)}, data.reference)
    return float(metrics[main_name])


def figure(cfg: DictConfig, data, mask: Tensor, truths: Tensor, ys: Tensor, samples: list, path: Path, title: str):
    """Images: one row per truth (measurement with the missing pixels grey, `show` samples, truth). Vectors: the
    first truth's samples beside exact posterior draws, in the first two missing coordinates (or the first two)."""
    if data.scaler is not None and len(data.shape) == 3:
        rows = []
        for truth, y, (x, _) in zip(truths, ys, samples, strict=True):
            measured = torch.zeros(mask.numel()).masked_scatter(mask.flatten(), y.float()).view(mask.shape)
            rows += [measured[None], x[: cfg.show], truth[None]]
        return plots.image_grid(
            torch.cat(rows),
            path,
            f"{title}\ncolumns: measurement, samples, truth",
            nrow=min(cfg.show, cfg.n) + 2,
            scaler=data.scaler,
        )
    missing = (~mask.flatten()).nonzero()[:, 0]
    coords = missing[:2] if len(missing) >= 2 else torch.arange(2)
    x, exact = samples[0]
    panels = {"samples": x.flatten(1)[:, coords]}
    if exact is not None:
        panels["exact posterior"] = exact[:, coords].float()
    prior = data.reference(cfg.n, torch.Generator().manual_seed(cfg.seed + 4)).flatten(1)[:, coords]
    names = ", ".join(f"x{int(c) + 1}" for c in coords)
    return plots.scatter_panels(panels, prior, path, f"{title}\ncoordinates {names} of the first truth; data: prior")


if __name__ == "__main__":
    main()
