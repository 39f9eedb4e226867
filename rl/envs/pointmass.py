"""PointmassGoal: a 2-D point mass pushed towards a goal.

The dynamics live in :func:`pointmass_step`, a batched, differentiable torch
function that also accepts numpy arrays; :class:`PointmassGoalEnv` calls it on
numpy, so the env and the torch twin used for model-based meta-training cannot
drift apart.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rl.envs import _backend as B
from rl.envs._backend import Array
from rl.envs._goal import GoalTaskMixin, sample_polar_goals
from rl.envs._raster import Canvas

POINTMASS_DT = 0.1
POINTMASS_MASS = 1.0
POINTMASS_GOAL_RANGE = 2.0


def pointmass_step(state: Array, action: Array, dt: float = POINTMASS_DT) -> Array:
    """One semi-implicit Euler step of the point mass.

    ``v' = v + dt * clip(a, -1, 1) / mass`` then ``p' = p + dt * v'``.

    Parameters
    ----------
    state : torch.Tensor of shape (..., 4)
        ``(x, y, vx, vy)`` with any leading batch dimensions (numpy arrays
        work too and give numpy arrays).
    action : torch.Tensor of shape (..., 2)
        Force, clamped to ``[-1, 1]`` (zero gradient outside the box).
    dt : float, default=0.1
        Time step.

    Returns
    -------
    next_state : torch.Tensor of shape (..., 4)
    """
    force = B.clip(action, -1.0, 1.0)
    pos, vel = state[..., :2], state[..., 2:]
    vel = vel + dt * force / POINTMASS_MASS
    pos = pos + dt * vel
    return B.concat([pos, vel])


class PointmassGoalEnv(GoalTaskMixin, gym.Env):
    """2-D point mass reaching a goal (``ml3/PointmassGoal-v0``).

    Observation ``(x, y, vx, vy, goal_x, goal_y)`` (float32); action: force in
    ``[-1, 1]^2``; reward ``-||p - goal||`` after the step; the episode never
    terminates and ``gymnasium.make`` truncates it after
    :attr:`max_episode_steps` steps (``max_episode_steps=`` of ``make``
    changes that). ``info["is_success"]`` is ``distance < success_threshold``.

    Parameters
    ----------
    goal : array-like of shape (2,), optional
        Goal position in ``[-2, 2]^2``; default ``(1, 0)``.
    init_noise : float, default=0.05
        Start position is uniform in ``[-init_noise, init_noise]^2``, at rest.
    success_threshold : float, default=0.1
        Distance counted as success.
    goal_observation : {"flat", "dict"}, default="flat"
        ``"dict"``: gymnasium-robotics' goal-env form, a Dict observation
        ``observation`` (x, y, vx, vy), ``achieved_goal`` (x, y),
        ``desired_goal``, with :meth:`compute_reward` (for HER).
    render_mode : {"rgb_array"}, optional
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / POINTMASS_DT))}
    goal_dim = 2
    default_goal = (1.0, 0.0)
    dt = POINTMASS_DT
    action_dim = 2
    max_episode_steps = 30
    state_dim = 4
    achieved_goal_index = (0, 1)
    achieved_goal_velocity_index = (2, 3)

    def __init__(
        self,
        goal: Any = None,
        init_noise: float = 0.05,
        success_threshold: float = 0.1,
        goal_observation: str = "flat",
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self._init_goal(goal)
        self.init_noise = float(init_noise)
        self.success_threshold = float(success_threshold)
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        high = np.array([np.inf] * 4 + [POINTMASS_GOAL_RANGE] * 2, dtype=np.float32)
        self._init_observation_space(spaces.Box(-high, high, dtype=np.float32), goal_observation)
        self._state = np.zeros(4)

    @classmethod
    def check_goal_range(cls, goal: np.ndarray) -> None:
        if np.any(np.abs(goal) > POINTMASS_GOAL_RANGE):
            raise ValueError(
                f"PointmassGoalEnv goal must lie in [-{POINTMASS_GOAL_RANGE}, "
                f"{POINTMASS_GOAL_RANGE}]^2, got {goal.tolist()}"
            )

    @classmethod
    def sample_tasks(
        cls, n: int, rng: np.random.Generator | int | None = None, region: str = "all"
    ) -> np.ndarray:
        """Sample ``n`` goals at radius 0.5-1.5 from the start.

        Parameters
        ----------
        n : int
            Number of goals.
        rng : numpy Generator, int or None
            Randomness source.
        region : {"right", "left", "all"}, default="all"
            ``"right"``: x > 0 (meta-train), ``"left"``: x < 0 (meta-test).

        Returns
        -------
        goals : ndarray of shape (n, 2)
        """
        return sample_polar_goals(n, rng, region, 0.5, 1.5)

    @property
    def state(self) -> np.ndarray:
        """Physical state ``(x, y, vx, vy)`` (a copy)."""
        return self._state.copy()

    def achieved_goal(self) -> np.ndarray:
        """Current position ``(x, y)``."""
        return self._state[:2].copy()

    def _obs(self) -> np.ndarray | dict[str, np.ndarray]:
        return self._observation(np.concatenate([self._state, self._goal]))

    def _distance(self) -> float:
        return float(np.linalg.norm(self._state[:2] - self._goal))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset to rest near the origin; ``options={"goal": g}`` also sets the task."""
        super().reset(seed=seed)
        self._goal_from_options(options)
        pos = self.np_random.uniform(-self.init_noise, self.init_noise, size=2)
        self._state = np.concatenate([pos, np.zeros(2)])
        return self._obs(), {"distance": self._distance(), "goal": self.goal}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        act = self.validate_action(action)
        self._state = pointmass_step(self._state, act, self.dt)
        dist = self._distance()
        info = {"distance": dist, "is_success": dist < self.success_threshold, "goal": self.goal}
        obs = self._obs()
        return obs, self._goal_reward(obs, -dist, info), False, False, info

    def render(self) -> np.ndarray | None:
        """Return an RGB frame (goal red, point mass blue) in ``rgb_array`` mode."""
        if self.render_mode != "rgb_array":
            return None
        canvas = Canvas((-2.2, 2.2, -2.2, 2.2))
        canvas.polyline(np.linspace(-2.2, 2.2, 89), np.zeros(89), 0.01, (200, 200, 200))
        canvas.polyline(np.zeros(89), np.linspace(-2.2, 2.2, 89), 0.01, (200, 200, 200))
        canvas.disc(*self._goal, 0.1, (220, 40, 40))
        canvas.disc(*self._state[:2], 0.07, (30, 90, 200))
        return canvas.image
