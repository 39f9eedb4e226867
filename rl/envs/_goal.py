"""Shared task interface of the goal-conditioned environments.

Every goal environment keeps its goal as a persistent attribute (VecEnv
auto-resets ignore ``reset`` options), appends it as the last ``goal_dim``
entries of the observation, and samples goals per region so that meta-train
and meta-test tasks can be kept apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REGIONS = ("right", "left", "all")


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


class GoalTaskMixin:
    """Goal handling shared by the ``ml3/*`` environments.

    Subclasses define ``goal_dim``, ``default_goal`` and override
    :meth:`check_goal_range` and :meth:`sample_tasks`; they call
    :meth:`_init_goal` in ``__init__`` and :meth:`_goal_from_options` in
    ``reset``.
    """

    goal_dim: int = 2
    default_goal: tuple[float, ...] = (0.0, 0.0)

    def _init_goal(self, goal: Any) -> None:
        self._goal = self.validate_goal(self.default_goal if goal is None else goal)

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
