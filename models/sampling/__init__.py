"""Sampling: schedules, the sampler loop, guidance, conditioning, previews."""
