"""Evaluation: samplers against held-out data and the oracle, diagnosis, likelihood pipelines, plots."""
