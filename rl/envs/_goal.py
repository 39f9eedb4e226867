"""Shared task interface of the goal-conditioned environments.

Every goal environment keeps its goal as a persistent attribute (VecEnv
auto-resets ignore ``reset`` options), appends it as the last ``goal_dim``
entries of the observation, and samples goals per region so that meta-train
and meta-test tasks can be kept apart. With ``goal_observation="dict"`` the
same env speaks gymnasium-robotics' goal-env form instead: a Dict observation
(``observation``, ``achieved_goal``, ``desired_goal``) and a vectorised
``compute_reward``, which is what SB3's ``HerReplayBuffer`` needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from rl.envs import _backend as B
from rl.envs._backend import Array

REGIONS = ("right", "left", "all")
GOAL_OBSERVATIONS = ("flat", "dict")
#: Parts a flat observation can be built from, given its Dict form.
LAYOUT_PARTS = ("observation", "goal_offset", "desired_goal")


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return ``rng`` as a :class:`numpy.random.Generator` (int seeds and None accepted)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def check_region(region: str) -> str:
    """Validate a task-sampling region name."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    return region


def sample_polar_goals(
    n: int,
    rng: np.random.Generator | int | None,
    region: str,
    r_min: float,
    r_max: float,
) -> np.ndarray:
    """Sample ``n`` planar goals with radius in ``[r_min, r_max]`` and an angle per region.

    ``"right"`` goals have x > 0, ``"left"`` goals x < 0, ``"all"`` any angle.
    The radius is drawn so that goals are uniform over the annulus sector.
    """
    check_region(region)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    gen = as_generator(rng)
    # Uniform area: r = sqrt(U[r_min^2, r_max^2]).
    radius = np.sqrt(gen.uniform(r_min**2, r_max**2, size=n))
    lo, hi = {"right": (-0.5, 0.5), "left": (0.5, 1.5), "all": (-1.0, 1.0)}[region]
    angle = np.pi * gen.uniform(lo, hi, size=n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _real_numbers(value: Any) -> bool:
    """Whether ``value`` is a (nested sequence of) real numbers, booleans excluded."""
    try:
        flat = np.asarray(value, dtype=object).ravel()
    except ValueError:  # ragged
        return False
    return all(isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, (bool, np.bool_)) for v in flat)


def flat_observation(obs: Mapping[str, Array], layout: Sequence[str]) -> Array:
    """The flat observation of a goal env rebuilt from its Dict form.

    Parameters
    ----------
    obs : mapping with ``"observation"``, ``"achieved_goal"``, ``"desired_goal"``
        Arrays or tensors with the same leading (batch) dimensions.
    layout : sequence of {"observation", "goal_offset", "desired_goal"}
        The env's :attr:`~GoalTaskMixin.observation_layout`; ``"goal_offset"``
        is ``achieved_goal - desired_goal``.

    Returns
    -------
    flat : array or tensor of shape (..., flat_dim)
    """
    parts = {"observation": obs["observation"], "desired_goal": obs["desired_goal"]}
    if "goal_offset" in layout:
        parts["goal_offset"] = obs["achieved_goal"] - obs["desired_goal"]
    return B.concat([parts[name] for name in layout])


def flat_observation_size(space: spaces.Dict, layout: Sequence[str]) -> int:
    """Length of :func:`flat_observation` for observations of ``space``."""
    sizes = {"observation": space["observation"].shape[-1],
             "goal_offset": space["desired_goal"].shape[-1],
             "desired_goal": space["desired_goal"].shape[-1]}
    return int(sum(sizes[name] for name in layout))


class GoalTaskMixin:
    """Goal handling shared by the ``ml3/*`` environments.

    Subclasses define ``goal_dim``, ``default_goal``, ``max_episode_steps``,
    ``state_dim`` and ``achieved_goal_index`` (the env facts that meta-training
    reads) and override :meth:`check_goal_range`, :meth:`sample_tasks` and
    :meth:`achieved_goal`; they call :meth:`_init_goal` and
    :meth:`_init_observation_space` in ``__init__``, :meth:`_goal_from_options`
    in ``reset``, and build observations with :meth:`_observation`.
    """

    goal_dim: ClassVar[int] = 2
    default_goal: ClassVar[tuple[float, ...]] = (0.0, 0.0)
    #: Steps per episode; registered as ``max_episode_steps``, so ``gymnasium.make``
    #: truncates there and meta-training reads its horizon from the registry.
    max_episode_steps: ClassVar[int]
    #: Size of the action.
    action_dim: ClassVar[int]
    #: Size of the physical state (:meth:`state_from_obs`).
    state_dim: ClassVar[int]
    #: Entries of the physical state that must reach the goal.
    achieved_goal_index: ClassVar[tuple[int, ...]]
    #: Entries of the physical state holding the time derivative of the achieved
    #: goal, when the state has it.
    achieved_goal_velocity_index: ClassVar[tuple[int, ...] | None] = None
    #: How the flat observation is made of the Dict form's parts (:func:`flat_observation`).
    observation_layout: ClassVar[tuple[str, ...]] = ("observation", "desired_goal")
    #: ``info`` entries of reward terms that do not depend on the goal
    #: (added by :meth:`compute_reward` when present).
    goal_free_reward_keys: ClassVar[tuple[str, ...]] = ()
    #: Weight of ``-||achieved_goal - desired_goal||`` in the reward.
    goal_reward_weight: float = 1.0

    def _init_goal(self, goal: Any) -> None:
        self._goal = self.validate_goal(self.default_goal if goal is None else goal)

    def _init_observation_space(self, flat_space: spaces.Box, goal_observation: str) -> None:
        """Set ``observation_space`` to ``flat_space`` or to its Dict form."""
        if goal_observation not in GOAL_OBSERVATIONS:
            raise ValueError(
                f"goal_observation must be one of {GOAL_OBSERVATIONS}, got {goal_observation!r}")
        self.goal_observation = goal_observation
        if goal_observation == "flat":
            self.observation_space = flat_space
            return
        n_obs = flat_space.shape[0] - self.goal_dim * (len(self.observation_layout) - 1)
        unbounded = np.full(self.goal_dim, np.inf, dtype=np.float32)
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(flat_space.low[:n_obs], flat_space.high[:n_obs],
                                      dtype=np.float32),
            "achieved_goal": spaces.Box(-unbounded, unbounded, dtype=np.float32),
            "desired_goal": spaces.Box(flat_space.low[-self.goal_dim:],
                                       flat_space.high[-self.goal_dim:], dtype=np.float32),
        })

    def _observation(self, flat: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """The observation in this env's form, from the float64 flat one."""
        if self.goal_observation == "flat":
            return flat.astype(np.float32)
        n_obs = self.observation_space["observation"].shape[0]
        return {"observation": flat[:n_obs].astype(np.float32),
                "achieved_goal": self.achieved_goal().astype(np.float32),
                "desired_goal": self._goal.astype(np.float32)}

    def achieved_goal(self) -> np.ndarray:
        """What must reach the goal, now (float64, shape ``(goal_dim,)``)."""
        raise NotImplementedError

    @classmethod
    def state_from_obs(cls, obs: Array) -> Array:
        """The goal-free physical state (``state_dim`` entries) in flat observations."""
        return obs[..., : cls.state_dim]

    @property
    def compute_reward(self) -> Any:
        """The vectorised ``compute_reward(achieved_goal, desired_goal, info)`` of Dict mode.

        See :meth:`goal_reward`. Flat envs have no ``compute_reward`` attribute:
        SB3's env checker and HER take any env that has one for a Dict goal env.
        """
        if self.goal_observation != "dict":
            raise AttributeError("compute_reward exists with goal_observation='dict' only; "
                                 "use goal_reward on a flat goal env")
        return self.goal_reward

    def goal_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """Reward for reaching ``achieved_goal`` when ``desired_goal`` is the goal (vectorised).

        ``-goal_reward_weight * ||achieved_goal - desired_goal||`` plus the
        goal-free terms of the reward found in ``info`` (e.g. a control cost;
        pass ``copy_info_dict=True`` to ``HerReplayBuffer`` to keep them on
        relabelled transitions). In ``goal_observation="dict"`` mode the step
        reward is this function of the returned observation.

        Parameters
        ----------
        achieved_goal, desired_goal : array-like of shape (goal_dim,) or (batch, goal_dim)
        info : dict, or sequence of dicts of length batch

        Returns
        -------
        reward : float or ndarray of shape (batch,)
        """
        achieved = np.asarray(achieved_goal)
        distance = np.linalg.norm(achieved - np.asarray(desired_goal), axis=-1)
        reward = -self.goal_reward_weight * distance
        if self.goal_free_reward_keys:
            infos = [info] if isinstance(info, Mapping) else list(info)
            extra = np.array([sum(i.get(k, 0.0) for k in self.goal_free_reward_keys)
                              for i in infos])
            reward = reward + (extra[0] if isinstance(info, Mapping) else extra)
        return reward.astype(np.float32) if achieved.dtype == np.float32 else reward

    def _goal_reward(self, obs: Any, reward: float, info: dict[str, Any]) -> float:
        """The step reward; in Dict mode recomputed from ``obs`` so that HER agrees exactly."""
        if self.goal_observation == "flat":
            return reward
        return float(self.goal_reward(obs["achieved_goal"], obs["desired_goal"], info))

    @property
    def goal(self) -> np.ndarray:
        """Current goal (a copy; change it with :meth:`set_task`)."""
        return self._goal.copy()

    def set_task(self, goal: Any) -> None:
        """Set the goal; it persists across resets, including VecEnv auto-resets.

        Parameters
        ----------
        goal : array-like of shape (goal_dim,)
            The new goal. Validated by :meth:`validate_goal`.
        """
        self._goal = self.validate_goal(goal)

    def get_task(self) -> np.ndarray:
        """Return the current goal (same as :attr:`goal`)."""
        return self.goal

    @classmethod
    def validate_goal(cls, goal: Any) -> np.ndarray:
        """Return ``goal`` as a float64 array or raise a ValueError that says what to fix."""
        name = cls.__name__
        if not _real_numbers(goal):
            raise ValueError(f"{name} goal must be numeric: real numbers, not booleans, "
                             f"strings or complex numbers; got {goal!r}")
        try:
            arr = np.asarray(goal, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} goal must be numeric with shape ({cls.goal_dim},), got {goal!r}"
            ) from exc
        if arr.shape != (cls.goal_dim,):
            raise ValueError(
                f"{name} goal must have shape ({cls.goal_dim},), got shape {arr.shape}; "
                f"pass one goal such as np.array({list(cls.default_goal)})"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} goal must be finite, got {arr.tolist()}")
        cls.check_goal_range(arr)
        return arr

    @classmethod
    def validate_goals(cls, goals: Any) -> np.ndarray:
        """Return ``goals`` as a float64 ``(n_goals, goal_dim)`` array of valid goals.

        A 1-D input is a list of goals when ``goal_dim == 1``; every goal goes
        through :meth:`validate_goal`.
        """
        try:
            arr = np.asarray(goals, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{cls.__name__} goals must be numeric, got {goals!r}") from exc
        if arr.ndim == 1 and cls.goal_dim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != cls.goal_dim or len(arr) == 0:
            raise ValueError(f"goals must have shape (n_goals, {cls.goal_dim}) with n_goals >= 1 "
                             f"for {cls.__name__}, got shape {arr.shape}")
        return np.stack([cls.validate_goal(goal) for goal in arr])

    @classmethod
    def check_goal_range(cls, goal: np.ndarray) -> None:
        """Raise ValueError if ``goal`` lies outside the environment's task range."""

    def validate_action(self, action: Any) -> np.ndarray:
        """Return ``action`` as a float64 array of the action space's shape, or raise.

        A NaN or infinite action would otherwise carry into the state (or the
        MuJoCo reward) until the next reset without any error.
        """
        name = type(self).__name__
        shape = self.action_space.shape
        if action is None or not _real_numbers(action):
            raise ValueError(f"{name}.step needs an action of real numbers with shape "
                             f"{shape}, got {action!r}")
        arr = np.asarray(action, dtype=np.float64)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{name}.step needs an action of shape {shape}, got shape "
                             f"{arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}.step got a non-finite action {arr.tolist()}; check the "
                             "policy's outputs (NaN usually means training diverged)")
        return arr.reshape(shape)

    def __getstate__(self) -> dict[str, Any]:
        # MuJoCo envs pickle through EzPickle (constructor arguments only): carry the
        # current goal along, so a goal set by set_task survives a pickle round trip.
        parent = getattr(super(), "__getstate__", None)
        state = dict(parent() if parent is not None else self.__dict__)
        state["_persistent_goal"] = self._goal
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        goal = state.pop("_persistent_goal")
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
        self._goal = goal

    def _goal_from_options(self, options: dict[str, Any] | None) -> None:
        if options and "goal" in options:
            self.set_task(options["goal"])
