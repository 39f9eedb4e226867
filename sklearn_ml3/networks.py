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


def _checked_columns(n_inputs: int, *groups) -> None:
    """Raise unless the column indices of ``groups`` are distinct and below ``n_inputs``."""
    used = [int(i) for group in groups for i in group]
    if len(set(used)) != len(used) or not all(0 <= i < n_inputs for i in used):
        raise ValueError(f"columns must be distinct indices in [0, {n_inputs}), got "
                         + ", ".join(str(list(g)) for g in groups))


def _half_squared_distance(features: torch.Tensor, action_columns: torch.Tensor,
                           target: torch.Tensor) -> torch.Tensor:
    """``1/2 ||x[action_columns] - target||^2`` per row."""
    return 0.5 * (features[..., action_columns] - target).pow(2).sum(-1)


class QuadraticLossNet(nn.Module):
    """A loss quadratic in some columns around a learned target of the others.

    ``loss = 1/2 ||x[action_columns] - t(x[state_columns])||^2`` with ``t`` an
    MLP. For a deterministic policy whose actions are the action columns, a
    gradient step on this loss moves every action towards ``t`` of its state:
    the loss is a learned controller that the policy regresses on. Unlike a
    free network of the whole row, the loss's gradient with respect to the
    action is linear in the action, so it keeps its shape wherever ``t``
    extrapolates sensibly. The state columns must not depend on the action.

    Parameters
    ----------
    n_inputs : int
        Features per row.
    action_columns, state_columns : sequence of int
        Distinct column indices.
    hidden_layer_sizes, activation, bias
        Hidden layers of ``t`` (``()`` is linear).
    """

    def __init__(self, n_inputs, action_columns, state_columns, hidden_layer_sizes,
                 activation="relu", bias=True):
        super().__init__()
        _checked_columns(n_inputs, action_columns, state_columns)
        self.register_buffer("action_columns", torch.tensor(list(action_columns)),
                             persistent=False)
        self.register_buffer("state_columns", torch.tensor(list(state_columns)),
                             persistent=False)
        self.target = make_mlp(len(state_columns), hidden_layer_sizes, len(action_columns),
                               activation, bias)

    def finish_init(self) -> None:
        """Zero the target's biases, so that a fresh target has no random offset.

        :class:`~sklearn_ml3.LearnedLoss` calls it after its uniform
        initialisation: with random biases a fresh controller would push every
        action by a random constant; with zero ones its target is zero at
        zero inputs.
        """
        with torch.no_grad():
            for module in self.target.modules():
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row loss, shape ``features.shape[:-1]``."""
        return _half_squared_distance(features, self.action_columns,
                                      self.target(features[..., self.state_columns]))


class FeedbackLossNet(nn.Module):
    """A loss linear in the action columns, along a learned gain times an error.

    ``loss = -x[action_columns] . G(x[state_columns]) x[error_columns]`` with
    ``G`` an MLP whose output is read as an ``(n_action, n_error)`` matrix.
    For a deterministic policy whose actions are the action columns, a
    gradient step on this loss moves every action by ``G(state) error``: the
    loss is a learned feedback law on the error columns (for example where a
    rollout missed its goal), as in iterative learning control. The update
    vanishes exactly where the error does, and scales with it, so it carries
    over to errors larger than those seen in meta-training. The state and
    error columns must not depend on the action.

    Parameters
    ----------
    n_inputs : int
        Features per row.
    action_columns, error_columns, state_columns : sequence of int
        Distinct column indices.
    hidden_layer_sizes, activation, bias
        Hidden layers of ``G`` (``()`` is linear).
    """

    def __init__(self, n_inputs, action_columns, error_columns, state_columns,
                 hidden_layer_sizes, activation="relu", bias=True):
        super().__init__()
        _checked_columns(n_inputs, action_columns, error_columns, state_columns)
        for name, columns in (("action_columns", action_columns),
                              ("error_columns", error_columns), ("state_columns", state_columns)):
            self.register_buffer(name, torch.tensor(list(columns)), persistent=False)
        self.shape = (len(action_columns), len(error_columns))
        self.gain = make_mlp(len(state_columns), hidden_layer_sizes,
                             self.shape[0] * self.shape[1], activation, bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row loss, shape ``features.shape[:-1]``."""
        gain = self.gain(features[..., self.state_columns])
        gain = gain.reshape(*gain.shape[:-1], *self.shape)
        push = (gain @ features[..., self.error_columns].unsqueeze(-1)).squeeze(-1)
        return -(features[..., self.action_columns] * push).sum(-1)


class ScoreWeightedLossNet(nn.Module):
    """A learned weight times one column: ``loss = -x[score_column] * f(x)``.

    With the column a log-probability ``log pi(a|s)`` this is a policy loss
    whose gradient is ``-f(s, a, g) grad log pi(a|s)``: ``f`` is a learned
    advantage (a learned reward, in the paper's words) and the loss is linear
    in the log-probability, as a policy-gradient surrogate is. The weights are
    centred over the rows of each batch (their mean is a baseline, as
    advantages are normalised in PPO): a constant in ``f`` would only add
    variance to the update.

    ``f`` takes one of two shapes:

    - free (``action_columns`` None): an MLP of every column but the score;
    - quadratic (NAF-like, Gu et al. 2016): ``f = -1/2 ||x[action_columns] -
      t(x[state_columns])||^2`` with ``t`` an MLP. The best action of a state
      is ``t``'s output, and a likelihood step moves the policy towards it;
      the state columns must not depend on the action.

    Parameters
    ----------
    n_inputs : int
        Features per row, the score column included.
    score_column : int
        Index of the column that multiplies the learned weight.
    hidden_layer_sizes, activation, bias
        Hidden layers of ``f`` (free) or ``t`` (quadratic; ``()`` is linear).
    action_columns, state_columns : sequence of int, optional
        Both or neither: the quadratic shape.
    """

    def __init__(self, n_inputs, score_column, hidden_layer_sizes, activation="relu",
                 bias=True, action_columns=None, state_columns=None):
        super().__init__()
        if not 0 <= score_column < n_inputs:
            raise ValueError(f"score_column must be in [0, {n_inputs}), got {score_column}")
        if (action_columns is None) != (state_columns is None):
            raise ValueError("give both action_columns and state_columns, or neither")
        self.score_column = int(score_column)
        if action_columns is None:
            others = [i for i in range(n_inputs) if i != self.score_column]
            self.register_buffer("state_columns", torch.tensor(others), persistent=False)
            self.action_columns = None
            self.weight = make_mlp(len(others), hidden_layer_sizes, 1, activation, bias)
            return
        action_columns, state_columns = list(action_columns), list(state_columns)
        _checked_columns(n_inputs, [self.score_column], action_columns, state_columns)
        self.register_buffer("action_columns", torch.tensor(action_columns), persistent=False)
        self.register_buffer("state_columns", torch.tensor(state_columns), persistent=False)
        self.weight = make_mlp(len(state_columns), hidden_layer_sizes, len(action_columns),
                               activation, bias)

    def advantage(self, features: torch.Tensor) -> torch.Tensor:
        """``f`` per row, before centring."""
        state = features[..., self.state_columns]
        if self.action_columns is None:
            return self.weight(state).squeeze(-1)
        return -_half_squared_distance(features, self.action_columns, self.weight(state))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row loss, shape ``features.shape[:-1]``."""
        weight = self.advantage(features)
        return -features[..., self.score_column] * (weight - weight.mean(-1, keepdim=True))


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

    def finish_init(self) -> None:
        """Zero the rate head's last layer: multiplier exactly 1.

        :class:`~sklearn_ml3.LearnedLoss` calls it after its uniform initialisation.
        """
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
