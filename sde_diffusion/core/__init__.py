"""The SDE core: β(t) schedules, the SDEs, the Gaussian-mixture oracle, sample distances and argument checks."""
