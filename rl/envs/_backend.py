"""Array functions that dispatch on torch tensors or numpy arrays.

The dynamics functions are written once with these, so the gymnasium envs step
them on numpy arrays (fast for one state) and model-based code on batched,
differentiable torch tensors: the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def clip(x: Array, low: float, high: float) -> Array:
    """Clamp (``torch.clamp``: zero gradient outside the bounds)."""
    return torch.clamp(x, low, high) if isinstance(x, torch.Tensor) else np.clip(x, low, high)


def cos(x: Array) -> Array:
    return torch.cos(x) if isinstance(x, torch.Tensor) else np.cos(x)


def where(condition: Array, x: Array, y: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.where(condition, x, y)
    return np.where(condition, x, y)


def zeros_like(x: Array) -> Array:
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else np.zeros_like(x)


def stack(xs: Sequence[Array]) -> Array:
    """Stack along a new last axis."""
    return torch.stack(list(xs), -1) if isinstance(xs[0], torch.Tensor) else np.stack(xs, -1)


def concat(xs: Sequence[Array]) -> Array:
    """Concatenate along the last axis."""
    if isinstance(xs[0], torch.Tensor):
        return torch.cat(list(xs), -1)
    return np.concatenate(xs, -1)
