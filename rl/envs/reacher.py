"""ReacherGoal: gymnasium's MuJoCo Reacher-v5 with a target the task controls."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

from rl.envs._goal import GoalTaskMixin, sample_polar_goals

REACHER_REACH = 0.21  # link lengths 0.1 + 0.11


class ReacherGoalEnv(GoalTaskMixin, ReacherEnv):
    """Reacher-v5 whose target is the task's goal (``ml3/ReacherGoal-v0``).

    The target is not redrawn at reset: it stays at :attr:`goal` until
    :meth:`set_task` (or ``reset(options={"goal": ...})``) changes it.

    Observation (10, float32; Reacher-v5 gives float64): ``cos q (2), sin q
    (2), qd (2), fingertip - goal (2), goal (2)``, i.e. Reacher-v5's entries
    reordered so the goal comes last. Action: Reacher-v5's, ``[-1, 1]^2``
    (gear 200). Reward: ``-||fingertip - goal|| - reward_control_weight *
    ||a||^2``. ``info`` adds ``"distance"`` and ``"is_success"`` (distance <
    ``success_threshold``). 50 steps of 0.02 s per episode when made with
    ``gymnasium.make``.

    Parameters
    ----------
    goal : array-like of shape (2,), optional
        Target ``(x, y)`` within reach (norm <= 0.21); default ``(0.1, 0.1)``.
    reward_control_weight : float, default=0.0
        Weight of the control cost (Reacher-v5 uses 1 in the class, 0.1 in docs).
    success_threshold : float, default=0.02
    **kwargs
        Passed to :class:`gymnasium.envs.mujoco.reacher_v5.ReacherEnv`
        (``render_mode``, ``frame_skip``, ...).
    """

    goal_dim = 2
    default_goal = (0.1, 0.1)

    def __init__(
        self,
        goal: Any = None,
        reward_control_weight: float = 0.0,
        success_threshold: float = 0.02,
        **kwargs: Any,
    ) -> None:
        self._init_goal(goal)
        self.success_threshold = float(success_threshold)
        ReacherEnv.__init__(self, reward_control_weight=reward_control_weight, **kwargs)
        utils.EzPickle.__init__(self, goal, reward_control_weight, success_threshold, **kwargs)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(10,), dtype=np.float32)

    @classmethod
    def check_goal_range(cls, goal: np.ndarray) -> None:
        if np.linalg.norm(goal) > REACHER_REACH:
            raise ValueError(
                f"ReacherGoalEnv goal must be within reach, ||goal|| <= {REACHER_REACH}, "
                f"got {goal.tolist()} (norm {np.linalg.norm(goal):.3f})"
            )

    @classmethod
    def sample_tasks(
        cls, n: int, rng: np.random.Generator | int | None = None, region: str = "all"
    ) -> np.ndarray:
        """Sample ``n`` targets at radius 0.05-0.2 (uniform over the annulus sector).

        ``region`` is ``"right"`` (x > 0), ``"left"`` (x < 0) or ``"all"``.

        Returns
        -------
        goals : ndarray of shape (n, 2)
        """
        return sample_polar_goals(n, rng, region, 0.05, 0.2)

    def fingertip(self) -> np.ndarray:
        """Current fingertip ``(x, y)``."""
        return self.get_body_com("fingertip")[:2].copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the arm near ``q = 0``; ``options={"goal": g}`` also sets the task."""
        self._goal_from_options(options)
        return super().reset(seed=seed, options=options)

    def reset_model(self) -> np.ndarray:
        qpos = self.init_qpos + self.np_random.uniform(-0.1, 0.1, size=self.model.nq)
        qpos[-2:] = self._goal
        qvel = self.init_qvel + self.np_random.uniform(-0.005, 0.005, size=self.model.nv)
        qvel[-2:] = 0
        self.set_state(qpos, qvel)
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, Any]:
        return {"distance": self._distance(), "goal": self.goal}

    def _distance(self) -> float:
        return float(np.linalg.norm(self.fingertip() - self._goal))

    def _get_obs(self) -> np.ndarray:
        theta = self.data.qpos[:2]
        return np.concatenate(
            [
                np.cos(theta),
                np.sin(theta),
                self.data.qvel[:2],
                self.fingertip() - self._goal,
                self._goal,
            ]
        ).astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(self.validate_action(action))
        dist = self._distance()
        info.update(distance=dist, is_success=dist < self.success_threshold, goal=self.goal)
        return obs, float(reward), terminated, truncated, info
