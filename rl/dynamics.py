"""A learned dynamics model: a small bootstrap ensemble of MLPs.

:class:`DynamicsEnsemble` predicts the next state from ``(state, action)``.
Each member is an MLP on normalised inputs that predicts the normalised state
change ``s' - s``; the members are trained on bootstrap resamples of the same
transitions, so their disagreement says where the data is thin. All members
are evaluated at once with batched matrix products, and the prediction is
differentiable w.r.t. states and actions: model-based meta-training rolls
policies out through it and back-propagates the final distance to a goal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from sklearn_ml3._utils import torch_generator

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "silu": nn.functional.silu}


class DynamicsEnsemble(nn.Module):
    """Bootstrap ensemble of MLPs predicting ``s_{t+1}`` from ``(s_t, a_t)``.

    Parameters
    ----------
    state_dim, action_dim : int
        Sizes of the state and action vectors.
    n_members : int, default=5
        Number of ensemble members.
    hidden_layer_sizes : sequence of int, default=(64, 64)
        Hidden widths of every member.
    activation : {"silu", "relu", "tanh"}, default="silu"
        A smooth activation keeps gradients through long rollouts well behaved.
    random_state : int, numpy Generator or None
        Seeds the initial weights, the bootstrap resamples and the mini-batches.

    Attributes
    ----------
    n_transitions_ : int
        Number of transitions of the last :meth:`fit` (0 before fitting).
    train_loss_ : float
        Mean squared error of the last epoch, in normalised units.

    Examples
    --------
    >>> import torch
    >>> model = DynamicsEnsemble(4, 2, n_members=3, random_state=0)
    >>> s, a = torch.randn(100, 4), torch.randn(100, 2)
    >>> model = model.fit(s, a, s + 0.1 * torch.cat([a, a], -1), n_epochs=5)
    >>> tuple(model(s[:7], a[:7]).shape)
    (7, 4)
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        n_members: int = 5,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        activation: str = "silu",
        random_state=None,
    ) -> None:
        super().__init__()
        if state_dim < 1 or action_dim < 1 or n_members < 1:
            raise ValueError(
                "state_dim, action_dim and n_members must be positive, got "
                f"{state_dim}, {action_dim}, {n_members}"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.n_members = int(n_members)
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)
        self.activation = activation
        self.random_state = random_state
        self._generator = torch_generator(random_state) or torch.Generator()
        widths = [self.state_dim + self.action_dim, *self.hidden_layer_sizes, self.state_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            bound = 1.0 / n_in**0.5
            w = torch.empty(self.n_members, n_in, n_out).uniform_(
                -bound, bound, generator=self._generator)
            b = torch.empty(self.n_members, 1, n_out).uniform_(
                -bound, bound, generator=self._generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        n_in = self.state_dim + self.action_dim
        self.register_buffer("input_mean", torch.zeros(n_in))
        self.register_buffer("input_std", torch.ones(n_in))
        self.register_buffer("delta_mean", torch.zeros(self.state_dim))
        self.register_buffer("delta_std", torch.ones(self.state_dim))
        self.n_transitions_ = 0
        self.train_loss_ = float("nan")

    # ------------------------------------------------------------ prediction
    def predict_members(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next state predicted by each member, shape ``(n_members, ..., state_dim)``."""
        state, action = self._check(state, action)
        lead = state.shape[:-1]
        inputs = torch.cat([state, action], -1).reshape(-1, self.state_dim + self.action_dim)
        inputs = (inputs - self.input_mean) / self.input_std
        inputs = inputs.unsqueeze(0).expand(self.n_members, *inputs.shape)
        delta = self._batched(inputs) * self.delta_std + self.delta_mean
        return state.unsqueeze(0) + delta.reshape(self.n_members, *lead, self.state_dim)

    def forward(
        self, state: torch.Tensor, action: torch.Tensor, member: int | None = None
    ) -> torch.Tensor:
        """Predicted next state: the members' mean, or one member's prediction.

        Parameters
        ----------
        state : Tensor of shape (..., state_dim)
        action : Tensor of shape (..., action_dim)
        member : int, optional
            Index of the member to use; the ensemble mean when None.

        Returns
        -------
        next_state : Tensor of shape (..., state_dim)
        """
        if member is not None and not 0 <= member < self.n_members:
            raise ValueError(f"member must be in [0, {self.n_members}), got {member}")
        members = self.predict_members(state, action)
        return members.mean(0) if member is None else members[member]

    def _check(self, state, action):
        dtype = self.weights[0].dtype
        state = torch.as_tensor(state, dtype=dtype)
        action = torch.as_tensor(action, dtype=dtype)
        if state.shape[-1:] != (self.state_dim,) or action.shape[-1:] != (self.action_dim,):
            raise ValueError(
                f"this model maps states of size {self.state_dim} and actions of size "
                f"{self.action_dim}, got shapes {tuple(state.shape)} and {tuple(action.shape)}"
            )
        if state.shape[:-1] != action.shape[:-1]:
            raise ValueError(
                f"state and action need the same leading shape, got {tuple(state.shape)} and "
                f"{tuple(action.shape)}"
            )
        return state, action

    # --------------------------------------------------------------- training
    def fit(
        self,
        states,
        actions,
        next_states,
        *,
        n_epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
    ) -> DynamicsEnsemble:
        """Fit (or keep fitting: weights are warm-started) on transitions.

        Every member gets its own bootstrap resample of the transitions.
        Normalisation statistics are recomputed from the data on every call,
        and the parameters are made trainable again if they were frozen.

        Parameters
        ----------
        states : array-like of shape (n, state_dim)
        actions : array-like of shape (n, action_dim)
        next_states : array-like of shape (n, state_dim)
        n_epochs : int, default=50
            Passes over each member's resample.
        batch_size : int, default=256
        lr : float, default=1e-3
            Adam learning rate.
        weight_decay : float, default=1e-5

        Returns
        -------
        self : DynamicsEnsemble
        """
        states, actions = self._check(states, actions)
        next_states = torch.as_tensor(next_states, dtype=states.dtype)
        if next_states.shape != states.shape or states.dim() != 2:
            raise ValueError(
                "fit needs 2-D states and next_states of equal shape (n, state_dim), got "
                f"{tuple(states.shape)} and {tuple(next_states.shape)}"
            )
        n = len(states)
        if n < 2:
            raise ValueError(f"fit needs at least 2 transitions, got {n}")
        if not (torch.isfinite(states).all() and torch.isfinite(actions).all()
                and torch.isfinite(next_states).all()):
            raise ValueError("transitions contain NaN or infinity")
        self.requires_grad_(True)  # a caller may have frozen the model between fits
        inputs = torch.cat([states, actions], -1)
        delta = next_states - states
        with torch.no_grad():
            self.input_mean.copy_(inputs.mean(0))
            self.input_std.copy_(inputs.std(0).clamp_min(1e-6))
            self.delta_mean.copy_(delta.mean(0))
            self.delta_std.copy_(delta.std(0).clamp_min(1e-6))
        x = (inputs - self.input_mean) / self.input_std
        y = (delta - self.delta_mean) / self.delta_std
        gen = self._generator
        boot = torch.randint(n, (self.n_members, n), generator=gen)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        batch_size = min(int(batch_size), n)
        epoch_loss = float("nan")
        for _ in range(int(n_epochs)):
            order = torch.argsort(torch.rand(self.n_members, n, generator=gen), dim=1)
            order = torch.gather(boot, 1, order)
            total = 0.0
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[:, start:start + batch_size]
                pred = self._batched(x[idx])
                loss = ((pred - y[idx]) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            epoch_loss = total / max(1, n // batch_size)
        optimizer.zero_grad(set_to_none=True)
        self.n_transitions_ = n
        self.train_loss_ = epoch_loss
        return self

    def _batched(self, x: torch.Tensor) -> torch.Tensor:
        """Members applied to their own inputs ``x`` of shape (n_members, b, n_in)."""
        act = _ACTIVATIONS[self.activation]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = act(x)
        return x

    @torch.no_grad()
    def predict(self, states, actions) -> np.ndarray:
        """NumPy convenience: the ensemble-mean next states."""
        return self(states, actions).numpy()

    def describe(self) -> dict:
        """JSON-able summary (shape and training state)."""
        return {
            "state_dim": self.state_dim, "action_dim": self.action_dim,
            "n_members": self.n_members, "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "activation": self.activation, "n_transitions": int(self.n_transitions_),
            "train_loss": float(self.train_loss_),
        }


class ExactDynamics(nn.Module):
    """A known differentiable simulator in the interface of :class:`DynamicsEnsemble`.

    Baselines that differentiate a task loss through the *true* dynamics
    (an upper bound on what any learned model gives them) use it in place of
    a learned model, e.g. ``ExactDynamics(pointmass_step)``.

    Parameters
    ----------
    step : callable ``(state, action) -> next_state``
        Torch operations only (it is differentiated and vmapped).
    """

    def __init__(self, step):
        super().__init__()
        self.step = step

    def forward(self, state: torch.Tensor, action: torch.Tensor,
                member: int | None = None) -> torch.Tensor:
        return self.step(state, action)


__all__ = ["DynamicsEnsemble", "ExactDynamics"]
