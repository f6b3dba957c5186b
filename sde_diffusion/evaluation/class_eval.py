"""Class-conditional samples judged by a classifier of the real data: for each classifier-free guidance scale w
(Ho & Salimans 2022, eq. 6), samples of every class and the share of them the judge assigns to the class asked for.

    evaluator = GuidedEvaluator({"name": "ddim", "steps": 50}, scales=[0, 1, 3], per_class=50)
    result = evaluator(sde, model, data)  # model(x, t, y) conditional, with num_classes; data labelled
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.checks import ArgumentError, check_number
from ..core.sde import SDE
from ..sampling import SamplerRun, SampleSetup
from ..sampling.guidance.conditional import classifier_free


@dataclass
class Judge:
    """predict(x) -> (n,) labels for samples x (n, …) in model space; its accuracy on real held-out data."""

    predict: Callable[[Tensor], Tensor]
    held_out_accuracy: float
    name: str


def fit_judge(data: Any, n_reference: int = 10_000, seed: int = 0) -> Judge:
    """The judge of a labelled data set: with an oracle its Bayes classifier argmax_y p(y | x) (p(y | x) the
    responsibility of the component y, or the summed ones of the class's `data.classes` where classes group
    components), which no classifier beats, scored on `n_reference` oracle draws (seed `seed`); else an
    RBF SVC (gamma="scale") fitted on the training split, scored on the held-out one. That accuracy on real data is
    what a perfect sampler would score."""
    if data.oracle is not None:
        oracle, classes = data.oracle, getattr(data, "classes", None)

        def bayes(x: Tensor) -> Tensor:
            r = oracle.responsibilities(x.flatten(1).double())
            return (r if classes is None else torch.stack([r[:, c].sum(1) for c in classes], 1)).argmax(1).cpu()

        x, y = data.reference_with_labels(n_reference, torch.Generator().manual_seed(seed))
        return Judge(bayes, float((bayes(x) == y).double().mean()), "the oracle's Bayes classifier")
    from sklearn.svm import SVC

    x, y = data.labelled_examples()
    svc = SVC(gamma="scale").fit(x.flatten(1).numpy(), y.numpy())

    def predict(x: Tensor) -> Tensor:
        return torch.as_tensor(svc.predict(x.detach().flatten(1).cpu().float().numpy()))

    x, y = data.labelled_examples(held_out=True)
    return Judge(predict, float((predict(x) == y).double().mean()), "an SVC (RBF) fitted on the training split")


@dataclass
class GuidedEvaluation:
    """`rows`: per guidance scale w its accuracy, per-class accuracies, NFE (score calls; each is two network
    evaluations) and wall time; `samples` per w, (C·per_class, …), class by class; `labels` the classes asked for."""

    rows: dict[float, dict[str, Any]]
    samples: dict[float, Tensor]
    labels: Tensor
    judge: Judge


class GuidedEvaluator:
    """Samples `per_class` points of every class at each guidance scale w of `scales` with `sampler` (a SamplerRun or
    its fields) and judges them (`fit_judge`). Every scale starts from the same x_T (seed `seed`) with the same sampler
    noise (seed + 1): common random numbers, so the scales differ only in w."""

    def __init__(
        self, sampler: SamplerRun | Mapping[str, Any], *, scales: Sequence[float], per_class: int, seed: int = 0
    ):
        if isinstance(scales, str | bytes) or not isinstance(scales, Sequence) or not scales:
            raise ArgumentError("scales", scales, "a non-empty list of guidance scales w >= 0")
        for w in scales:
            check_number("scales", w, ge=0)
        check_number("per_class", per_class, integer=True, ge=1)
        check_number("seed", seed, integer=True, ge=0)
        self.sampler = sampler if isinstance(sampler, SamplerRun) else SamplerRun(**sampler)
        self.scales, self.per_class, self.seed = [float(w) for w in scales], per_class, seed

    def __call__(self, sde: SDE, model: Any, data: Any, device: torch.device | str = "cpu") -> GuidedEvaluation:
        """Sample and judge; `model(x, t, y)` is the conditional score with the null label `model.num_classes`."""
        judge = fit_judge(data, seed=self.seed)
        c, run = model.num_classes, self.sampler
        y = torch.arange(c).repeat_interleave(self.per_class)
        x_T = sde.prior_sampling((len(y), *data.shape), generator=torch.Generator().manual_seed(self.seed))
        rows, samples = {}, {}
        for w in self.scales:
            score = classifier_free(model, y.to(device), w, null_label=c)
            generator = torch.Generator(device).manual_seed(self.seed + 1)
            t0 = time.perf_counter()
            res = run.sample(sde, score, tuple(x_T.shape), SampleSetup(x_T=x_T, generator=generator, device=device))
            x = res.x.float().cpu()
            hit = (judge.predict(x) == y).double()
            rows[w] = {
                "accuracy": float(hit.mean()),
                "per_class": hit.view(c, -1).mean(1).tolist(),
                "nfe": res.nfe,
                "wall_s": time.perf_counter() - t0,
            }
            samples[w] = x
        return GuidedEvaluation(rows, samples, y, judge)
