"""Shapes of meta-loss networks.

Every network maps a batch of per-sample inputs to a per-sample loss of shape
``(n_samples,)``; reduction (mean, weighting) happens in :class:`LearnedLoss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}
OUTPUTS = {"softplus": nn.Softplus, "none": nn.Identity}


def make_mlp(
    n_inputs: int,
    hidden_layer_sizes: Sequence[int],
    n_outputs: int,
    activation: str = "relu",
    bias: bool = True,
) -> nn.Sequential:
    """Build a fully connected network ``n_inputs -> hidden... -> n_outputs``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden_layer_sizes:
        layers += [nn.Linear(width, int(size), bias=bias), ACTIVATIONS[activation]()]
        width = int(size)
    layers.append(nn.Linear(width, n_outputs, bias=bias))
    return nn.Sequential(*layers)


class PointwiseLossNet(nn.Module):
    """A loss computed independently for each row of a feature matrix.

    Parameters
    ----------
    n_inputs : int
        Number of features per row (for regression: prediction, target and
        any extra inputs).
    hidden_layer_sizes, activation, bias
        Shape of the hidden layers.
    output : {"softplus", "none"}
        Final non-linearity; Softplus keeps the loss non-negative.
    """

    def __init__(self, n_inputs, hidden_layer_sizes, activation="relu", bias=True,
                 output="softplus"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {sorted(OUTPUTS)}, got {output!r}")
        self.body = make_mlp(n_inputs, hidden_layer_sizes, 1, activation, bias)
        self.out = OUTPUTS[output]()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row loss, shape ``features.shape[:-1]``."""
        return self.out(self.body(features)).squeeze(-1)


class ScoreWeightedLossNet(nn.Module):
    """A learned weight times one column: ``loss = -x[score_column] * f(other columns)``.

    With the column a log-probability ``log pi(a|s)`` this is a policy loss
    whose gradient is ``-f(s, a, g) grad log pi(a|s)``: ``f`` is a learned
    advantage (a learned reward, in the paper's words) and the loss is linear
    in the log-probability, as a policy-gradient surrogate is. Constraining the
    shape this way keeps the update a weighted likelihood step whatever ``f``
    is. The weights are centred over the rows of each batch (their mean is a
    baseline, as advantages are normalised in PPO): a constant in ``f`` would
    only add variance to the update.

    Parameters
    ----------
    n_inputs : int
        Features per row, the score column included.
    score_column : int
        Index of the column that multiplies the learned weight.
    hidden_layer_sizes, activation, bias
        Shape of the weight network ``f`` (it reads the ``n_inputs - 1``
        other columns).
    """

    def __init__(self, n_inputs, score_column, hidden_layer_sizes, activation="relu",
                 bias=True):
        super().__init__()
        if not 0 <= score_column < n_inputs:
            raise ValueError(f"score_column must be in [0, {n_inputs}), got {score_column}")
        self.score_column = int(score_column)
        self.weight = make_mlp(n_inputs - 1, hidden_layer_sizes, 1, activation, bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row loss, shape ``features.shape[:-1]``."""
        c = self.score_column
        others = torch.cat([features[..., :c], features[..., c + 1:]], -1)
        weight = self.weight(others).squeeze(-1)
        return -features[..., c] * (weight - weight.mean(-1, keepdim=True))


class ClassSharedLossNet(nn.Module):
    """One small network applied to every class's ``(p_k, y_k)`` pair, summed over classes.

    Because the same weights serve every class, one meta-trained loss works
    for any number of classes.
    """

    def __init__(self, hidden_layer_sizes, activation="relu", bias=True, output="softplus"):
        super().__init__()
        self.pair = PointwiseLossNet(2, hidden_layer_sizes, activation, bias, output)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` has shape ``(..., n_classes, 2)``; returns ``(...,)``."""
        return self.pair(features).sum(-1)


class LearnedRateLossNet(nn.Module):
    """A loss network plus a head that outputs a learning-rate multiplier.

    ``forward`` is the wrapped loss network's per-row loss. :meth:`log_rate`
    maps the same features, *detached* from whatever produced them, to one
    log learning-rate multiplier (the mean over rows of a small MLP, softly
    bounded to ``[-max_log_rate, max_log_rate]``). Its last layer starts at
    zero, so an untrained head leaves the step size unchanged (multiplier 1).

    Because the rate's inputs are detached, ``d(rate * loss)/d theta = rate *
    d loss/d theta``: scaling the loss by the rate scales the optimizee's
    gradient step, while the rate stays differentiable w.r.t. the loss
    network's own parameters (so meta-training learns it).
    """

    max_log_rate = 5.0

    def __init__(self, loss_net: nn.Module, n_features: int, hidden_layer_sizes,
                 activation="relu"):
        super().__init__()
        self.loss = loss_net
        self.rate = make_mlp(n_features, hidden_layer_sizes, 1, activation, bias=True)

    def reset_rate(self) -> None:
        """Zero the rate head's last layer: multiplier exactly 1."""
        with torch.no_grad():
            self.rate[-1].weight.zero_()
            self.rate[-1].bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row loss of the wrapped network."""
        return self.loss(features)

    def log_rate(self, features: torch.Tensor) -> torch.Tensor:
        """Scalar log learning-rate multiplier for this batch of features."""
        z = self.rate(features.detach()).mean()
        return self.max_log_rate * torch.tanh(z / self.max_log_rate)
