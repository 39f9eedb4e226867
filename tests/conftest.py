"""Test configuration: one torch thread, headless matplotlib, reproducible fuzzing."""

import os

import matplotlib
import torch
from hypothesis import settings

matplotlib.use("Agg")
torch.set_num_threads(1)

# The suite draws the same Hypothesis examples on every run, so a result does not
# depend on luck; HYPOTHESIS_PROFILE=explore searches with fresh random examples.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
