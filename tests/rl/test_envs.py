"""Tests of the ml3/* goal environments, their torch twins and the arm models."""

import pickle

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

import rl  # noqa: F401  (registers the environments)
from rl.envs import (
    ENV_CLASSES,
    ENV_IDS,
    AntGoalEnv,
    ArmModel,
    MountainCarGoalEnv,
    PointmassGoalEnv,
    ReacherGoalEnv,
    arm2_params,
    arm2_step,
    flat_observation,
    flat_observation_size,
    mountain_car_step,
    planar_arm_bias,
    planar_arm_mass_matrix,
    pointmass_step,
    reacher_fingertip,
    reacher_step,
    sample_trajectories,
)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.filterwarnings("ignore:.*Box observation space m")  # unbounded positions
def test_env_passes_gymnasium_and_sb3_checkers(env_id):
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_is_registered_with_its_episode_limit_and_truncates_there(env_id):
    cls = ENV_CLASSES[env_id]
    assert gym.spec(env_id).max_episode_steps == cls.max_episode_steps
    env = gym.make(env_id)
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)  # keeps the Ant healthy
    ends = [env.step(zero)[2:4] for _ in range(cls.max_episode_steps)]
    assert ends[-1] == (False, True) and not any(any(e) for e in ends[:-1])
    longer = gym.make(env_id, max_episode_steps=cls.max_episode_steps + 5)
    longer.reset(seed=0)
    assert not any(longer.step(zero)[3] for _ in range(cls.max_episode_steps))


def test_meta_training_reads_the_registered_horizon_and_horizon_overrides_it():
    from rl.meta.model_based import env_spec
    from rl.meta.model_free import ModelFreeProblem

    goals = PointmassGoalEnv.sample_tasks(2, rng=0)
    pm = "ml3/PointmassGoal-v0"
    assert ModelFreeProblem(pm, goals, rollout_episodes=1, batch_size=None).horizon == 30
    assert ModelFreeProblem(pm, goals, rollout_episodes=1, batch_size=None, horizon=7).horizon == 7
    car = ModelFreeProblem("ml3/MountainCarGoal-v0", [[0.4]], rollout_episodes=1, batch_size=None)
    assert car.horizon == MountainCarGoalEnv.max_episode_steps == 200
    assert env_spec(pm).horizon == PointmassGoalEnv.max_episode_steps
    assert env_spec("ml3/ReacherGoal-v0").horizon == ReacherGoalEnv.max_episode_steps


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.filterwarnings("ignore:.*Box observation space m")  # unbounded positions
def test_dict_goal_env_passes_gymnasium_and_sb3_checkers(env_id):
    env = gym.make(env_id, goal_observation="dict")
    assert isinstance(env.observation_space, gym.spaces.Dict)
    assert set(env.observation_space) == {"observation", "achieved_goal", "desired_goal"}
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id, goal_observation="dict").unwrapped, warn=True)
    assert not hasattr(gym.make(env_id).unwrapped, "compute_reward")  # flat: no GoalEnv


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_dict_observation_holds_the_flat_one_and_the_achieved_goal(env_id):
    cls = ENV_CLASSES[env_id]
    goal = cls.sample_tasks(1, rng=3)[0]
    flat_env = gym.make(env_id, goal=goal)
    dict_env = gym.make(env_id, goal=goal, goal_observation="dict")
    flat, _ = flat_env.reset(seed=4)
    obs, _ = dict_env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, size=flat_env.action_space.shape).astype(np.float32)
        flat, flat_reward, *_ = flat_env.step(action)
        obs, reward, _, _, info = dict_env.step(action)
        np.testing.assert_allclose(flat_observation(obs, cls.observation_layout), flat, atol=1e-6)
        np.testing.assert_allclose(obs["achieved_goal"], dict_env.unwrapped.achieved_goal(),
                                   rtol=1e-6)
        np.testing.assert_array_equal(obs["desired_goal"], goal.astype(np.float32))
        assert obs["achieved_goal"][0] == pytest.approx(
            cls.state_from_obs(flat.astype(np.float64))[cls.achieved_goal_index[0]], abs=1e-6)
        assert reward == pytest.approx(-info["distance"] * dict_env.unwrapped.goal_reward_weight
                                       + sum(info.get(k, 0.0)
                                             for k in cls.goal_free_reward_keys), abs=1e-5)
    assert flat_observation_size(dict_env.observation_space, cls.observation_layout) == len(flat)
    # vectorised over a batch of goals, as HER relabels them
    achieved = np.stack([obs["achieved_goal"]] * 3)
    desired = np.stack([obs["desired_goal"], obs["achieved_goal"], np.zeros_like(goal)])
    desired = desired.astype(np.float32)
    batch = dict_env.unwrapped.compute_reward(achieved, desired, np.array([info] * 3))
    assert batch.shape == (3,)
    for i in range(3):
        assert batch[i] == dict_env.unwrapped.compute_reward(achieved[i], desired[i], info)
    assert batch[1] == max(batch)  # reaching the goal is the best reward


def test_sac_with_her_replay_buffer_trains_on_the_dict_env():
    from stable_baselines3 import SAC, HerReplayBuffer

    from rl.wrappers import ResampleGoalWrapper

    env = ResampleGoalWrapper(gym.make("ml3/PointmassGoal-v0", goal_observation="dict"), seed=0)
    model = SAC("MultiInputPolicy", env, replay_buffer_class=HerReplayBuffer,
                replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
                learning_starts=60, batch_size=64, policy_kwargs={"net_arch": [16]}, seed=0)
    before = {k: v.clone() for k, v in model.actor.state_dict().items()}
    model.learn(120)
    assert any(not torch.equal(before[k], v) for k, v in model.actor.state_dict().items())
    batch = model.replay_buffer.sample(256)
    desired = batch.observations["desired_goal"].numpy()
    achieved = batch.next_observations["achieved_goal"].numpy()
    expected = env.unwrapped.compute_reward(achieved, desired, [{}] * 256)
    np.testing.assert_allclose(batch.rewards.numpy().ravel(), expected, rtol=1e-6)
    # 4 episodes had 4 goals; HER relabels most samples with positions reached later
    assert len({tuple(g) for g in desired}) > 20


def test_bad_goal_observation_is_rejected():
    with pytest.raises(ValueError, match="goal_observation must be one of"):
        PointmassGoalEnv(goal_observation="tuple")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_rollouts_are_reproducible(env_id):
    def rollout():
        env = gym.make(env_id)
        env.action_space.seed(0)
        obs, _ = env.reset(seed=123)
        out = [obs]
        for _ in range(5):
            out.append(env.step(env.action_space.sample())[0])
        return np.stack(out)

    np.testing.assert_array_equal(rollout(), rollout())


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_goal_is_last_in_observation_and_persists_across_resets(env_id):
    cls = ENV_CLASSES[env_id]
    goals = cls.sample_tasks(2, rng=0)
    env = gym.make(env_id, goal=goals[0])
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs[-cls.goal_dim :], goals[0], rtol=1e-6)
    env.unwrapped.set_task(goals[1])
    obs, _ = env.reset()
    np.testing.assert_allclose(obs[-cls.goal_dim :], goals[1], rtol=1e-6)
    obs, _ = env.reset(options={"goal": goals[0]})
    np.testing.assert_allclose(env.unwrapped.goal, goals[0])
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_allclose(obs[-cls.goal_dim :], goals[0], rtol=1e-6)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_goal_set_by_set_task_survives_pickling(env_id):
    cls = ENV_CLASSES[env_id]
    env = cls()
    goal = cls.sample_tasks(1, rng=5)[0]
    env.set_task(goal)
    clone = pickle.loads(pickle.dumps(env))
    obs, _ = clone.reset(seed=0)
    np.testing.assert_allclose(obs[-cls.goal_dim :], goal, rtol=1e-6)


def test_goal_survives_vecenv_auto_reset():
    venv = DummyVecEnv([lambda: gym.make("ml3/PointmassGoal-v0")])
    venv.env_method("set_task", np.array([-1.0, 0.5]))
    venv.reset()
    for _ in range(PointmassGoalEnv.max_episode_steps + 3):  # crosses one auto-reset
        obs, _, dones, _ = venv.step(np.zeros((1, 2), dtype=np.float32))
    np.testing.assert_allclose(obs[0, -2:], [-1.0, 0.5])


@pytest.mark.parametrize("cls", list(ENV_CLASSES.values()))
def test_sample_tasks_regions_are_disjoint_valid_and_seeded(cls):
    right = cls.sample_tasks(50, rng=1, region="right")
    left = cls.sample_tasks(50, rng=1, region="left")
    assert right.shape == left.shape == (50, cls.goal_dim)
    assert np.all(right[:, 0] > 0) and np.all(left[:, 0] < 0) or cls is MountainCarGoalEnv
    assert right[:, 0].min() > left[:, 0].max()
    for g in np.concatenate([right, left, cls.sample_tasks(20, 2)]):
        cls.validate_goal(g)
    np.testing.assert_array_equal(cls.sample_tasks(5, 7), cls.sample_tasks(5, 7))
    with pytest.raises(ValueError, match="region"):
        cls.sample_tasks(3, 0, region="top")


@pytest.mark.parametrize(
    "cls, bad, match",
    [
        (PointmassGoalEnv, [1.0, 2.0, 3.0], r"shape \(2,\)"),
        (PointmassGoalEnv, [np.nan, 0.0], "finite"),
        (PointmassGoalEnv, [5.0, 0.0], r"\[-2.0, 2.0\]"),
        (PointmassGoalEnv, "left", "numeric"),
        (MountainCarGoalEnv, [0.1, 0.2], r"shape \(1,\)"),
        (MountainCarGoalEnv, 0.9, r"\[-1.2, 0.6\]"),
        (ReacherGoalEnv, [0.3, 0.0], "within reach"),
        (ReacherGoalEnv, [[0.1, 0.1]], r"shape \(2,\)"),
        (AntGoalEnv, [np.inf, 0.0], "finite"),
        (AntGoalEnv, [20.0, 0.0], "<= 10"),
    ],
)
def test_bad_goals_raise_clear_value_error(cls, bad, match):
    with pytest.raises(ValueError, match=match):
        cls.validate_goal(bad)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("bad", [True, [True, False], [0, True], [1 + 2j, 0.0], ["0.1", "0.1"]])
def test_goals_must_be_real_numbers(env_id, bad):
    cls = ENV_CLASSES[env_id]
    if cls.goal_dim == 1 and np.ndim(bad) == 1:
        bad = bad[1:] if bad == [0, True] else bad[:1]
    with pytest.raises(ValueError, match="goal must be numeric: real numbers, not booleans"):
        cls.validate_goal(bad)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("bad", ["nan", "inf", "none"])
def test_non_finite_actions_raise_and_leave_the_state(env_id, bad):
    env = ENV_CLASSES[env_id]()
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape)
    obs, reward, *_ = env.step(action)
    if bad == "none":
        action, match = None, "needs an action of real numbers"
    else:
        action[0] = float(bad)
        match = "non-finite action"
    with pytest.raises(ValueError, match=match):
        env.step(action)
    obs2, reward2, *_ = env.step(np.zeros(env.action_space.shape))  # still stepping cleanly
    assert np.all(np.isfinite(obs2)) and np.isfinite(reward2)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_without_a_goal_keeps_the_current_goal(env_id):
    cls = ENV_CLASSES[env_id]
    goal = cls.sample_tasks(1, 0, region="left")[0]
    env = cls(goal=goal)
    for options in (None, {}, {"other": 1}):
        obs, _ = env.reset(seed=0, options=options)
        np.testing.assert_array_equal(env.goal, goal)
        np.testing.assert_allclose(obs[-cls.goal_dim:], goal, rtol=1e-6)


def test_bad_goal_rejected_by_constructor_set_task_and_reset():
    with pytest.raises(ValueError, match="shape"):
        PointmassGoalEnv(goal=[1.0])
    env = PointmassGoalEnv()
    with pytest.raises(ValueError, match="finite"):
        env.set_task([np.nan, 1.0])
    with pytest.raises(ValueError, match=r"\[-2.0, 2.0\]"):
        env.reset(options={"goal": [3.0, 0.0]})
    np.testing.assert_array_equal(env.goal, [1.0, 0.0])  # unchanged by the failures


def test_pointmass_env_and_torch_twin_agree_step_by_step():
    env = PointmassGoalEnv(goal=[0.5, -1.0])
    env.reset(seed=3)
    state = torch.tensor(env.state)
    rng = np.random.default_rng(0)
    for _ in range(env.max_episode_steps):
        action = rng.uniform(-1.5, 1.5, size=2)  # also outside the box: both clip
        _, reward, _, _, info = env.step(action)
        state = pointmass_step(state, torch.tensor(action))
        np.testing.assert_allclose(env.state, state.numpy(), atol=1e-12)
        assert reward == pytest.approx(-np.linalg.norm(state[:2].numpy() - env.goal))


def test_pointmass_step_is_batched_and_differentiable():
    state = torch.zeros(3, 5, 4, dtype=torch.float64, requires_grad=True)
    action = torch.full((3, 5, 2), 0.5, dtype=torch.float64, requires_grad=True)
    nxt = pointmass_step(state, action)
    assert nxt.shape == (3, 5, 4)
    nxt[..., 0].sum().backward()
    torch.testing.assert_close(action.grad[..., 0], torch.full((3, 5), 0.01, dtype=torch.float64))


def test_mountain_car_twin_matches_gymnasium_mountain_car_continuous():
    ref = gym.make("MountainCarContinuous-v0").unwrapped
    ref.reset(seed=0)
    env = MountainCarGoalEnv()
    env.reset(seed=0)
    ref.state = env.state.astype(np.float32)
    state = torch.tensor(env.state)
    rng = np.random.default_rng(1)
    for _ in range(300):
        action = rng.uniform(-1, 1, size=1)
        ref.step(action.astype(np.float32))
        env.step(action)
        state = mountain_car_step(state, torch.tensor(action))
        np.testing.assert_allclose(env.state, state.numpy(), atol=1e-12)
        np.testing.assert_allclose(env.state, ref.state, atol=1e-5)


def test_mountain_car_step_is_differentiable_through_a_rollout():
    actions = torch.zeros(50, 1, dtype=torch.float64, requires_grad=True)
    state = torch.tensor([-0.5, 0.0], dtype=torch.float64)
    for a in actions:
        state = mountain_car_step(state, a)
    state[0].backward()
    assert torch.isfinite(actions.grad).all() and actions.grad.abs().sum() > 0


def test_reacher_torch_twin_matches_mujoco_and_fingertip():
    env = ReacherGoalEnv(goal=[0.1, -0.1])
    env.reset(seed=0)
    state = torch.tensor(np.r_[env.data.qpos[:2], env.data.qvel[:2]])
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = 0.3 * rng.uniform(-1, 1, size=2)
        obs, reward, *_ = env.step(action)
        state = reacher_step(state, torch.tensor(action))
        np.testing.assert_allclose(env.data.qpos[:2], state[:2].numpy(), atol=1e-9)
        np.testing.assert_allclose(env.data.qvel[:2], state[2:].numpy(), atol=1e-9)
    assert reward == pytest.approx(-np.linalg.norm(env.fingertip() - env.goal))
    # Kinematics at the same joint angles (env.fingertip() lags: it is MuJoCo's xpos
    # from the last RK4 stage, about 1e-6 from the final state).
    data = mujoco.MjData(env.model)
    for q in rng.uniform(-3, 3, size=(10, 2)):
        data.qpos[:2] = q
        mujoco.mj_kinematics(env.model, data)
        tip = reacher_fingertip(torch.tensor(q)).numpy()
        np.testing.assert_allclose(data.body("fingertip").xpos[:2], tip, atol=1e-12)


def test_ant_goal_reward_is_distance_plus_survive_and_costs():
    env = AntGoalEnv(goal=[1.0, 1.0])
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    expected = -info["distance"] + info["reward_survive"] + info["reward_ctrl"]
    assert reward == pytest.approx(expected + info["reward_contact"])
    assert info["distance"] == pytest.approx(np.linalg.norm(env.data.qpos[:2] - [1.0, 1.0]))


@pytest.mark.parametrize("cls", [PointmassGoalEnv, MountainCarGoalEnv])
def test_torch_envs_render_rgb_arrays(cls):
    env = cls(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 3


@pytest.mark.parametrize("name", ["arm2", "arm7"])
def test_inverse_dynamics_equals_mass_matrix_times_qdd_plus_bias(name):
    arm = ArmModel(name)
    data = sample_trajectories(arm, n_traj=3, n_steps=40, rng=0)
    n = arm.n_joints
    q, qd, qdd = (data[k].reshape(-1, n) for k in ("q", "qd", "qdd"))
    mass = arm.mass_matrix(q)
    tau = arm.inverse_dynamics(q, qd, qdd)
    np.testing.assert_allclose(data["tau"].reshape(-1, n), tau)
    np.testing.assert_allclose(data["M"].reshape(-1, n, n), mass)
    np.testing.assert_allclose(
        np.einsum("bij,bj->bi", mass, qdd) + arm.bias_forces(q, qd), tau, atol=1e-9
    )
    np.testing.assert_allclose(mass, mass.transpose(0, 2, 1))
    assert np.linalg.eigvalsh(mass).min() > 0
    assert np.all(q >= arm.joint_range[:, 0]) and np.all(q <= arm.joint_range[:, 1])
    assert np.abs(mass - np.diag(np.diag(mass[0]))).max() > 1e-3  # coupled, not armature-only


def test_sample_trajectories_derivatives_are_consistent():
    data = sample_trajectories("arm2", n_traj=2, n_steps=200, rng=1, dt=0.005)
    dq = np.gradient(data["q"], 0.005, axis=1)
    np.testing.assert_allclose(dq[:, 1:-1], data["qd"][:, 1:-1], atol=1e-3)
    ddq = np.gradient(data["qd"], 0.005, axis=1)
    np.testing.assert_allclose(ddq[:, 1:-1], data["qdd"][:, 1:-1], atol=1e-2)


def test_arm_model_rejects_bad_input():
    arm = ArmModel("arm2")
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        arm.mass_matrix(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="same N"):
        arm.inverse_dynamics(np.zeros((2, 2)), np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="arm2"):
        ArmModel("arm3")


def test_planar_arm_twin_matches_arm2_mjcf():
    arm = ArmModel("arm2")
    params = arm2_params()
    rng = np.random.default_rng(0)
    q, qd = rng.uniform(-2.5, 2.5, (20, 2)), rng.normal(0, 2, (20, 2))
    np.testing.assert_allclose(
        planar_arm_mass_matrix(torch.tensor(q), params).numpy(), arm.mass_matrix(q), atol=1e-12
    )
    np.testing.assert_allclose(
        planar_arm_bias(torch.tensor(q), torch.tensor(qd), params).numpy(),
        arm.bias_forces(q, qd),
        atol=1e-12,
    )


def test_arm2_step_matches_mujoco_simulation():
    arm = ArmModel("arm2")  # constraints disabled: the twin has no joint limits
    m, d = arm.model, mujoco.MjData(arm.model)
    d.qpos[:] = [0.3, -0.5]
    state = torch.tensor([0.3, -0.5, 0.0, 0.0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        action = rng.uniform(-1, 1, size=2)
        d.ctrl[:] = action
        mujoco.mj_step(m, d)
        state = arm2_step(state, torch.tensor(action))
    np.testing.assert_allclose(np.r_[d.qpos, d.qvel], state.numpy(), atol=1e-8)
