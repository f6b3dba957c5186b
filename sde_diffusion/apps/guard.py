"""The apps' last check on their samples: a sample holding a NaN or an inf, or lying more than FACTOR half-ranges of the
data from the centre of the data's range, is counted, and any such count stops the app with one line (RunError: exit
status 1) after its outputs are written. FACTOR flags divergence (a sampler or guidance running away, which grows
without bound), not a poor model: the tests' few-step toy models draw a few hundred half-ranges out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .errors import RunError

FACTOR = 1e4
log = logging.getLogger(__name__)


def count_bad(x: Tensor, reference: Tensor, factor: float = FACTOR) -> tuple[int, int, float]:
    """(non-finite, absurd, limit) for samples x (n, …) against data draws `reference` in the same space: the rows
    with a NaN/inf, the finite rows with a coordinate farther than limit = factor·h from c, where [c − h, c + h] is
    the range of every coordinate of `reference`."""
    x, ref = x.detach().flatten(1).double().cpu(), reference.detach().double().cpu()
    lo, hi = ref.min(), ref.max()
    centre, limit = (hi + lo) / 2, factor * float(hi - lo) / 2
    finite = torch.isfinite(x).all(1)
    absurd = finite & ((x - centre).abs() > limit).any(1)
    return int((~finite).sum()), int(absurd.sum()), limit


def check_samples(
    samples: Mapping[str, Tensor], reference: Tensor | Callable[[int, torch.Generator], Tensor], factor: float = FACTOR
) -> None:
    """Raise RunError naming, per named set of samples, how many are non-finite or absurd (`count_bad`) out of how
    many; log one line and return when none is. `reference`: data draws, or `data.reference` (1 024 draws, seed 0)."""
    if callable(reference):
        reference = reference(1024, torch.Generator().manual_seed(0))
    bad = []
    for name, x in samples.items():
        non_finite, absurd, limit = count_bad(x, reference, factor)
        if non_finite or absurd:
            bad.append(f"{name}: {non_finite} non-finite and {absurd} beyond ±{limit:.3g} of its centre, of {len(x)}")
    if bad:
        raise RunError(
            f"diverged samples: {'; '.join(bad)} (centre and ±: the data's range, {factor:g}x wider; the "
            "outputs are written: look at the sampler or the model)"
        )
    log.info("samples checked: all finite and within %gx the data's half-range", factor)
