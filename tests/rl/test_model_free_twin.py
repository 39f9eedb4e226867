"""The batched ReacherGoal simulator, the advantage-structured loss and ES on whole runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from rl import ML3, meta_train_policy_loss
from rl.envs.reacher_batched import BatchedReacherGoal
from rl.meta.model_free import ModelFreeProblem, policy_mean
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.meta import differentiable_optimizer
from sklearn_ml3.networks import ScoreWeightedLossNet

ENV_ID = "ml3/ReacherGoal-v0"
GOALS = np.array([[0.1, 0.1], [0.05, -0.15], [-0.12, 0.02]])
TINY_ES = {"tasks_per_iter": 2, "rollout_episodes": 2, "batch_size": 50, "n_epochs": 1,
           "rollouts_per_policy": 2, "loss_hidden_layer_sizes": (8,), "es_population": 4,
           "inner_optimizer": "adam", "inner_lr": 3e-3, "verbose": 0}


@pytest.mark.parametrize("goal", [[0.1, -0.1], [-0.15, 0.05]])
def test_batched_simulator_agrees_with_mujoco_step_for_step(goal):
    env = gym.make(ENV_ID, goal=goal)
    obs, _ = env.reset(seed=3)
    data = env.unwrapped.data
    sim = BatchedReacherGoal([goal])
    twin_obs = sim.reset(state=np.r_[data.qpos[:2], data.qvel[:2]][None])
    np.testing.assert_allclose(twin_obs[0].numpy(), obs, atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(50):  # a whole episode; moderate torques stay inside the elbow's limit
        action = 0.3 * rng.uniform(-1, 1, size=2)
        obs, reward, _, truncated, info = env.step(action)
        twin_obs, twin_reward, twin_distance = sim.step(action[None])
        # MuJoCo's fingertip lags by the last RK4 stage (~1e-6)
        np.testing.assert_allclose(twin_obs[0].numpy(), obs, atol=1e-5)
        assert float(twin_reward[0]) == pytest.approx(reward, abs=1e-5)
        assert float(twin_distance[0]) == pytest.approx(info["distance"], abs=1e-5)
    assert truncated and sim.horizon == gym.spec(ENV_ID).max_episode_steps


def test_batched_episodes_are_independent():
    goals = np.array([[0.1, 0.1], [-0.1, 0.05], [0.0, -0.2]])
    starts = BatchedReacherGoal.initial_states(3, torch.Generator().manual_seed(0))
    actions = np.random.default_rng(1).uniform(-1, 1, size=(20, 3, 2))
    together = BatchedReacherGoal(goals)
    together.reset(state=starts)
    alone = [BatchedReacherGoal(goals[i:i + 1]) for i in range(3)]
    for i, sim in enumerate(alone):
        sim.reset(state=starts[i:i + 1])
    for a in actions:
        obs, _, _ = together.step(a)
        for i, sim in enumerate(alone):
            np.testing.assert_array_equal(sim.step(a[i:i + 1])[0][0].numpy(), obs[i].numpy())
    with pytest.raises(ValueError, match="shape"):
        BatchedReacherGoal([0.1, 0.1])


def test_score_weighted_loss_is_a_centred_learned_advantage_times_log_prob():
    net = ScoreWeightedLossNet(4, score_column=1, hidden_layer_sizes=(8,))
    x = torch.randn(6, 4)
    others = x[:, [0, 2, 3]]
    weight = net.weight(others).squeeze(-1)
    torch.testing.assert_close(net(x), -x[:, 1] * (weight - weight.mean()))
    # linear in the score column; a constant added to f changes nothing
    with torch.no_grad():
        net.weight[-1].bias.add_(5.0)
    torch.testing.assert_close(net(x), -x[:, 1] * (weight - weight.mean()))
    with pytest.raises(ValueError, match="score_column"):
        ScoreWeightedLossNet(4, score_column=4, hidden_layer_sizes=(8,))


def test_quadratic_advantage_peaks_at_the_learned_target():
    net = ScoreWeightedLossNet(5, score_column=0, hidden_layer_sizes=(), action_columns=[3, 4],
                               state_columns=[1, 2])
    x = torch.randn(6, 5)
    target = net.weight(x[:, [1, 2]])
    expected = -0.5 * (x[:, [3, 4]] - target).pow(2).sum(-1)
    torch.testing.assert_close(net.advantage(x), expected)
    at_target = x.clone()
    at_target[:, [3, 4]] = target.detach()
    assert (net.advantage(at_target) >= net.advantage(x)).all()
    with pytest.raises(ValueError, match="distinct"):
        ScoreWeightedLossNet(5, 0, (), action_columns=[1, 4], state_columns=[1, 2])
    with pytest.raises(ValueError, match="both"):
        ScoreWeightedLossNet(5, 0, (), action_columns=[3, 4])


def test_twin_rollout_is_reproducible_and_shaped_like_the_env_rollout():
    twin = ModelFreeProblem(ENV_ID, GOALS, rollout_episodes=3, horizon=50, batch_size=10,
                            simulator="twin", normalize_inputs=False)
    env = ModelFreeProblem(ENV_ID, GOALS, rollout_episodes=3, horizon=50, batch_size=10,
                           normalize_inputs=False)
    params = twin.init_params(None, 0)
    a = twin.rollout(params, GOALS[0], np.random.default_rng(1))
    b = twin.rollout(params, GOALS[0], np.random.default_rng(1))
    c = env.rollout(params, GOALS[0], np.random.default_rng(1))
    for key in ("obs", "actions", "rewards", "alive"):
        torch.testing.assert_close(a[key], b[key])
        assert a[key].shape == c[key].shape and a[key].dtype == c[key].dtype
    # same untrained policy, same goal: the same distances up to the draw of noise
    assert abs(float(a["final_distance"].mean() - c["final_distance"].mean())) < 0.05
    with pytest.raises(ValueError, match="simulator='twin' exists for"):
        ModelFreeProblem("ml3/PointmassGoal-v0", [[0.5, 0.5]], horizon=5, simulator="twin")


def test_population_members_are_scored_on_common_random_numbers():
    problem = ModelFreeProblem(ENV_ID, GOALS, rollout_episodes=2, batch_size=50,
                               features="joint_frame", simulator="twin", n_epochs=1)
    loss = LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs, hidden_layer_sizes=(8,),
                       bias=True, structure={"score_column": 12}, random_state=0)
    center = parameters_to_vector(loss.parameters()).detach()
    other = center + 0.5 * torch.randn(center.shape, generator=torch.Generator().manual_seed(0))
    tasks = problem.sample_tasks(2, np.random.default_rng(0))
    optimizer = differentiable_optimizer("adam", 1e-2)

    def score(phis):
        return problem.population_task_loss(loss, phis, tasks, np.random.default_rng(5),
                                            optimizer=optimizer, inner_steps=4)

    mixed = score(torch.stack([center, other, center]))
    alone = score(center[None])
    assert mixed[0] == mixed[2] and mixed[0] != mixed[1]  # rows independent, noise shared
    torch.testing.assert_close(alone[0], mixed[0], rtol=1e-6, atol=1e-7)
    assert problem.population_curve.shape == (1, 3)  # 2 updates + the final evaluation
    with pytest.raises(ValueError, match="multiple of"):
        problem.population_task_loss(loss, center[None], tasks, np.random.default_rng(0),
                                     optimizer=optimizer, inner_steps=3)


def test_scored_runs_match_ml3s_update_rule_on_one_policy():
    """A member's run equals training that policy alone with torch.optim (what ML3 does)."""
    problem = ModelFreeProblem(ENV_ID, GOALS[:1], rollout_episodes=1, batch_size=50,
                               features="joint_frame", simulator="twin", n_epochs=1)
    loss = LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs, hidden_layer_sizes=(),
                       bias=True, random_state=0,
                       structure={"score_column": 12, "action_columns": [19, 20],
                                  "state_columns": [*range(10), 13, 14, 15, 16, 17, 18]})
    tasks = problem.sample_tasks(1, np.random.default_rng(0))
    center = parameters_to_vector(loss.parameters()).detach()
    # two updates of one full-batch SGD step each, then the deterministic evaluation
    problem.population_task_loss(loss, center[None], tasks, np.random.default_rng(3),
                                 optimizer=differentiable_optimizer("sgd", 0.5), inner_steps=2)
    scored = problem.population_curve[0]
    # the same run by hand: same seeds as population_task_loss draws them
    rng = np.random.default_rng(3)
    theta = {k: v.clone().requires_grad_() for k, v in
             problem.init_params(tasks[0], int(rng.integers(0, 2**31 - 1, size=1)[0])).items()}
    gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
    opt = torch.optim.SGD(theta.values(), lr=0.5)
    sim = BatchedReacherGoal(tasks[0].goal[None])
    curve = []
    for k in range(3):
        start = BatchedReacherGoal.initial_states(1, gen)
        obs = sim.reset(state=start)
        rows, acts = [], []
        for _ in range(sim.horizon):
            with torch.no_grad():
                act = policy_mean(theta, obs)
                if k < 2:
                    act = act + theta["log_std"].exp() * torch.randn(1, 2, generator=gen)
            rows.append(obs)
            acts.append(act)
            obs, _, distance = sim.step(act.numpy())
        curve.append(float(distance[0]))
        if k == 2:
            break
        randperm = torch.randperm(50, generator=gen)  # the run's mini-batch order (one batch)
        obs_b, act_b = torch.cat(rows)[randperm], torch.cat(acts)[randperm]
        opt.zero_grad()
        loss(problem._features(theta, obs_b, act_b)[0]).backward()
        opt.step()
    np.testing.assert_allclose(scored.numpy(), curve, rtol=1e-4, atol=1e-6)


def test_es_default_meta_training_records_the_structure_and_trains_ml3(tmp_path):
    loss = meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=2, random_state=0,
                                  **TINY_ES)
    info = loss.meta_info_
    assert info["meta_gradient"] == "es" and info["problem"]["simulator"] == "twin"
    assert info["policy"]["loss_structure"] == "quadratic"
    assert info["policy"]["features"] == "joint_frame"
    assert loss.structure == {"score_column": 12, "action_columns": [19, 20],
                              "state_columns": [*range(10), 13, 14, 15, 16, 17, 18]}
    assert len(info["rollout_stats"]) == 2
    path = tmp_path / "reacher.ml3"
    loss.save(path)
    loaded = LearnedLoss.load(path)
    assert loaded.structure == loss.structure
    x = torch.randn(7, loss.n_inputs)
    torch.testing.assert_close(loaded(x), loss(x))
    env = gym.make(ENV_ID, goal=[-0.1, 0.1])
    model = ML3("MlpPolicy", env, learned_loss=loaded, seed=0)
    assert model.n_steps == 100 and model.batch_size == 50
    assert type(model.policy.optimizer) is torch.optim.Adam
    model.learn(total_timesteps=200)
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    action = model.predict(obs, deterministic=True)[0]
    model.save(tmp_path / "agent.zip")
    again = ML3.load(tmp_path / "agent.zip", env=env)
    np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], action)
    assert again.learned_loss.structure == loss.structure
