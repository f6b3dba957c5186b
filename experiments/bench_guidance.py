"""Guidance methods on a class-conditional run: precision against recall over each method's scales, and their cost.

    OMP_NUM_THREADS=1 python experiments/bench_guidance.py --checkpoint RUN/checkpoints/last.pt \
        [--guide early=RUN/checkpoints/guide.pt] [--guide small=RUN2/checkpoints/last.pt] [--n 10000] [--steps 50]
    OMP_NUM_THREADS=1 python experiments/bench_guidance.py --exact        # the oracle's exact scores as the model

On the class mixture (a run of `experiments/train.py experiment=train/class_mixture_cond`: 16-D, 4 classes of 3
components; `--exact`: the oracle's exact class and unconditional scores instead of a network, the methods' own bias)
every row is scored by `sde_diffusion.evaluation.class_measures` against the exact p(x | y) (class means): precision
E log p(x | y), the in-class mode-weight error (recall), SW₂ and the Bayes class accuracy. On digits (a run of
`experiment=train/digits_cond`) by the SVC judge's class accuracy (`class_eval.fit_judge`), the Fréchet distance to
the training digits on pixels and the per-class recall of the training digits (`class_coverage`). Every method
samples n points (n/C per class) with DDIM (η = 0, `steps` steps on the λ-uniform grid, Tweedie's step at the end)
from the same x_T at each scale of its grid; each `--guide NAME=PATH` (a weaker conditional run of the same data)
adds autoguidance rows. The interval rows are CFG restricted to λ ∈ [λ_lo, λ_hi]. Printed: a row per (method, w)
with the network evaluations per sample (the guide's after the +), then, at the precision (digits: accuracy) that
CFG reaches at w = 1, each method's scale and recall error (digits: FD), linearly interpolated between the two
bracketing scales of its curve from w = 0 up to its most precise scale. `--figure PATH`: the precision–recall plot.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from sde_diffusion import VPSDE
from sde_diffusion.apps import load_run
from sde_diffusion.data import ClassMixtureData
from sde_diffusion.evaluation.class_coverage import class_recall, frechet_distance
from sde_diffusion.evaluation.class_eval import fit_judge
from sde_diffusion.evaluation.class_measures import class_measures, summary
from sde_diffusion.sampling import SamplerRun, SampleSetup
from sde_diffusion.sampling.guidance.guided import Guidance, guided_sample

GRIDS = {  # per data kind: method -> scales, and the intervals' (λ_lo, λ_hi) and scales
    "mixture": {
        "cfg": (0.0, 0.25, 0.5, 1.0, 2.0, 3.0),
        "auto": (0.5, 1.0, 2.0, 3.0, 5.0),
        "apg": (0.5, 1.0, 2.0, 3.0, 5.0),
        "cfgpp": (0.2, 0.4, 0.6, 0.8, 1.0),
        "interval": (((-3.0, 0.0), (-2.0, 1.0), (-1.0, 2.0), (0.0, 3.0)), (1.0, 2.0, 3.0, 5.0)),
    },
    "digits": {
        "cfg": (0.0, 0.5, 1.0, 2.0, 3.0),
        "auto": (1.0, 2.0, 3.0),
        "apg": (1.0, 3.0, 5.0),
        "cfgpp": (0.2, 0.4),
        "interval": (((-2.0, 1.0), (-1.0, 2.0)), (1.0, 3.0)),
    },
}
COLUMNS = {  # per data kind: (key, header, format) of the printed table, then the x and y of the matched comparison
    "mixture": (
        [
            ("precision", "precision E log p(x|y)", ".3f"),
            ("recall_error", "in-class mode-weight error", ".4f"),
            ("sw2", "SW₂ to p(x|y)", ".3f"),
            ("accuracy", "accuracy", ".4f"),
        ],
        "precision",
        "recall_error",
    ),
    "digits": (
        [("accuracy", "accuracy (SVC)", ".3f"), ("fd", "FD (pixels)", ".2f"), ("recall", "recall (k=3)", ".3f")],
        "accuracy",
        "fd",
    ),
}


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
    """(sde, data, model, {name: guide}) of the checkpoints, or of the exact oracle with --exact."""
    if args.exact:
        data, sde = ClassMixtureData(), VPSDE()
        return sde, data, exact_model(data, sde), {}
    model, sde, data, _ = load_run(args.checkpoint)
    guides = dict(g.split("=", 1) for g in args.guide)
    return sde, data, model, {name: load_run(path)[0] for name, path in guides.items()}


def methods(grids: dict, guides: dict):
    """(row name, Guidance, guide name or None) over every grid."""
    for name, grid in grids.items():
        if name == "interval":
            for lo, hi in grid[0]:
                yield from ((f"cfg λ∈[{lo:g},{hi:g}]", Guidance("cfg", w, interval=(lo, hi)), None) for w in grid[1])
        elif name == "auto":
            for guide in guides:
                yield from ((f"auto ({guide})", Guidance("auto", w), guide) for w in grid)
        else:
            yield from ((name, Guidance(name, w), None) for w in grid)


def scorer(data, seed: int):
    """measures(x, labels) -> the row's measures: exact ones with an oracle, the digits' judge, FD and recall else."""
    if data.oracle is not None:
        return lambda x, y: summary(class_measures(data.oracle, data.classes, x, y, seed=seed))
    judge, (real, real_y) = fit_judge(data, seed=seed), data.labelled_examples()

    def digits(x, y):
        rec = class_recall(real, real_y, x, y)
        return {
            "accuracy": float((judge.predict(x) == y).double().mean()),
            "fd": frechet_distance(x, real),
            "recall": sum(rec) / len(rec),
        }

    return digits


def run_all(args, kind: str, sde, data, model, guides) -> list[dict]:
    """Every method's row: its measures, network evaluations per sample and wall time."""
    c = data.num_classes
    labels = torch.arange(c).repeat_interleave(args.n // c)
    x_T = sde.prior_sampling((len(labels), *data.shape), generator=torch.Generator().manual_seed(args.seed))
    run, measures, rows = SamplerRun("ddim", args.steps, options={"eta": 0.0}), scorer(data, args.seed + 7), []
    with torch.no_grad():
        for name, g, guide in methods(GRIDS[kind], guides):
            start = time.perf_counter()
            res, evals = guided_sample(g, sde, model, labels, c, run, guides.get(guide), setup=SampleSetup(x_T=x_T))
            cost = {f"evals_{k}": v for k, v in evals.items()} | {"wall_s": time.perf_counter() - start}
            rows.append({"method": name, "w": g.w, **measures(res.x.float(), labels), **cost})
            print(row_text(rows[-1], kind), flush=True)
    return rows


def row_text(r: dict, kind: str) -> str:
    """One printed table row: method, w, the kind's measures, network evaluations per sample, wall seconds."""
    evals = f"{r['evals_model']:.0f}" + (f" + {r['evals_guide']:.0f}" if r["evals_guide"] else "")
    cells = " | ".join(f"{r[k]:{fmt}}" for k, _, fmt in COLUMNS[kind][0])
    return f"| {r['method']} | {r['w']:g} | {cells} | {evals} | {r['wall_s']:.0f} |"


def curve(rows: list[dict], name: str) -> list[dict]:
    """A method's rows in order of w, starting from the unguided model (CFG's w = 0, every method's w = 0 but CFG++'s,
    whose λ = 0 is the unconditional model)."""
    start = [] if name == "cfgpp" else [next(r for r in rows if r["method"] == "cfg" and r["w"] == 0)]
    return start + sorted((r for r in rows if r["method"] == name and r["w"] > 0), key=lambda r: r["w"])


def matched(rows: list[dict], x: str, y: str, target: float) -> dict[str, tuple[float, float, float, float]]:
    """Per method: (w, y) where its x first reaches `target` along its curve from w = 0 (linear interpolation between
    the bracketing scales, NaN if never), its largest x, and the best (lowest) y among its scales with x >= target."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        c = curve(rows, name)
        w, value = math.nan, math.nan
        for a, b in zip(c, c[1:], strict=False):
            if min(a[x], b[x]) <= target <= max(a[x], b[x]):
                f = (target - a[x]) / (b[x] - a[x]) if b[x] != a[x] else 0.0
                w, value = a["w"] + f * (b["w"] - a["w"]), a[y] + f * (b[y] - a[y])
                break
        best = min((r[y] for r in c if r[x] >= target and r["w"] > 0), default=math.nan)
        out[name] = (w, value, max(r[x] for r in c), best)
    return out


def figure(rows: list[dict], kind: str, marks: dict[str, float], path: str, title: str) -> None:
    """Each method's precision–recall curve over w: x the precision (digits: class accuracy), y the in-class
    mode-weight error (digits: the recall of the training digits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = COLUMNS[kind][1], {"mixture": "recall_error", "digits": "recall"}[kind]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in dict.fromkeys(r["method"] for r in rows):
        c = curve(rows, name)
        ax.plot([r[x] for r in c], [r[y] for r in c], "o-", ms=3, lw=1, label=name)
    for label, value in marks.items():
        ax.axvline(
            value, color="k" if "exact" in label else "grey", ls=":" if "exact" in label else "--", lw=1, label=label
        )
    if kind == "mixture":  # the interesting range: from 25 nats below the exact draws' precision to just above it
        top = marks["exact draws of p(x | y)"]
        ax.set_xlim(top - 25, top + 1.5)
        ax.set_ylim(0, 0.5)
    else:  # the accuracy saturates at 1: the scales that reach 0.97 or more
        ax.set_xlim(0.97, 1.002)
    ax.set_xlabel(
        {"precision": "precision: E log p(x | y), nats (higher: more typical)", "accuracy": "class accuracy"}[x]
    )
    ax.set_ylabel(
        {
            "recall_error": "in-class mode-weight error (lower: better recall)",
            "recall": "recall of the training digits (k = 3)",
        }[y]
    )
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--guide", action="append", default=[], help="NAME=PATH of a weak guide (repeatable)")
    p.add_argument("--exact", action="store_true")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure")
    args = p.parse_args()
    sde, data, model, guides = setups(args)
    kind = "mixture" if data.oracle is not None else "digits"
    columns, x, y = COLUMNS[kind]
    print(f"| method | w | {' | '.join(h for _, h, _ in columns)} | network evals / sample | wall s |")
    print("|---|---|" + "---|" * len(columns) + "---|---|")
    rows = run_all(args, kind, sde, data, model, guides)
    cfg1 = next(r for r in rows if r["method"] == "cfg" and r["w"] == 1.0)
    target = cfg1[x]
    marks = {"CFG w = 1": target}
    if kind == "mixture":
        marks["exact draws of p(x | y)"] = rows[0]["precision_exact"]
        print(f"\nexact draws: precision {rows[0]['precision_exact']:.3f}, SW₂ floor {rows[0]['sw2_floor']:.3f}")
    print(
        f"\nat CFG w = 1's {x} {target:.4g} ({y} {cfg1[y]:.4g}): each method's w and {y} where it first reaches it,"
        f" its largest {x}, and its best {y} among its scales that reach it"
    )
    print(f"| method | w | {y} | largest {x} | best {y} at {x} ≥ target |\n|---|---|---|---|---|")
    for name, (w, value, top, best) in matched(rows, x, y, target).items():
        print(f"| {name} | {w:.2f} | {value:.4f} | {top:.4g} | {best:.4f} |")
    if args.figure:
        source = "the oracle's exact scores" if args.exact else "a trained model"
        figure(rows, kind, marks, args.figure, f"{kind}, {source}\nn = {args.n}, DDIM η = 0, {args.steps} steps")


if __name__ == "__main__":
    main()
