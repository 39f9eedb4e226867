"""Wrappers that attach meta-train-time information to the ``ml3/*`` environments.

Shaping information (an intermediate goal, expert actions) exists only while
meta-training; these wrappers report it in ``info`` and leave the reward alone
unless asked, so the same env serves meta-train and meta-test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rl.envs._goal import as_generator, check_region
from rl.envs.mountain_car import VALLEY_BOTTOM, MountainCarGoalEnv


class IntermediateGoalWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """MountainCar shaping: pass an intermediate point (swing up the other hill) first.

    Each step adds to ``info``:

    - ``"intermediate_goal_reached"``: whether the car has passed
      ``intermediate_position`` during this episode (sticky until reset);
    - ``"shaping_reward"``: ``-shaping_weight * |x - intermediate_position|``
      until reached, ``bonus`` on the step it is first reached, 0 afterwards.

    Parameters
    ----------
    env : gymnasium.Env
        An env whose ``unwrapped`` is :class:`~rl.envs.MountainCarGoalEnv`.
    intermediate_position : float, optional
        Point to pass. Default: -0.9 (left hill) when the goal lies right of
        the valley bottom, 0.0 otherwise; re-derived at every reset, so it
        follows :meth:`set_task`.
    shaping_weight : float, default=1.0
    bonus : float, default=1.0
    add_to_reward : bool, default=False
        Also add ``shaping_reward`` to the reward (off: meta-train-only info).
    """

    def __init__(
        self,
        env: gym.Env,
        intermediate_position: float | None = None,
        shaping_weight: float = 1.0,
        bonus: float = 1.0,
        add_to_reward: bool = False,
    ) -> None:
        if not isinstance(env.unwrapped, MountainCarGoalEnv):
            raise ValueError(
                "IntermediateGoalWrapper needs a MountainCarGoalEnv (ml3/MountainCarGoal-v0), "
                f"got {type(env.unwrapped).__name__}"
            )
        gym.utils.RecordConstructorArgs.__init__(
            self,
            intermediate_position=intermediate_position,
            shaping_weight=shaping_weight,
            bonus=bonus,
            add_to_reward=add_to_reward,
        )
        gym.Wrapper.__init__(self, env)
        self.intermediate_position = intermediate_position
        self.shaping_weight = float(shaping_weight)
        self.bonus = float(bonus)
        self.add_to_reward = bool(add_to_reward)
        self._target = self._resolve_target()
        self._reached = False

    def _resolve_target(self) -> float:
        if self.intermediate_position is not None:
            return float(self.intermediate_position)
        return -0.9 if self.env.unwrapped.goal[0] > VALLEY_BOTTOM else 0.0

    def _passed(self, position: float) -> bool:
        # Passing means being at or beyond the target, seen from the valley bottom.
        if self._target < VALLEY_BOTTOM:
            return position <= self._target
        return position >= self._target

    @property
    def target(self) -> float:
        """The intermediate position used in the current episode."""
        return self._target

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._target = self._resolve_target()
        self._reached = self._passed(float(self.env.unwrapped.state[0]))
        info["intermediate_goal_reached"] = self._reached
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        position = float(self.env.unwrapped.state[0])
        if self._reached:
            shaping = 0.0
        elif self._passed(position):
            self._reached, shaping = True, self.bonus
        else:
            shaping = -self.shaping_weight * abs(position - self._target)
        info["intermediate_goal_reached"] = self._reached
        info["shaping_reward"] = shaping
        if self.add_to_reward:
            reward = float(reward) + shaping
        return obs, reward, terminated, truncated, info


class ExpertActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Attach an expert's action to ``info["expert_action"]``.

    ``step(a)`` reports the expert's action for the observation ``a`` was
    taken in, so a rollout stores aligned ``(obs_t, a_t, expert_a_t)``;
    ``reset`` reports the expert's action for the first observation. An
    expert with a ``reset()`` method (e.g. a planner with a warm start) has it
    called on every reset.

    Parameters
    ----------
    env : gymnasium.Env
    expert : callable
        ``expert(obs) -> action`` (array-like of the action space's shape).
    """

    def __init__(self, env: gym.Env, expert: Callable[[np.ndarray], Any]) -> None:
        if not callable(expert):
            raise ValueError(f"expert must be callable obs -> action, got {type(expert).__name__}")
        gym.utils.RecordConstructorArgs.__init__(self, expert=expert)
        gym.Wrapper.__init__(self, env)
        self.expert = expert
        self._obs: Any = None
        self._expert_action: np.ndarray | None = None

    def _query(self, obs: Any) -> np.ndarray:
        action = np.asarray(self.expert(obs), dtype=self.action_space.dtype)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"expert returned an action of shape {action.shape}, "
                f"the action space needs {self.action_space.shape}"
            )
        return action

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if callable(getattr(self.expert, "reset", None)):
            self.expert.reset()
        self._obs = obs
        self._expert_action = self._query(obs)
        info["expert_action"] = self._expert_action
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._expert_action is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        expert_action = self._expert_action
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["expert_action"] = expert_action
        self._obs = obs
        self._expert_action = None if (terminated or truncated) else self._query(obs)
        return obs, reward, terminated, truncated, info


class ResampleGoalWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Draw a new goal from ``region`` at every reset (multi-task training, e.g. PPO).

    Parameters
    ----------
    env : gymnasium.Env
        An ``ml3/*`` goal env (its ``unwrapped`` has ``sample_tasks``/``set_task``).
    region : {"right", "left", "all"}, default="all"
    seed : int, optional
        Seed of the goal stream (independent of the env's seed).
    """

    def __init__(self, env: gym.Env, region: str = "all", seed: int | None = None) -> None:
        base = env.unwrapped
        if not (hasattr(base, "sample_tasks") and hasattr(base, "set_task")):
            raise ValueError(f"{type(base).__name__} has no sample_tasks/set_task")
        check_region(region)
        gym.utils.RecordConstructorArgs.__init__(self, region=region, seed=seed)
        gym.Wrapper.__init__(self, env)
        self.region = region
        self._rng = as_generator(seed)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        base = self.env.unwrapped
        base.set_task(base.sample_tasks(1, self._rng, self.region)[0])
        return self.env.reset(**kwargs)
