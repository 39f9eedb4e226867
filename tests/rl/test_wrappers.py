"""Tests of the meta-train-time information wrappers."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import rl  # noqa: F401  (registers the environments)
from rl.envs import MountainCarGoalEnv, PointmassGoalEnv
from rl.wrappers import ExpertActionWrapper, IntermediateGoalWrapper, ResampleGoalWrapper


def pump(obs):
    """Energy pumping: push along the velocity (left first from rest)."""
    return np.array([1.0 if obs[1] > 0 else -1.0], dtype=np.float32)


def test_intermediate_goal_reported_in_info_not_in_reward():
    env = IntermediateGoalWrapper(gym.make("ml3/MountainCarGoal-v0"))
    obs, info = env.reset(seed=0)
    assert env.target == -0.9 and info["intermediate_goal_reached"] is False
    reached_at, shaping = None, []
    for t in range(200):
        obs, reward, _, truncated, info = env.step(pump(obs))
        assert reward == pytest.approx(-info["distance"])  # reward untouched
        shaping.append(info["shaping_reward"])
        if info["intermediate_goal_reached"] and reached_at is None:
            reached_at = t
        if truncated:
            break
    assert reached_at is not None and info["intermediate_goal_reached"]
    assert shaping[reached_at] == 1.0 and all(s == 0.0 for s in shaping[reached_at + 1 :])
    assert all(s < 0 for s in shaping[:reached_at])
    _, info = env.reset()
    assert info["intermediate_goal_reached"] is False


def test_intermediate_goal_can_shape_reward_and_follows_task():
    env = IntermediateGoalWrapper(gym.make("ml3/MountainCarGoal-v0"), add_to_reward=True)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(1, dtype=np.float32))
    assert reward == pytest.approx(-info["distance"] + info["shaping_reward"])
    env.unwrapped.set_task([-1.0])  # goal on the left hill: swing right first
    env.reset()
    assert env.target == 0.0


def test_intermediate_goal_wrapper_rejects_other_envs_and_records_args():
    with pytest.raises(ValueError, match="MountainCarGoalEnv"):
        IntermediateGoalWrapper(gym.make("ml3/PointmassGoal-v0"))
    env = IntermediateGoalWrapper(gym.make("ml3/MountainCarGoal-v0"), bonus=2.0)
    assert env.spec.additional_wrappers[-1].kwargs["bonus"] == 2.0
    remade = gym.make(env.spec)
    assert isinstance(remade, IntermediateGoalWrapper) and remade.bonus == 2.0
    gym_check_env(env.unwrapped, skip_render_check=True)


def towards_goal(obs):
    return np.clip(obs[4:6] - obs[:2], -1, 1).astype(np.float32)


def test_expert_action_is_aligned_with_the_observation_acted_on():
    env = ExpertActionWrapper(gym.make("ml3/PointmassGoal-v0", goal=[1.0, -1.0]), towards_goal)
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(info["expert_action"], towards_goal(obs))
    for _ in range(40):
        expected = towards_goal(obs)
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        np.testing.assert_allclose(info["expert_action"], expected)
        if terminated or truncated:
            break
    assert truncated
    with pytest.raises(gym.error.ResetNeeded):
        env.step(env.action_space.sample())


def test_expert_action_wrapper_validates_expert():
    with pytest.raises(ValueError, match="callable"):
        ExpertActionWrapper(gym.make("ml3/PointmassGoal-v0"), expert=np.zeros(2))
    env = ExpertActionWrapper(gym.make("ml3/PointmassGoal-v0"), lambda obs: np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(2,\)"):
        env.reset(seed=0)


def test_expert_with_reset_method_is_reset():
    class Expert:
        resets = 0

        def reset(self):
            self.resets += 1

        def __call__(self, obs):
            return np.zeros(1)

    expert = Expert()
    env = ExpertActionWrapper(MountainCarGoalEnv(), expert)
    env.reset(seed=0)
    env.reset()
    assert expert.resets == 2


def test_resample_goal_wrapper_draws_goals_from_region():
    env = ResampleGoalWrapper(gym.make("ml3/PointmassGoal-v0"), region="left", seed=0)
    goals = []
    for _ in range(5):
        obs, _ = env.reset()
        goals.append(obs[-2:])
    goals = np.array(goals)
    assert np.all(goals[:, 0] < 0) and len(np.unique(goals[:, 0])) == 5
    with pytest.raises(ValueError, match="region"):
        ResampleGoalWrapper(PointmassGoalEnv(), region="up")
