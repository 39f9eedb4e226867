"""Goal-conditioned environments, torch twins of their dynamics, and arm models.

Importing this module registers the environments with gymnasium:

============================  =============================  ===================
id                            class                          horizon
============================  =============================  ===================
``ml3/PointmassGoal-v0``      :class:`PointmassGoalEnv`      30 (env truncates)
``ml3/MountainCarGoal-v0``    :class:`MountainCarGoalEnv`    200 (env truncates)
``ml3/ReacherGoal-v0``        :class:`ReacherGoalEnv`        50 (TimeLimit)
``ml3/AntGoal-v0``            :class:`AntGoalEnv`            200 (TimeLimit)
============================  =============================  ===================

Every env takes ``goal=``, has ``set_task(goal)`` and the classmethod
``sample_tasks(n, rng, region)``, and puts the goal last in the observation.
"""

from gymnasium.envs.registration import register, registry

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

ENV_IDS = (
    "ml3/PointmassGoal-v0",
    "ml3/MountainCarGoal-v0",
    "ml3/ReacherGoal-v0",
    "ml3/AntGoal-v0",
)

_SPECS = {
    "ml3/PointmassGoal-v0": ("rl.envs.pointmass:PointmassGoalEnv", None),
    "ml3/MountainCarGoal-v0": ("rl.envs.mountain_car:MountainCarGoalEnv", None),
    "ml3/ReacherGoal-v0": ("rl.envs.reacher:ReacherGoalEnv", 50),
    "ml3/AntGoal-v0": ("rl.envs.ant:AntGoalEnv", 200),
}


def register_envs() -> None:
    """Register the ``ml3/*`` environments with gymnasium (idempotent)."""
    for env_id, (entry_point, max_steps) in _SPECS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


register_envs()

__all__ = [
    "ENV_IDS",
    "AntGoalEnv",
    "ArmModel",
    "MountainCarGoalEnv",
    "PlanarArmParams",
    "PointmassGoalEnv",
    "ReacherGoalEnv",
    "arm2_params",
    "arm2_step",
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
