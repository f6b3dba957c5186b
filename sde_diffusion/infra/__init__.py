"""Infrastructure: checkpoints, experiment tracking, torch.distributed and the runtime policy."""
