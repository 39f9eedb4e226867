"""MountainCarGoal: continuous mountain car with a goal position.

:func:`mountain_car_step` holds the standard MountainCarContinuous equations
as a batched, differentiable torch function that also accepts numpy arrays;
:class:`MountainCarGoalEnv` calls it on numpy.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rl.envs import _backend as B
from rl.envs._backend import Array
from rl.envs._goal import GoalTaskMixin, as_generator, check_region
from rl.envs._raster import Canvas

MIN_POSITION, MAX_POSITION = -1.2, 0.6
MAX_SPEED = 0.07
POWER = 0.0015
VALLEY_BOTTOM = -np.pi / 6  # minimum of the height sin(3x)


def mountain_car_step(state: Array, action: Array) -> Array:
    """One step of the continuous mountain car (gymnasium's MountainCarContinuous).

    ``v' = clip(v + 0.0015 * clip(a, -1, 1) - 0.0025 cos(3x), -0.07, 0.07)``,
    ``x' = clip(x + v', -1.2, 0.6)``, and ``v' = 0`` when the car hits the left
    wall moving left. Clipping uses :func:`torch.clamp` (gradient zero outside),
    the wall uses a mask, so the function is differentiable almost everywhere.

    Parameters
    ----------
    state : torch.Tensor of shape (..., 2)
        ``(position, velocity)`` with any leading batch dimensions (numpy
        arrays work too and give numpy arrays).
    action : torch.Tensor of shape (..., 1)
        Power in ``[-1, 1]``.

    Returns
    -------
    next_state : torch.Tensor of shape (..., 2)
    """
    pos, vel = state[..., 0], state[..., 1]
    power = B.clip(action[..., 0], -1.0, 1.0)
    vel = B.clip(vel + power * POWER - 0.0025 * B.cos(3 * pos), -MAX_SPEED, MAX_SPEED)
    pos = B.clip(pos + vel, MIN_POSITION, MAX_POSITION)
    at_wall = (pos <= MIN_POSITION) & (vel < 0)
    vel = B.where(at_wall, B.zeros_like(vel), vel)
    return B.stack([pos, vel])


def mountain_height(position: np.ndarray) -> np.ndarray:
    """Track height used for rendering: ``0.45 sin(3x) + 0.55``."""
    return 0.45 * np.sin(3 * position) + 0.55


class MountainCarGoalEnv(GoalTaskMixin, gym.Env):
    """Continuous mountain car that must reach a goal position (``ml3/MountainCarGoal-v0``).

    Observation ``(position, velocity, goal)`` (float32); action: power in
    ``[-1, 1]``; reward ``-|position - goal|``; never terminated (the
    model-based rollouts have no termination either); ``gymnasium.make``
    truncates after :attr:`max_episode_steps` steps. ``info["is_success"]``
    is ``|position - goal| < success_threshold``.

    Parameters
    ----------
    goal : float or array-like of shape (1,), optional
        Goal position in ``[-1.2, 0.6]``; default 0.45 (the standard flag).
    init_low, init_high : float, default=-0.6, -0.4
        Start position range (at rest), as in gymnasium.
    success_threshold : float, default=0.05
    goal_observation : {"flat", "dict"}, default="flat"
        ``"dict"``: gymnasium-robotics' goal-env form, a Dict observation
        ``observation`` (position, velocity), ``achieved_goal`` (position,),
        ``desired_goal``, with :meth:`compute_reward` (for HER).
    render_mode : {"rgb_array"}, optional
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    goal_dim = 1
    default_goal = (0.45,)
    action_dim = 1
    max_episode_steps = 200
    state_dim = 2
    achieved_goal_index = (0,)
    achieved_goal_velocity_index = (1,)

    def __init__(
        self,
        goal: Any = None,
        init_low: float = -0.6,
        init_high: float = -0.4,
        success_threshold: float = 0.05,
        goal_observation: str = "flat",
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not MIN_POSITION <= init_low <= init_high <= MAX_POSITION:
            raise ValueError(
                f"need -1.2 <= init_low <= init_high <= 0.6, got {init_low}, {init_high}"
            )
        self._init_goal(goal)
        self.init_low, self.init_high = float(init_low), float(init_high)
        self.success_threshold = float(success_threshold)
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        low = np.array([MIN_POSITION, -MAX_SPEED, MIN_POSITION], dtype=np.float32)
        high = np.array([MAX_POSITION, MAX_SPEED, MAX_POSITION], dtype=np.float32)
        self._init_observation_space(spaces.Box(low, high, dtype=np.float32), goal_observation)
        self._state = np.array([VALLEY_BOTTOM, 0.0])

    @classmethod
    def validate_goal(cls, goal: Any) -> np.ndarray:
        if np.ndim(goal) == 0 and not isinstance(goal, str):
            goal = [goal]
        return super().validate_goal(goal)

    @classmethod
    def check_goal_range(cls, goal: np.ndarray) -> None:
        if not MIN_POSITION <= goal[0] <= MAX_POSITION:
            raise ValueError(
                f"MountainCarGoalEnv goal position must lie in [{MIN_POSITION}, {MAX_POSITION}], "
                f"got {goal[0]}"
            )

    @classmethod
    def sample_tasks(
        cls, n: int, rng: np.random.Generator | int | None = None, region: str = "all"
    ) -> np.ndarray:
        """Sample ``n`` goal positions up a hill.

        ``"right"``: U[0.3, 0.55] (right hill), ``"left"``: U[-1.15, -0.9]
        (left hill), ``"all"``: either hill with equal probability.

        Returns
        -------
        goals : ndarray of shape (n, 1)
        """
        check_region(region)
        gen = as_generator(rng)
        right = gen.uniform(0.3, 0.55, size=n)
        left = gen.uniform(-1.15, -0.9, size=n)
        if region == "right":
            goals = right
        elif region == "left":
            goals = left
        else:
            goals = np.where(gen.random(n) < 0.5, right, left)
        return goals[:, None]

    @property
    def state(self) -> np.ndarray:
        """Physical state ``(position, velocity)`` (a copy)."""
        return self._state.copy()

    def achieved_goal(self) -> np.ndarray:
        """Current position, shape (1,)."""
        return self._state[:1].copy()

    def _obs(self) -> np.ndarray | dict[str, np.ndarray]:
        return self._observation(np.concatenate([self._state, self._goal]))

    def _distance(self) -> float:
        return float(abs(self._state[0] - self._goal[0]))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset at rest with position in ``[init_low, init_high]``; ``options={"goal": g}``."""
        super().reset(seed=seed)
        self._goal_from_options(options)
        self._state = np.array([self.np_random.uniform(self.init_low, self.init_high), 0.0])
        return self._obs(), {"distance": self._distance(), "goal": self.goal}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        act = self.validate_action(action)
        self._state = mountain_car_step(self._state, act)
        dist = self._distance()
        info = {"distance": dist, "is_success": dist < self.success_threshold, "goal": self.goal}
        obs = self._obs()
        return obs, self._goal_reward(obs, -dist, info), False, False, info

    def render(self) -> np.ndarray | None:
        """Return an RGB frame (track grey, goal red, car blue) in ``rgb_array`` mode."""
        if self.render_mode != "rgb_array":
            return None
        canvas = Canvas((MIN_POSITION, MAX_POSITION, -0.3, 1.5))
        xs = np.linspace(MIN_POSITION, MAX_POSITION, 300)
        canvas.polyline(xs, mountain_height(xs), 0.012, (120, 120, 120))
        g = self._goal[0]
        canvas.disc(g, float(mountain_height(g)) + 0.05, 0.04, (220, 40, 40))
        x = self._state[0]
        canvas.disc(x, float(mountain_height(x)) + 0.05, 0.05, (30, 90, 200))
        return canvas.image
