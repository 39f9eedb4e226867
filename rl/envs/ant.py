"""AntGoal: gymnasium's MuJoCo Ant-v5 walking to an xy goal."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from rl.envs._goal import GoalTaskMixin, sample_polar_goals

ANT_GOAL_RANGE = 10.0


class AntGoalEnv(GoalTaskMixin, AntEnv):
    """Ant-v5 reaching an xy goal (``ml3/AntGoal-v0``).

    Observation (float32): Ant-v5's with ``exclude_current_positions_from_observation=False``
    (the torso xy stays in) and, by default, without contact forces
    (``include_cfrc_ext_in_observation=False``): qpos (15), qvel (14), then the
    goal (2), 31 entries. Action: Ant-v5's, ``[-1, 1]^8``. Reward:
    ``-goal_reward_weight * ||torso_xy - goal|| + healthy_reward - ctrl_cost -
    contact_cost`` (Ant-v5's survive/control/contact terms, its forward term
    dropped). Terminates when unhealthy as Ant-v5 does; 200 steps of 0.05 s
    per episode when made with ``gymnasium.make``.

    Parameters
    ----------
    goal : array-like of shape (2,), optional
        Goal ``(x, y)`` with norm <= 10; default ``(2, 0)``.
    goal_reward_weight : float, default=1.0
    success_threshold : float, default=0.5
        ``info["is_success"]`` when the torso is this close to the goal.
    goal_observation : {"flat", "dict"}, default="flat"
        ``"dict"``: gymnasium-robotics' goal-env form, a Dict observation
        ``observation`` (qpos, qvel), ``achieved_goal`` (torso xy),
        ``desired_goal``, with :meth:`compute_reward` (for HER).
    **kwargs
        Passed to :class:`gymnasium.envs.mujoco.ant_v5.AntEnv`.
    """

    goal_dim = 2
    default_goal = (2.0, 0.0)
    action_dim = 8
    max_episode_steps = 200
    state_dim = 29  # qpos (15), qvel (14) with the default observation options
    achieved_goal_index = (0, 1)
    achieved_goal_velocity_index = (15, 16)
    goal_free_reward_keys = ("reward_survive", "reward_ctrl", "reward_contact")

    def __init__(
        self,
        goal: Any = None,
        goal_reward_weight: float = 1.0,
        success_threshold: float = 0.5,
        goal_observation: str = "flat",
        **kwargs: Any,
    ) -> None:
        self._init_goal(goal)
        self.goal_reward_weight = float(goal_reward_weight)
        self.success_threshold = float(success_threshold)
        kwargs.setdefault("exclude_current_positions_from_observation", False)
        kwargs.setdefault("include_cfrc_ext_in_observation", False)
        # reset_model builds observations before __init__ returns
        self.goal_observation = "flat"
        AntEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, goal, goal_reward_weight, success_threshold,
                                goal_observation, **kwargs)
        size = self.observation_space.shape[0] + self.goal_dim
        self._init_observation_space(
            spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32), goal_observation)

    @classmethod
    def check_goal_range(cls, goal: np.ndarray) -> None:
        if np.linalg.norm(goal) > ANT_GOAL_RANGE:
            raise ValueError(
                f"AntGoalEnv goal must satisfy ||goal|| <= {ANT_GOAL_RANGE}, got {goal.tolist()}"
            )

    @classmethod
    def sample_tasks(
        cls, n: int, rng: np.random.Generator | int | None = None, region: str = "all"
    ) -> np.ndarray:
        """Sample ``n`` goals at radius 0.5-3 (uniform over the annulus sector).

        ``region`` is ``"right"`` (x > 0), ``"left"`` (x < 0) or ``"all"``.

        Returns
        -------
        goals : ndarray of shape (n, 2)
        """
        return sample_polar_goals(n, rng, region, 0.5, 3.0)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Ant-v5's reset; ``options={"goal": g}`` also sets the task."""
        self._goal_from_options(options)
        return super().reset(seed=seed, options=options)

    def achieved_goal(self) -> np.ndarray:
        """Current torso ``(x, y)``."""
        return self.data.qpos[:2].copy()

    def _distance(self) -> float:
        return float(np.linalg.norm(self.data.qpos[:2] - self._goal))

    def _get_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        return self._observation(np.concatenate([super()._get_obs(), self._goal]))

    def _get_reset_info(self) -> dict[str, Any]:
        return {**super()._get_reset_info(), "distance": self._distance(), "goal": self.goal}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(self.validate_action(action))
        dist = self._distance()
        reward_goal = -self.goal_reward_weight * dist
        reward = reward_goal + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        info.update(
            reward_goal=reward_goal,
            distance=dist,
            is_success=dist < self.success_threshold,
            goal=self.goal,
        )
        return obs, self._goal_reward(obs, float(reward), info), terminated, truncated, info
