"""ReacherGoal: gymnasium's MuJoCo Reacher-v5 with a target the task controls."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

from rl.envs._backend import Array, concat
from rl.envs._goal import GoalTaskMixin, sample_polar_goals

#: Link lengths of the MuJoCo Reacher arm.
REACHER_LINKS = (0.1, 0.11)
REACHER_REACH = sum(REACHER_LINKS)


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
    goal_observation : {"flat", "dict"}, default="flat"
        ``"dict"``: gymnasium-robotics' goal-env form, a Dict observation
        ``observation`` (cos q, sin q, qd), ``achieved_goal`` (fingertip),
        ``desired_goal``, with :meth:`compute_reward` (for HER); the reward is
        then that of the state after the step.
    **kwargs
        Passed to :class:`gymnasium.envs.mujoco.reacher_v5.ReacherEnv`
        (``render_mode``, ``frame_skip``, ...).
    """

    goal_dim = 2
    default_goal = (0.1, 0.1)
    action_dim = 2
    max_episode_steps = 50
    #: cos q (2), sin q (2), qd (2), fingertip (2)
    state_dim = 8
    achieved_goal_index = (6, 7)
    link_lengths = REACHER_LINKS
    observation_layout = ("observation", "goal_offset", "desired_goal")
    goal_free_reward_keys = ("reward_ctrl",)

    def __init__(
        self,
        goal: Any = None,
        reward_control_weight: float = 0.0,
        success_threshold: float = 0.02,
        goal_observation: str = "flat",
        **kwargs: Any,
    ) -> None:
        self._init_goal(goal)
        self.success_threshold = float(success_threshold)
        # reset_model builds observations before __init__ returns
        self.goal_observation = "flat"
        ReacherEnv.__init__(self, reward_control_weight=reward_control_weight, **kwargs)
        utils.EzPickle.__init__(self, goal, reward_control_weight, success_threshold,
                                goal_observation, **kwargs)
        self._init_observation_space(
            spaces.Box(-np.inf, np.inf, shape=(10,), dtype=np.float32), goal_observation)

    @property
    def goal_reward_weight(self) -> float:
        """Reacher-v5's ``reward_dist_weight``."""
        return self._reward_dist_weight

    @classmethod
    def state_from_obs(cls, obs: Array) -> Array:
        """``cos q, sin q, qd`` and the fingertip (flat observations hold fingertip - goal)."""
        return concat([obs[..., :6], obs[..., 6:8] + obs[..., 8:10]])

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

    achieved_goal = fingertip

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the arm near ``q = 0``; ``options={"goal": g}`` also sets the task."""
        self._goal_from_options(options)
        return super().reset(seed=seed, options=options)

    def reset_model(self) -> np.ndarray | dict[str, np.ndarray]:
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

    def _get_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        theta = self.data.qpos[:2]
        return self._observation(np.concatenate(
            [
                np.cos(theta),
                np.sin(theta),
                self.data.qvel[:2],
                self.fingertip() - self._goal,
                self._goal,
            ]
        ))

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(self.validate_action(action))
        dist = self._distance()
        info.update(distance=dist, is_success=dist < self.success_threshold, goal=self.goal)
        return obs, self._goal_reward(obs, float(reward), info), terminated, truncated, info
