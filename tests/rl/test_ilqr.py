"""Tests of the iLQR baseline on the torch twins."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl  # noqa: F401  (registers the environments)
from rl.baselines import ReacherILQRExpert, expert_actions_reacher, ilqr
from rl.envs import (
    arm2_params,
    arm2_step,
    mountain_car_step,
    planar_arm_fingertip,
    pointmass_step,
)
from rl.envs.mountain_car import VALLEY_BOTTOM
from rl.wrappers import ExpertActionWrapper

f64 = torch.float64


def test_ilqr_reaches_pointmass_goal_within_control_limits():
    goal = torch.tensor([1.0, -0.5], dtype=f64)
    X, U, info = ilqr(
        pointmass_step,
        lambda x, u: 0.01 * (u**2).sum(-1),
        lambda x: 100 * ((x[..., :2] - goal) ** 2).sum(-1) + 10 * (x[..., 2:] ** 2).sum(-1),
        torch.zeros(4, dtype=f64),
        torch.zeros(30, 2, dtype=f64),
        n_iter=15,
        u_low=-1.0,
        u_high=1.0,
    )
    assert X.shape == (31, 4) and U.shape == (30, 2)
    assert torch.linalg.norm(X[-1, :2] - goal) < 0.05
    assert U.abs().max() <= 1.0
    assert info.costs[-1] < info.costs[0] and all(np.diff(info.costs) <= 0)
    # The returned trajectory is the rollout of the returned controls.
    x = torch.zeros(4, dtype=f64)
    for u in U:
        x = pointmass_step(x, u)
    torch.testing.assert_close(x, X[-1])


def test_ilqr_moves_two_link_arm_tip_to_target_against_gravity():
    params = arm2_params()
    target = torch.tensor([0.3, 0.35], dtype=f64)
    X, U, info = ilqr(
        arm2_step,
        lambda x, u: 1e-3 * (u**2).sum(-1),
        lambda x: (
            100 * ((planar_arm_fingertip(x[..., :2], params) - target) ** 2).sum(-1)
            + 0.1 * (x[..., 2:] ** 2).sum(-1)
        ),
        torch.tensor([-np.pi / 2, 0.0, 0.0, 0.0], dtype=f64),  # hanging down
        torch.zeros(60, 2, dtype=f64),
        n_iter=25,
        u_low=-1.0,
        u_high=1.0,
    )
    tip = planar_arm_fingertip(X[-1, :2], params)
    assert torch.linalg.norm(tip - target) < 0.01
    assert X[-1, 2:].abs().max() < 0.5


def test_ilqr_expert_actions_reach_goal_in_mujoco_reacher():
    goal = np.array([-0.06, 0.15])
    env = gym.make("ml3/ReacherGoal-v0", goal=goal)
    env.reset(seed=0)
    data = env.unwrapped.data
    actions, states, info = expert_actions_reacher(
        goal, np.r_[data.qpos[:2], data.qvel[:2]], n_iter=20
    )
    assert actions.shape == (50, 2) and np.abs(actions).max() <= 1
    distances = [env.step(a)[4]["distance"] for a in actions]
    assert distances[-1] < 0.02  # success threshold
    assert np.mean(distances[25:]) < 0.005


def test_reacher_expert_drives_expert_action_wrapper():
    expert = ReacherILQRExpert(n_iter=20)
    env = ExpertActionWrapper(gym.make("ml3/ReacherGoal-v0", goal=[0.12, 0.08]), expert)
    obs, info = env.reset(seed=1)
    action, plans = info["expert_action"], expert.n_plans
    for _ in range(50):
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
        action = expert(obs)
        np.testing.assert_array_equal(expert(obs), action)  # idempotent
    assert info["is_success"]
    assert expert.n_plans == plans == 1  # exact twin: the first plan holds all episode


def test_ilqr_gets_stuck_greedily_on_mountain_car():
    """From rest at the valley bottom, a goal-distance cost makes iLQR push uphill and stall."""
    goal, horizon = 0.45, 100
    x0 = torch.tensor([VALLEY_BOTTOM, 0.0], dtype=f64)
    X, _, info = ilqr(
        mountain_car_step,
        lambda x, u: (x[..., 0] - goal) ** 2 + 1e-3 * (u**2).sum(-1),
        lambda x: 10 * (x[..., 0] - goal) ** 2,
        x0,
        torch.zeros(horizon, 1, dtype=f64),
        n_iter=30,
        u_low=-1.0,
        u_high=1.0,
    )
    assert X[:, 0].max() < goal - 0.3
    # ...although swinging back and forth reaches the goal within the same horizon.
    x = x0
    for _ in range(horizon):
        x = mountain_car_step(x, torch.where(x[1:] > 0, 1.0, -1.0).to(f64))
        if x[0] >= goal:
            break
    assert x[0] >= goal


def test_ilqr_validates_arguments():
    x0, u0 = torch.zeros(4, dtype=f64), torch.zeros(5, 2, dtype=f64)
    cost = lambda x, u: (u**2).sum(-1)  # noqa: E731
    final = lambda x: (x**2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="both"):
        ilqr(pointmass_step, cost, final, x0, u0, u_low=-1.0)
    with pytest.raises(ValueError, match=r"\(T, nu\)"):
        ilqr(pointmass_step, cost, final, x0, u0[0])
    with pytest.raises(ValueError, match="below"):
        ilqr(pointmass_step, cost, final, x0, u0, u_low=1.0, u_high=-1.0)
