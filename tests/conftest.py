"""Test configuration: one torch thread, headless matplotlib."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
