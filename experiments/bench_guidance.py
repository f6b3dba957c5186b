"""Guidance methods on the class mixture, scored against the exact p(x | y): precision, recall, SW₂ and cost.

    OMP_NUM_THREADS=1 python experiments/bench_guidance.py --checkpoint RUN/checkpoints/last.pt \
        [--guide RUN/checkpoints/guide.pt] [--n 10000] [--steps 50] [--figure docs/guidance_pr.png]

RUN is a run of `experiments/train.py experiment=train/class_mixture_cond` (a conditional MLP on the 16-D mixture
of 4 classes of 3 components; its guide.pt, the same run at step 400, is autoguidance's weak guide). With
`--exact`, the exact class and unconditional scores of the oracle replace the network (no checkpoint needed): the
guidance methods' own bias, free of the model's. Every method samples n points (n/4 per class) with DDIM (η = 0,
`steps` steps on the λ-uniform grid, Tweedie's step at the end) from the same x_T, at each scale of its grid, and is
scored by `sde_diffusion.class_measures` (class means). The interval rows are CFG restricted to λ ∈ [λ_lo, λ_hi].
Printed: one row per (method, w), then, at the precision CFG reaches at w = 1, each method's recall error
interpolated along its curve (linear in precision between its two bracketing scales).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sde_diffusion import VPSDE
from sde_diffusion.apps import load_run
from sde_diffusion.class_measures import class_measures, summary
from sde_diffusion.class_mixture import ClassMixtureData
from sde_diffusion.evaluation import SamplerRun
from sde_diffusion.guided_sampling import Guidance, guided_sample

GRIDS = {
    "cfg": (0.0, 0.25, 0.5, 1.0, 2.0, 3.0),
    "auto": (0.5, 1.0, 2.0, 3.0, 5.0),
    "apg": (0.5, 1.0, 2.0, 3.0, 5.0),
    "cfgpp": (0.2, 0.4, 0.6, 0.8, 1.0),
}
INTERVALS = ((-3.0, 0.0), (-2.0, 1.0), (-1.0, 2.0), (0.0, 3.0))
INTERVAL_W = (1.0, 2.0, 3.0, 5.0)


def exact_model(data: ClassMixtureData, sde):
    """model(x, t, y): the oracle's exact score of class y, or of p(x) for the null label C."""
    scores = [data.oracle.given_class(c).score_fn(sde) for c in data.classes] + [data.oracle.score_fn(sde)]

    def model(x, t, y):
        out = torch.empty_like(x)
        for k in y.unique().tolist():
            rows = y == k
            out[rows] = scores[k](x[rows], t[rows])
        return out

    model.num_classes = data.num_classes
    return model


def setups(args):
    """(sde, data, model, guide) of the checkpoints, or of the exact oracle with --exact."""
    if args.exact:
        data, sde = ClassMixtureData(), VPSDE()
        return sde, data, exact_model(data, sde), None
    model, sde, data, _ = load_run(args.checkpoint)
    guide = load_run(args.guide)[0] if args.guide else None
    return sde, data, model, guide


def methods(has_guide: bool):
    """(row name, Guidance) over every grid."""
    for name, grid in GRIDS.items():
        if name == "auto" and not has_guide:
            continue
        for w in grid:
            yield name, Guidance(name, w)
    for lo, hi in INTERVALS:
        for w in INTERVAL_W:
            yield f"cfg λ∈[{lo:g},{hi:g}]", Guidance("cfg", w, interval=(lo, hi))


def run_all(args):
    sde, data, model, guide = setups(args)
    c = data.num_classes
    labels = torch.arange(c).repeat_interleave(args.n // c)
    x_T = sde.prior_sampling((len(labels), *data.shape), generator=torch.Generator().manual_seed(args.seed))
    run = SamplerRun("ddim", args.steps, options={"eta": 0.0})
    rows = []
    with torch.no_grad():
        for name, g in methods(guide is not None):
            start = time.perf_counter()
            res, evals = guided_sample(g, sde, model, labels, c, x_T, run, guide)
            m = summary(class_measures(data.oracle, data.classes, res.x, labels, seed=args.seed + 7))
            rows.append({"method": name, "w": g.w, **m, **{f"evals_{k}": v for k, v in evals.items()},
                         "wall_s": time.perf_counter() - start})  # fmt: skip
            print(row_text(rows[-1]), flush=True)
    return rows


def row_text(r) -> str:
    """One printed table row: method, w, precision, recall error, SW₂, accuracy, network evaluations per sample."""
    evals = f"{r['evals_model']:.0f}" + (f" + {r['evals_guide']:.0f} (guide)" if r["evals_guide"] else "")
    return (f"| {r['method']} | {r['w']:g} | {r['precision']:.3f} | {r['recall_error']:.4f} | {r['sw2']:.4f} | "
            f"{r['accuracy']:.4f} | {evals} |")  # fmt: skip


def curve(rows, name: str) -> list[dict]:
    """A method's rows in order of w, starting from the unguided model (CFG's w = 0, the same for every method)."""
    start = next(r for r in rows if r["method"] == "cfg" and r["w"] == 0)
    return [start] + sorted((r for r in rows if r["method"] == name and r["w"] > 0), key=lambda r: r["w"])


def matched(rows, target: float) -> dict[str, tuple[float, float]]:
    """Per method, (w, recall error) at precision `target`, linearly interpolated on the first segment of its curve
    (in w, up to its most precise scale) that brackets the target; NaN if the method never reaches it."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        c = curve(rows, name)
        c = c[: max(range(len(c)), key=lambda i: c[i]["precision"]) + 1]
        out[name] = (math.nan, math.nan)
        for a, b in zip(c, c[1:], strict=False):
            pa, pb = a["precision"], b["precision"]
            if min(pa, pb) <= target <= max(pa, pb):
                f = (target - pa) / (pb - pa) if pb != pa else 0.0
                out[name] = (
                    a["w"] + f * (b["w"] - a["w"]),
                    a["recall_error"] + f * (b["recall_error"] - a["recall_error"]),
                )
                break
    return out


def figure(rows, exact: float, target: float, path: str, title: str) -> None:
    """The precision–recall curve of every method over w (x: E log p(x | y), y: in-class mode-weight error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in dict.fromkeys(r["method"] for r in rows):
        c = curve(rows, name)
        ax.plot([r["precision"] for r in c], [r["recall_error"] for r in c], "o-", ms=3, lw=1, label=name)
    ax.axvline(exact, color="k", ls=":", lw=1, label="exact draws of p(x | y)")
    ax.axvline(target, color="grey", ls="--", lw=1, label="CFG w = 1's precision")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("precision: E log p(x | y) (nats, higher = more typical)")
    ax.set_ylabel("in-class mode-weight error (lower = better recall)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--guide")
    p.add_argument("--exact", action="store_true")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure")
    args = p.parse_args()
    print("| method | w | precision E log p(x|y) | in-class mode-weight error | SW₂ | accuracy | network evals |")
    print("|---|---|---|---|---|---|---|")
    rows = run_all(args)
    exact = rows[0]["precision_exact"]
    print(f"\nexact draws: precision {exact:.3f}, SW₂ floor {rows[0]['sw2_floor']:.4f}")
    target = next(r["precision"] for r in rows if r["method"] == "cfg" and r["w"] == 1.0)
    print(f"\nat CFG w = 1's precision {target:.3f}: the scale w and in-class mode-weight error of each method")
    for name, (w, e) in matched(rows, target).items():
        print(f"| {name} | {w:.2f} | {e:.4f} |")
    if args.figure:
        source = "exact scores" if args.exact else "trained model"
        figure(rows, exact, target, args.figure, f"class mixture (16-D, 4×3 components), {source}, n = {args.n}, "
               f"DDIM η=0 {args.steps} steps")  # fmt: skip


if __name__ == "__main__":
    main()
