"""Goal-conditioned environments, torch twins of their dynamics, and arm models.

Importing this module registers the environments with gymnasium:

==============================  ==============================  ==================
id                              class                           max_episode_steps
==============================  ==============================  ==================
``ml3/PointmassGoal-v0``        :class:`PointmassGoalEnv`       30
``ml3/MountainCarGoal-v0``      :class:`MountainCarGoalEnv`     200
``ml3/ReacherGoal-v0``          :class:`ReacherGoalEnv`         50
``ml3/AntGoal-v0``              :class:`AntGoalEnv`             200
==============================  ==============================  ==================

The episode limit is each class's ``max_episode_steps`` (``gymnasium.make``
adds the ``TimeLimit``). Every env takes ``goal=`` and
``goal_observation={"flat", "dict"}``, has ``set_task(goal)`` and the
classmethod ``sample_tasks(n, rng, region)``, and puts the goal last in the
flat observation. This module imports gymnasium, MuJoCo and torch, never
Stable-Baselines3 or scikit-learn, so gymnasium users pay only for the envs.
"""

from gymnasium.envs.registration import register, registry

from rl.envs._goal import GoalTaskMixin, flat_observation, flat_observation_size
from rl.envs.ant import AntGoalEnv
from rl.envs.arm import ArmModel, sample_trajectories
from rl.envs.mountain_car import MountainCarGoalEnv, mountain_car_step
from rl.envs.planar_arm import (
    PlanarArmParams,
    arm2_params,
    arm2_step,
    planar_arm_bias,
    planar_arm_fingertip,
    planar_arm_forward_dynamics,
    planar_arm_mass_matrix,
    planar_arm_step,
    reacher_fingertip,
    reacher_params,
    reacher_step,
)
from rl.envs.pointmass import PointmassGoalEnv, pointmass_step
from rl.envs.reacher import ReacherGoalEnv

#: The environment class of each registered id.
ENV_CLASSES: dict[str, type[GoalTaskMixin]] = {
    "ml3/PointmassGoal-v0": PointmassGoalEnv,
    "ml3/MountainCarGoal-v0": MountainCarGoalEnv,
    "ml3/ReacherGoal-v0": ReacherGoalEnv,
    "ml3/AntGoal-v0": AntGoalEnv,
}
ENV_IDS = tuple(ENV_CLASSES)


def env_class(env_id: str) -> type[GoalTaskMixin]:
    """The class of an ``ml3/*`` environment id (its env facts are class attributes)."""
    if env_id not in ENV_CLASSES:
        raise ValueError(f"{env_id!r} is not an ml3 goal environment; choose one of {ENV_IDS}")
    return ENV_CLASSES[env_id]


def register_envs() -> None:
    """Register the ``ml3/*`` environments with gymnasium (idempotent)."""
    for env_id, cls in ENV_CLASSES.items():
        if env_id not in registry:
            register(id=env_id, entry_point=f"{cls.__module__}:{cls.__name__}",
                     max_episode_steps=cls.max_episode_steps)


register_envs()

__all__ = [
    "ENV_CLASSES",
    "ENV_IDS",
    "AntGoalEnv",
    "ArmModel",
    "GoalTaskMixin",
    "MountainCarGoalEnv",
    "PlanarArmParams",
    "PointmassGoalEnv",
    "ReacherGoalEnv",
    "arm2_params",
    "arm2_step",
    "env_class",
    "flat_observation",
    "flat_observation_size",
    "mountain_car_step",
    "planar_arm_bias",
    "planar_arm_fingertip",
    "planar_arm_forward_dynamics",
    "planar_arm_mass_matrix",
    "planar_arm_step",
    "pointmass_step",
    "reacher_fingertip",
    "reacher_params",
    "reacher_step",
    "register_envs",
    "sample_trajectories",
]
