"""Rollouts and the meta-training problem of model-based ML3 (:mod:`rl.meta.model_based`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rl.dynamics import DynamicsEnsemble
from rl.envs import env_class
from rl.meta.model_based_spec import (
    START_SEED,
    GoalEnvSpec,
    GoalPolicy,
    _check_feature_set,
    env_spec,
    loss_features,
)
from rl.meta.policies import init_params
from sklearn_ml3._utils import seed_from
from sklearn_ml3.meta import distributed

Params = dict[str, torch.Tensor]


# ----------------------------------------------------------------- rollouts
class _Rollouts:
    """Real-environment and model rollouts of a policy given as ``(module, params)``."""

    def __init__(self, spec: GoalEnvSpec, policy: GoalPolicy):
        self.spec = spec
        self.policy = policy
        self.env = spec.make()
        obs, _ = self.env.reset(seed=START_SEED)
        self.start_state = torch.as_tensor(spec.state_from_obs(obs), dtype=torch.float32)

    def act(self, params: Params, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.policy.act(params, state, goal)

    @torch.no_grad()
    def real(self, params: Params, goal: np.ndarray, noise: float = 0.0,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Roll out in the real env; returns states (T+1, S), actions (T, A), final distance."""
        spec = self.spec
        self.env.unwrapped.set_task(goal)
        obs, _ = self.env.reset(seed=START_SEED)
        goal_t = torch.as_tensor(goal, dtype=torch.float32)
        params = {k: v.detach() for k, v in params.items()}
        states, actions = [spec.state_from_obs(obs)], []
        distance = float("nan")
        for _ in range(spec.horizon):
            state = torch.as_tensor(states[-1], dtype=torch.float32)
            action = self.act(params, state, goal_t).numpy().astype(np.float64)
            if noise > 0:
                action = np.clip(action + noise * rng.standard_normal(action.shape), -1.0, 1.0)
            obs, _, terminated, truncated, info = self.env.step(action.astype(np.float32))
            states.append(spec.state_from_obs(obs))
            actions.append(action)
            distance = float(info["distance"])
            if terminated or truncated:
                break
        return np.asarray(states), np.asarray(actions), distance

    def model(self, params: Params, goal: torch.Tensor, dynamics: DynamicsEnsemble,
              member: int | None = None) -> torch.Tensor:
        """Differentiable final distance to ``goal`` of a rollout through ``dynamics``."""
        state = self.start_state
        for _ in range(self.spec.horizon):
            state = dynamics(state, self.act(params, state, goal), member=member)
        offset = state[list(self.spec.position)] - goal
        return torch.sqrt((offset**2).sum() + 1e-8)


# ------------------------------------------------------------------ problem
class ModelBasedProblem:
    """Goal reaching through a learned dynamics model, as a :class:`~sklearn_ml3.meta.MetaProblem`.

    A task is a goal. The optimizee is a :class:`GoalPolicy`; the learned
    loss reads :func:`loss_features` of its real-environment trajectory; the
    task loss is the final distance to the goal of a rollout of the updated
    policy through ``dynamics``. Every real rollout is stored as model data;
    :meth:`refit` adds exploratory rollouts and refits the model.
    Under ``torch.distributed``, :meth:`share_rollouts` gives every rank the
    rollouts of all ranks' tasks, so that their models stay identical.

    Parameters
    ----------
    env_id : str
        ``"ml3/PointmassGoal-v0"`` or ``"ml3/ReacherGoal-v0"``.
    goals : array-like of shape (n_goals, goal_dim)
        Meta-training goals.
    dynamics : DynamicsEnsemble
        The learned model (fitted in place by :meth:`refit`).
    policy_hidden_sizes : sequence of int, default=(32, 32)
    model_member : {"mean", "random"}, default="mean"
        Roll the task loss out through the ensemble mean or one random member
        per task loss.
    max_transitions : int, default=50_000
        Size of the model's data buffer (oldest transitions are dropped).
    features : str, default="auto"
        Feature set of the learned loss (:func:`loss_features`).
    random_state : int or None
        Seeds exploration noise and random member choices.
    """

    vectorizable = False

    def __init__(self, env_id: str, goals, dynamics: DynamicsEnsemble,
                 policy_hidden_sizes: Sequence[int] = (32, 32), model_member: str = "mean",
                 max_transitions: int = 50_000, features: str = "auto",
                 random_state=None) -> None:
        self.spec = env_spec(env_id)
        self.features = _check_feature_set(self.spec, features)
        goals = env_class(env_id).validate_goals(goals)
        if model_member not in ("mean", "random"):
            raise ValueError(f"model_member must be 'mean' or 'random', got {model_member!r}")
        if (dynamics.state_dim, dynamics.action_dim) != (self.spec.state_dim,
                                                          self.spec.action_dim):
            raise ValueError(
                f"{env_id} needs a dynamics model of state_dim {self.spec.state_dim} and "
                f"action_dim {self.spec.action_dim}, got {dynamics.state_dim} and "
                f"{dynamics.action_dim}"
            )
        self.goals = goals
        self.dynamics = dynamics
        self.policy_hidden_sizes = tuple(int(h) for h in policy_hidden_sizes)
        self.model_member = model_member
        self.max_transitions = int(max_transitions)
        self.rng = np.random.default_rng(seed_from(random_state))
        self.policy = GoalPolicy(self.spec, self.policy_hidden_sizes)
        self.rollouts = _Rollouts(self.spec, self.policy)
        self._data: list[tuple[np.ndarray, np.ndarray]] = []  # (states, actions) per rollout
        self._recent: dict[tuple[float, ...], tuple[np.ndarray, Params]] = {}
        self._unshared: list[tuple[np.ndarray, np.ndarray, np.ndarray, Params]] = []

    # ------------------------------------------------------------ model data
    def record(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Add one rollout's transitions to the model data."""
        self._data.append((states, actions))
        while sum(len(a) for _, a in self._data) > self.max_transitions:
            self._data.pop(0)

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored ``(states, actions, next_states)``."""
        s = np.concatenate([s[:-1] for s, _ in self._data])
        a = np.concatenate([a for _, a in self._data])
        s_next = np.concatenate([s[1:] for s, _ in self._data])
        return s, a, s_next

    def collect_random(self, n_episodes: int, params: Params | None = None,
                       noise: float = 1.0) -> None:
        """Record ``n_episodes`` exploratory rollouts on random meta-training goals.

        With ``params=None`` a fresh random policy is drawn per episode;
        actions get Gaussian noise of scale ``noise``.
        """
        for _ in range(int(n_episodes)):
            goal = self.goals[self.rng.integers(len(self.goals))]
            p = params if params is not None else self.init_params(
                None, int(self.rng.integers(2**31 - 1)))
            states, actions, _ = self.rollouts.real(p, goal, noise, self.rng)
            self.record(states, actions)

    def refit(self, n_epochs: int = 20, n_explore: int = 4, noise: float = 0.3) -> None:
        """Collect noisy rollouts of the most recent policies, then refit the model."""
        recent = list(self._recent.values())[-int(n_explore):] if n_explore else []
        for goal, params in recent:
            states, actions, _ = self.rollouts.real(params, goal, noise, self.rng)
            self.record(states, actions)
        self.fit_dynamics(n_epochs)

    def fit_dynamics(self, n_epochs: int) -> None:
        """Fit the model on all stored transitions, then freeze it: the task loss
        differentiates through the model, but never trains it."""
        self.dynamics.fit(*self.transitions(), n_epochs=n_epochs)
        self.dynamics.requires_grad_(False)

    # ------------------------------------------------------------ MetaProblem
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[torch.Tensor]:
        idx = rng.integers(len(self.goals), size=n)
        return [torch.as_tensor(self.goals[i], dtype=torch.float32) for i in idx]

    def init_params(self, task: Any, seed: int) -> Params:
        return init_params(lambda: GoalPolicy(self.spec, self.policy_hidden_sizes), seed)

    def loss_inputs(self, params: Params, task: torch.Tensor) -> tuple[torch.Tensor, ...]:
        goal = task.numpy().astype(np.float64)
        states, actions, _ = self.rollouts.real(params, goal)
        rollout = (states, actions, goal, {k: v.detach() for k, v in params.items()})
        if distributed.is_distributed():
            self._unshared.append(rollout)  # recorded in task order by share_rollouts
        else:
            self._remember(*rollout)
        states_t = torch.as_tensor(states[:-1], dtype=torch.float32)
        # the same actions as in the rollout, now differentiable w.r.t. params
        actions_t = self.rollouts.act(params, states_t, task)
        return loss_features(self.spec, states_t, actions_t, task, self.features,
                             final_state=torch.as_tensor(states[-1], dtype=torch.float32))

    def _remember(self, states, actions, goal, params) -> None:
        self.record(states, actions)
        self._recent[tuple(goal)] = (goal, params)

    def share_rollouts(self) -> None:
        """Record the rollouts of every rank's tasks since the last call, in task order.

        Call it on all ranks after every meta-iteration; a no-op without a
        process group (rollouts are then recorded as they happen).
        """
        for rollout in distributed.gather_lists(self._unshared):
            self._remember(*rollout)
        self._unshared = []

    def task_loss(self, params: Params, task: torch.Tensor) -> torch.Tensor:
        member = None
        if self.model_member == "random":
            if distributed.is_distributed():
                raise ValueError("model_member='random' draws members per rank, which differs "
                                 "between processes; use model_member='mean' under "
                                 "torch.distributed")
            member = int(self.rng.integers(self.dynamics.n_members))
        return self.rollouts.model(params, task, self.dynamics, member)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "model_based_rl",
            "env_id": self.spec.env_id,
            "horizon": self.spec.horizon,
            "n_goals": len(self.goals),
            "goals": self.goals.tolist(),
            "model_member": self.model_member,
            "features": self.features,
            "dynamics": self.dynamics.describe(),
        }


__all__ = ["ModelBasedProblem"]
