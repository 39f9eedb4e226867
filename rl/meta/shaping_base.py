"""Shared machinery of the shaping problems (:mod:`rl.meta.shaping`).

:class:`GoalTask`, the deterministic :class:`TwinPolicy` and
:class:`_TwinGoalProblem`, a policy rolled out from a fixed start through the
torch twin of an environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rl.meta.policies import build_mlp, init_params, mlp_forward, stack_params
from sklearn_ml3._utils import build_seeded

Params = dict[str, torch.Tensor]


class GoalTask(NamedTuple):
    """One goal-reaching task.

    Attributes
    ----------
    goal : Tensor of shape (goal_dim,)
        What the policy, the learned loss and the meta-test metric see.
    extra : Mapping[str, Tensor]
        Meta-train-only information, read by the shaped task loss only
        (empty for meta-test tasks).
    """

    goal: torch.Tensor
    extra: Mapping[str, torch.Tensor]


class TwinPolicy(nn.Module):
    """Deterministic policy ``a = tanh(MLP(features))`` for actions in ``[-1, 1]``.

    Parameters
    ----------
    n_features, n_actions : int
    hidden_layer_sizes : sequence of int, default=(32, 32)
    """

    def __init__(self, n_features: int, n_actions: int,
                 hidden_layer_sizes: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        self.net = build_mlp(n_features, hidden_layer_sizes, n_actions)
        self.n_layers = len(hidden_layer_sizes) + 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.act(dict(self.named_parameters()), features)

    def act(self, params: Params, features: torch.Tensor) -> torch.Tensor:
        """The policy with parameters ``params`` (functional, no module overhead)."""
        return mlp_forward(params, features, torch.tanh, torch.tanh)


class _TwinGoalProblem:
    """Shared machinery: a policy rolled out from a fixed start through torch dynamics."""

    vectorizable = False
    n_actions: int
    n_features: int
    horizon: int

    def __init__(self, goals, env_class: type, policy_hidden_sizes: Sequence[int] | None) -> None:
        self.env_class = env_class
        self.goals = env_class.validate_goals(goals)
        if policy_hidden_sizes is None:
            self.policy_hidden_sizes = None
        else:
            self.policy_hidden_sizes = tuple(int(h) for h in policy_hidden_sizes)
            if any(h < 1 for h in self.policy_hidden_sizes):
                raise ValueError(f"policy_hidden_sizes must be positive, got "
                                 f"{policy_hidden_sizes}")
        self.policy = build_seeded(self._new_policy, 0)

    # --------------------------------------------------------- to specialise
    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, states: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def start_state(self) -> torch.Tensor:
        raise NotImplementedError

    def final_distance(self, params: Params, task: GoalTask) -> torch.Tensor:
        raise NotImplementedError

    def validate_goal(self, goal) -> np.ndarray:
        """One goal as a float64 ``(goal_dim,)`` array, checked by the environment class
        (the same check as the training goals); a scalar is a 1-D goal."""
        return self.env_class.validate_goals(np.reshape(goal, (1, -1)))[0]

    def make_task(self, goal) -> GoalTask:
        raise NotImplementedError

    # ----------------------------------------------------------------- common
    def _new_policy(self) -> TwinPolicy:
        return TwinPolicy(self.n_features, self.n_actions, self.policy_hidden_sizes or ())

    @property
    def n_loss_inputs(self) -> int:
        """Features per row of :meth:`loss_inputs` (``LearnedLoss(n_inputs=...)``)."""
        return self.n_features + self.n_actions

    def act(self, params: Params, states: torch.Tensor, goal: torch.Tensor,
            t: int | slice | None = None) -> torch.Tensor:
        """Actions at ``states`` (time step(s) ``t``, used by open-loop policies)."""
        if "u" in params:  # open loop: one unconstrained action per time step
            u = params["u"]
            if u.dim() == 3:  # stacked plans (n_goals, T, n_actions): time first, as the states
                u = u.transpose(0, 1)
            return torch.tanh(u[t if t is not None else slice(None)])
        return self.policy.act(params, self.features(states, goal))

    def rollout(self, params: Params, goal: torch.Tensor,
                start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """States ``(T + 1, n_state)`` and actions ``(T, n_actions)`` of the policy.

        Differentiable w.r.t. ``params`` through the dynamics unless called
        under :func:`torch.no_grad`. For a :meth:`batch` goal ``(n_goals,
        goal_dim)`` the shapes are ``(T + 1, n_goals, n_state)`` and ``(T,
        n_goals, n_actions)``.
        """
        state = self.start_state() if start is None else start
        if goal.dim() == 2:
            state = state.expand(len(goal), -1)
        states, actions = [state], []
        for t in range(self.horizon):
            action = self.act(params, state, goal, t)
            state = self.step(state, action)
            states.append(state)
            actions.append(action)
        return torch.stack(states), torch.stack(actions)

    @property
    def train_tasks(self) -> list[GoalTask]:
        """The meta-training tasks, one per goal, with their extra information."""
        return list(self._train_tasks)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[GoalTask]:
        idx = rng.integers(len(self.goals), size=n)
        return [self._train_tasks[int(i)] for i in idx]

    def init_params(self, task: Any, seed: int) -> Params:
        """A fresh policy; for a :meth:`batch` task one per goal, seeds :func:`batch_init_seeds`."""
        if _is_batch(task):
            return stack_params(self.init_params(None, s)
                                for s in batch_init_seeds(seed, len(task.goal)))
        if self.policy_hidden_sizes is None:  # open loop: small random actions
            gen = torch.Generator().manual_seed(int(seed))
            return {"u": 0.1 * torch.randn(self.horizon, self.n_actions, generator=gen)}
        return init_params(self._new_policy, seed)

    def loss_inputs(self, params: Params, task: GoalTask) -> tuple[torch.Tensor, ...]:
        """One row per time step: ``(features(s_t, goal), a_t)``.

        The states come from a rollout of the detached policy (the twin plays
        the environment); the actions are recomputed from them so that they
        are differentiable w.r.t. ``params``. Reads ``task.goal`` only.
        """
        with torch.no_grad():
            states, _ = self.rollout({k: v.detach() for k, v in params.items()}, task.goal)
        states = states[:-1]
        return self.features(states, task.goal), self.act(params, states, task.goal)

    # ------------------------------------------------------- batched meta-test
    def batch(self, tasks: Sequence[GoalTask]) -> GoalTask:
        """Meta-test tasks as one task whose goal is ``(n_goals, goal_dim)``: one policy per goal.

        The twin's cost is per torch operation, not per goal, so one rollout
        that steps every goal at once trains ``n_goals`` policies for about the
        price of one. :meth:`init_params` stacks a fresh policy per goal,
        :meth:`final_distance` gives one distance per goal, and
        :meth:`apply_loss` and :meth:`summed_final_distance` sum the per-goal
        values, so every policy follows its own gradient: with SGD or Adam
        (both per coordinate) a batch trains each policy as it would be trained
        alone.
        """
        tasks = list(tasks)
        if not tasks:
            raise ValueError("batch needs at least one task")
        if any(t.goal.dim() != 1 for t in tasks):
            raise ValueError("batch takes single-goal tasks (make_task), not batches")
        if any(len(t.extra) for t in tasks):
            raise ValueError("only meta-test tasks (make_task without extra information) can be "
                             "batched; meta-training reads each task's extra on its own")
        return GoalTask(torch.stack([t.goal for t in tasks]), {})

    def apply_loss(self, loss, params: Params, task: GoalTask) -> torch.Tensor:
        """``loss`` on :meth:`loss_inputs`; for a :meth:`batch` task the sum of per-goal losses."""
        inputs = self.loss_inputs(params, task)
        if not _is_batch(task):
            return loss(*inputs)
        # rows are time steps, axis 1 the goals: each policy's loss on its own rollout
        return torch.stack([loss(*(x[:, i] for x in inputs))
                            for i in range(len(task.goal))]).sum()

    def summed_final_distance(self, params: Params, task: GoalTask) -> torch.Tensor:
        """:meth:`final_distance` summed over a :meth:`batch`'s goals (the task-loss baseline)."""
        return self.final_distance(params, task).sum()


def batch_init_seeds(seed: int, n: int) -> list[int]:
    """The initialisation seed of each of the ``n`` policies of a batch started from ``seed``."""
    return [int(s) for s in np.random.default_rng(int(seed)).integers(0, 2**31 - 1, size=n)]


def _is_batch(task: Any) -> bool:
    return task is not None and task.goal.dim() == 2


def _check_weights(shaped: bool, beta: float, gamma: float) -> tuple[float, float]:
    beta, gamma = float(beta), float(gamma)
    if not (math.isfinite(beta) and math.isfinite(gamma)) or beta < 0 or gamma < 0:
        raise ValueError(f"beta and gamma must be non-negative numbers, got {beta}, {gamma}")
    if shaped and beta == 0 and gamma == 0:
        raise ValueError("beta and gamma cannot both be 0")
    return beta, gamma


__all__ = ["GoalTask", "TwinPolicy", "batch_init_seeds"]
