"""Training of the built-in denoiser (``python -m iqa_map.training --help``)."""
