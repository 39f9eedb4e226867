"""Optimizee networks shipped with the estimators.

Every optimizee is built as ``factory(n_features, n_outputs)`` and reads flat
rows of shape ``(n_samples, n_features)``: that is the contract between the
estimators and the meta-training engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LeNet(nn.Module):
    """A LeNet-5 style convolutional network for flat image rows.

    Two 5x5 convolutions (padding 2, so any image of at least 4x4 pixels
    fits), each followed by ReLU and 2x2 max-pooling, then two hidden fully
    connected layers.

    Parameters
    ----------
    n_features : int
        Pixels per row, ``channels * height * width``.
    n_outputs : int
        Output units (classes or targets).
    image_shape : tuple of int, optional
        ``(height, width)`` or ``(channels, height, width)``. By default a
        square single-channel image of ``sqrt(n_features)`` pixels a side
        (28x28 for MNIST, 8x8 for scikit-learn's digits).
    channels : (int, int), default=(6, 16)
        Feature maps of the two convolutions.
    hidden_layer_sizes : sequence of int, default=(120, 84)
        Widths of the fully connected layers.

    Examples
    --------
    Use the class as the estimators' ``module``; bind a non-square shape with
    :func:`functools.partial`:

    >>> from functools import partial
    >>> from sklearn_ml3 import MetaLossClassifier
    >>> from sklearn_ml3.estimators import LeNet
    >>> clf = MetaLossClassifier(module=LeNet)
    >>> clf = MetaLossClassifier(module=partial(LeNet, image_shape=(3, 32, 32)))
    >>> LeNet(64, 10)(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    """

    def __init__(self, n_features: int, n_outputs: int, image_shape: Sequence[int] | None = None,
                 channels: Sequence[int] = (6, 16),
                 hidden_layer_sizes: Sequence[int] = (120, 84)):
        super().__init__()
        self.image_shape = self._image_shape(int(n_features), image_shape)
        in_channels, height, width = self.image_shape
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = c2 * (height // 4) * (width // 4)
        for size in hidden_layer_sizes:
            layers += [nn.Linear(width_in, int(size)), nn.ReLU()]
            width_in = int(size)
        layers.append(nn.Linear(width_in, int(n_outputs)))
        self.classifier = nn.Sequential(*layers)

    @staticmethod
    def _image_shape(n_features, image_shape) -> tuple[int, int, int]:
        if image_shape is None:
            side = math.isqrt(n_features)
            if side * side != n_features:
                raise ValueError(
                    f"LeNet cannot infer a square image from {n_features} features; pass "
                    "image_shape=(height, width) or (channels, height, width)"
                )
            shape = (1, side, side)
        else:
            shape = tuple(int(s) for s in image_shape)
            if len(shape) == 2:
                shape = (1, *shape)
            if len(shape) != 3:
                raise ValueError(f"image_shape must have 2 or 3 entries, got {image_shape!r}")
        if math.prod(shape) != n_features:
            raise ValueError(f"image_shape {shape} has {math.prod(shape)} pixels, but X has "
                             f"{n_features} features")
        if min(shape[1:]) < 4:
            raise ValueError(f"LeNet needs images of at least 4x4 pixels, got {shape}")
        return shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(n_samples, n_outputs)`` for flat rows ``x``."""
        x = x.reshape(-1, *self.image_shape)
        return self.classifier(self.features(x))
