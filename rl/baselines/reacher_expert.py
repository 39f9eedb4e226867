"""Expert demonstrations for ReacherGoal by iLQR on the exact torch twin of Reacher-v5.

The twin (:func:`rl.envs.reacher_step`) reproduces MuJoCo's Reacher-v5 step
to about 1e-14 while the elbow stays inside its +-3 rad limit, so open-loop
iLQR plans transfer to the MuJoCo env; :class:`ReacherILQRExpert` replans
whenever the observed state leaves the plan anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rl.baselines.ilqr import ILQRInfo, ilqr
from rl.envs.planar_arm import reacher_fingertip, reacher_step

ELBOW_SOFT_LIMIT = 2.8  # MuJoCo's elbow limit is 3.0 rad; the twin has none


def _reacher_costs(goal: torch.Tensor, control_weight: float, velocity_weight: float):
    def running(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        dist2 = ((reacher_fingertip(x[..., :2]) - goal) ** 2).sum(-1)
        over_limit = torch.relu(x[..., 1].abs() - ELBOW_SOFT_LIMIT)
        return dist2 + control_weight * (u**2).sum(-1) + 100.0 * over_limit**2

    def final(x: torch.Tensor) -> torch.Tensor:
        dist2 = ((reacher_fingertip(x[..., :2]) - goal) ** 2).sum(-1)
        return 10 * dist2 + velocity_weight * (x[..., 2:] ** 2).sum(-1)

    return running, final


def expert_actions_reacher(
    goal: Any,
    state: Any = (0.0, 0.0, 0.0, 0.0),
    horizon: int = 50,
    n_iter: int = 30,
    control_weight: float = 1e-4,
    velocity_weight: float = 1e-3,
    u_init: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, ILQRInfo]:
    """Plan Reacher actions that bring the fingertip to ``goal`` and hold it there.

    Minimises ``sum_t ||tip_t - goal||^2 + control_weight ||a_t||^2`` plus a
    final ``10 ||tip_T - goal||^2 + velocity_weight ||qd_T||^2`` with actions
    in ``[-1, 1]^2``, and a penalty that keeps the elbow within 2.8 rad (the
    MuJoCo model stops it at 3 rad, the twin does not).

    Parameters
    ----------
    goal : array-like of shape (2,)
        Target ``(x, y)``.
    state : array-like of shape (4,), default=zeros
        Start ``(q1, q2, qd1, qd2)``, e.g. ``env.unwrapped.data.qpos[:2]``
        and ``qvel[:2]`` after a reset.
    horizon : int, default=50
        Planned steps (one Reacher episode).
    n_iter : int, default=30
        iLQR iterations.
    control_weight, velocity_weight : float
    u_init : ndarray of shape (horizon, 2), optional
        Warm start (zeros by default).

    Returns
    -------
    actions : ndarray of shape (horizon, 2)
    states : ndarray of shape (horizon + 1, 4)
        Predicted states under the twin.
    info : ILQRInfo
    """
    goal_t = torch.as_tensor(np.asarray(goal, dtype=np.float64))
    x0 = torch.as_tensor(np.asarray(state, dtype=np.float64))
    if goal_t.shape != (2,) or x0.shape != (4,):
        raise ValueError(f"goal must be (2,) and state (4,), got {goal_t.shape}, {x0.shape}")
    init = torch.zeros(horizon, 2, dtype=torch.float64)
    if u_init is not None:
        init = torch.as_tensor(np.asarray(u_init, dtype=np.float64)).reshape(horizon, 2)
    running, final = _reacher_costs(goal_t, control_weight, velocity_weight)
    states, actions, info = ilqr(
        reacher_step, running, final, x0, init, n_iter=n_iter, u_low=-1.0, u_high=1.0
    )
    return actions.numpy(), states.numpy(), info


class ReacherILQRExpert:
    """Callable ``obs -> action`` for :class:`~rl.envs.ReacherGoalEnv` observations.

    Plans ``horizon`` steps with :func:`expert_actions_reacher`, then plays
    the plan: it finds its place in the plan from the observed state, so
    calling it twice on one observation gives the same action. It replans
    (warm-started with the rest of the plan) when the observed state is more
    than ``tol`` away from the predicted one, when the goal changes, or when
    the plan runs out. Use it with :class:`rl.wrappers.ExpertActionWrapper`.

    Parameters
    ----------
    horizon : int, default=50
    n_iter : int, default=30
    tol : float, default=1e-3
        Replanning threshold on the state (rad, rad/s).
    """

    def __init__(self, horizon: int = 50, n_iter: int = 30, tol: float = 1e-3) -> None:
        self.horizon, self.n_iter, self.tol = horizon, n_iter, tol
        self.n_plans = 0
        self.reset()

    def reset(self) -> None:
        """Forget the current plan (called by ExpertActionWrapper at every reset)."""
        self._actions: np.ndarray | None = None
        self._states: np.ndarray | None = None
        self._goal: np.ndarray | None = None
        self._k = 0
        self._last_obs: np.ndarray | None = None

    @staticmethod
    def state_from_obs(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(q1, q2, qd1, qd2)`` and the goal from a ReacherGoal observation."""
        obs = np.asarray(obs, dtype=np.float64)
        q = np.arctan2(obs[2:4], obs[0:2])
        return np.concatenate([q, obs[4:6]]), obs[8:10]

    def _matches(self, state: np.ndarray, k: int) -> bool:
        diff = state - self._states[k]
        diff[:2] = (diff[:2] + np.pi) % (2 * np.pi) - np.pi  # compare angles modulo 2 pi
        return bool(np.max(np.abs(diff)) < self.tol)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if self._last_obs is not None and np.array_equal(obs, self._last_obs):
            return self._actions[self._k].astype(np.float32)  # same observation, same action
        self._last_obs = obs.copy()
        state, goal = self.state_from_obs(obs)
        # The plan advances when the observation matches the next predicted state.
        same_goal = self._goal is not None and np.allclose(goal, self._goal, atol=1e-6)
        if same_goal and self._k + 1 < len(self._actions) and self._matches(state, self._k + 1):
            self._k += 1
        elif not (same_goal and self._matches(state, self._k)):
            warm = np.zeros((self.horizon, 2))
            if self._actions is not None:
                rest = self._actions[self._k + 1 :][: self.horizon]
                warm[: len(rest)] = rest
            self._actions, self._states, _ = expert_actions_reacher(
                goal, state, self.horizon, self.n_iter, u_init=warm
            )
            self._goal, self._k = goal, 0
            self.n_plans += 1
        return self._actions[self._k].astype(np.float32)
