"""Model-free meta-training: the policy functions, rollouts, the problem, the engine run."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from rl.meta.model_free import (
    GaussianMLPPolicy,
    ModelFreeProblem,
    loss_features,
    meta_train_policy_loss,
    policy_log_prob,
    policy_mean,
)

ENV_ID = "ml3/ReacherGoal-v0"
GOALS = np.array([[0.1, 0.1], [0.05, -0.15]])
TINY = {"tasks_per_iter": 1, "rollout_episodes": 2, "horizon": 8, "batch_size": 8,
        "n_epochs": 1, "rollouts_per_policy": 1, "loss_hidden_layer_sizes": (16,),
        "verbose": 0,
        # the MuJoCo-rollout, backprop path with a free loss network
        "simulator": "env", "meta_gradient": "backprop", "loss_structure": "free",
        "features": "plain", "inner_optimizer": "sgd", "inner_lr": 0.1}


def test_policy_functions_match_module_and_torch_normal():
    module = GaussianMLPPolicy(10, 2, (8, 8), log_std_init=-0.3)
    params = dict(module.named_parameters())
    obs, actions = torch.randn(5, 10), torch.randn(5, 2)
    torch.testing.assert_close(policy_mean(params, obs), module(obs))
    reference = torch.distributions.Normal(module(obs), params["log_std"].exp())
    torch.testing.assert_close(policy_log_prob(params, obs, actions),
                               reference.log_prob(actions).sum(-1))


def test_policy_init_matches_sb3_actor():
    """Meta-training policies start like SB3's MlpPolicy actors (ortho init)."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    sb3 = ActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3,
                            net_arch={"pi": [64, 64], "vf": []})
    ours = GaussianMLPPolicy(10, 2, (64, 64))
    for a, b in ((sb3.mlp_extractor.policy_net[0].weight, ours.mean[0].weight),
                 (sb3.action_net.weight, ours.mean[4].weight)):
        assert a.shape == b.shape
        # orthogonal init: same singular values, whatever the draw
        torch.testing.assert_close(torch.linalg.svdvals(a), torch.linalg.svdvals(b),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sb3.log_std, ours.log_std)


def test_rollout_shapes_and_reproducibility():
    problem = ModelFreeProblem(ENV_ID, GOALS, rollout_episodes=3, horizon=6, batch_size=4)
    params = problem.init_params(None, seed=0)
    a = problem.rollout(params, GOALS[0], np.random.default_rng(1))
    b = problem.rollout(params, GOALS[0], np.random.default_rng(1))
    assert a["obs"].shape == (3, 6, 10) and a["actions"].shape == (3, 6, 2)
    assert a["obs"].dtype == torch.float32
    torch.testing.assert_close(a["obs"], b["obs"])
    torch.testing.assert_close(a["actions"], b["actions"])
    np.testing.assert_allclose(a["obs"][:, :, -2].numpy(), GOALS[0][0], rtol=1e-6)
    assert (a["actions"].abs() > 1).any()  # stored unclipped (std 1), as SB3's buffer does
    det = problem.rollout(params, GOALS[0], np.random.default_rng(2), deterministic=True)
    torch.testing.assert_close(det["actions"], policy_mean(params, det["obs"]))


def test_task_loss_is_differentiable_and_feeds_next_steps():
    problem = ModelFreeProblem(ENV_ID, GOALS, rollout_episodes=2, horizon=5, batch_size=4)
    task = problem.sample_tasks(1, np.random.default_rng(0))[0]
    params = {k: v.requires_grad_() for k, v in problem.init_params(task, 0).items()}
    (inputs,) = problem.loss_inputs(params, task)
    assert inputs.shape == (4, 10 + 2 + 1 + 2)  # obs, action, log-prob, goal
    assert inputs.requires_grad
    # standardised with a shift and scale fixed before meta-training
    assert len(problem.input_shift) == len(problem.input_scale) == 15
    assert all(s > 0 for s in problem.input_scale)
    raw = loss_features(task.buffer["obs"][:4], task.buffer["actions"][:4],
                        torch.zeros(4), problem.goal_dim)
    torch.testing.assert_close(raw[:, -2:], raw[:, 8:10])  # goal = observation tail
    value = problem.task_loss(params, task)
    grads = torch.autograd.grad(value, list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert problem.stats[-1]["final_distance"] > 0
    assert len(task.buffer["obs"]) == 10  # the fresh rollout is the next experience


def test_meta_training_changes_the_loss_and_records_what_ml3_needs():
    from sklearn_ml3 import LearnedLoss

    fresh = LearnedLoss(kind="features", n_inputs=15, hidden_layer_sizes=(16,), bias=True,
                        random_state=0)
    loss = meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=3, random_state=0, **TINY)
    assert loss.meta_history_.shape == (3,) and np.isfinite(loss.meta_history_).all()
    changed = [not torch.equal(a, b) for a, b in zip(
        loss.parameters(), fresh.parameters(), strict=True)]
    assert any(changed)
    policy = loss.meta_info_["policy"]
    assert policy["goal_dim"] == 2 and policy["rollout_steps"] == 16
    assert policy["inputs"] == ["obs", "action", "log_prob", "goal"]
    assert loss.meta_info_["problem"]["type"] == "model_free"
    assert len(loss.meta_info_["rollout_stats"]) == 3
    json.dumps(loss.meta_info_)  # stays saveable


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    straight = meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=3, random_state=1, **TINY)
    ckpt = tmp_path / "meta.ckpt"
    meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=2, random_state=1,
                           checkpoint=ckpt, **TINY)
    resumed = meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=3, random_state=1,
                                     checkpoint=ckpt, **TINY)
    np.testing.assert_allclose(resumed.meta_history_, straight.meta_history_)
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_inputs():
    with pytest.raises(ValueError, match="goals must have shape"):
        ModelFreeProblem(ENV_ID, [0.1, 0.1])
    with pytest.raises(ValueError, match="within reach"):
        ModelFreeProblem(ENV_ID, [[1.0, 1.0]])
    with pytest.raises(ValueError, match="batch_size"):
        ModelFreeProblem(ENV_ID, GOALS, rollout_episodes=1, horizon=5, batch_size=6)
    with pytest.raises(ValueError, match="not a goal environment"):
        ModelFreeProblem("Pendulum-v1", GOALS)
    from sklearn_ml3 import LearnedLoss

    with pytest.raises(ValueError, match="n_inputs=15"):
        meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=1,
                               loss=LearnedLoss(kind="features", n_inputs=3), **TINY)


def test_ant_benchmark_smoke(tmp_path):
    path = Path(__file__).parents[2] / "benchmarks" / "model_free_ant.py"
    spec = importlib.util.spec_from_file_location("model_free_ant", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--seeds", "1", "--out", str(tmp_path)])
    assert (tmp_path / "results.json").exists() and (tmp_path / "report.md").exists()
    assert (tmp_path / "runs" / "seed_0.json").exists()  # a rerun resumes from it
    for method in ("ML3", "ML3-untrained", "PPO, tuned lr"):
        assert np.isfinite(results["final_distance"][method]["per_seed"]).all()
    record, = results["baselines"]
    assert "validation" in record["selected_on"] and len(record["scores"]) >= 3
    assert results["meta_train_time_s"]["cpu"] > 0


def test_action_penalty_pushes_mean_actions_back_into_the_box():
    kwargs = {"rollout_episodes": 2, "horizon": 5, "batch_size": 4}
    plain = ModelFreeProblem(ENV_ID, GOALS, normalize_inputs=False, **kwargs)
    shaped = ModelFreeProblem(ENV_ID, GOALS, normalize_inputs=False, action_penalty=1.0, **kwargs)
    params = plain.init_params(None, 0)
    bias = [k for k in params if k.startswith("mean.") and k.endswith(".bias")][-1]
    params[bias] = torch.tensor([3.0, 0.0])  # first mean action far above the box (high = 1)
    params = {k: v.requires_grad_() for k, v in params.items()}
    task = plain.sample_tasks(1, np.random.default_rng(0))[0]
    base = plain.task_loss(params, task)
    task = shaped.sample_tasks(1, np.random.default_rng(0))[0]
    value = shaped.task_loss(params, task)
    assert value > base + 3.0  # same rollouts; (3 - 1)^2 on every row
    (grad,) = torch.autograd.grad(value, [params[bias]])
    assert grad[0] > 0  # descending it lowers the out-of-box mean action
    with pytest.raises(ValueError, match="action_penalty"):
        ModelFreeProblem(ENV_ID, GOALS, action_penalty=-1.0, **kwargs)


def test_joint_frame_features_match_the_model_based_ones_and_train_with_ml3():
    import gymnasium as gym

    from rl import ML3
    from rl.meta import model_based

    env = gym.make(ENV_ID, goal=[0.05, -0.12])
    obs = []
    o, _ = env.reset(seed=0)
    for _ in range(12):
        obs.append(o)
        o, *_ = env.step(env.action_space.sample())
    obs = torch.as_tensor(np.array(obs), dtype=torch.float64)
    actions = torch.randn(len(obs), 2, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    rows = loss_features(obs, actions, torch.zeros(len(obs), dtype=torch.float64), 2,
                         features="joint_frame")
    assert rows.shape == (len(obs), 15 + 6)
    spec = model_based.env_spec(ENV_ID)
    states = torch.as_tensor(np.stack([spec.state_from_obs(x) for x in obs.numpy()]))
    expected = torch.cat(model_based.loss_features(spec, states, actions, obs[0, -2:],
                                                   "joint_frame"), -1)
    torch.testing.assert_close(rows[:, 15:], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="features must be one of"):
        loss_features(obs, actions, torch.zeros(len(obs)), 2, features="polar")

    loss = meta_train_policy_loss(ENV_ID, goals=GOALS, n_meta_iter=2, random_state=0,
                                  **{**TINY, "features": "joint_frame"})
    info = loss.meta_info_["policy"]
    assert loss.n_inputs == 21 and info["features"] == "joint_frame"
    assert len(info["input_shift"]) == len(info["input_scale"]) == 21
    model = ML3("MlpPolicy", env, learned_loss=loss, n_steps=16, seed=0, device="cpu")
    model.learn(32)
    assert model.num_timesteps == 32
    with pytest.raises(ValueError, match="joint_frame"):
        ModelFreeProblem("ml3/PointmassGoal-v0", [[0.5, 0.5]], features="joint_frame")


def _reacher_benchmark():
    """``benchmarks/model_free_reacher.py`` as a module."""
    path = Path(__file__).parents[2] / "benchmarks" / "model_free_reacher.py"
    spec = importlib.util.spec_from_file_location("model_free_reacher", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_reacher_config_selection_runs_only_validation_goals(tmp_path, monkeypatch):
    bench = _reacher_benchmark()
    goals_run = []
    train_run = bench.train_run
    monkeypatch.setattr(bench, "train_run", lambda method, goal, *a, **k: (
        goals_run.append(np.asarray(goal)), train_run(method, goal, *a, **k))[1])
    result = bench.main(["--quick", "--seeds", "1", "--validation-goals", "1",
                         "--out", str(tmp_path), "--select", "default", "two-episode"])
    assert result["selected"] in ("default", "two-episode")
    assert set(result["configs"]) == {"default", "two-episode"}
    for item in result["configs"].values():  # 0, 500 and 1,000 steps of the quick budget
        assert len(item["distance_mean"]) == 3 and np.isfinite(item["score"])
    assert (tmp_path / "config_selection.json").exists()
    again = bench.main(["--quick", "--seeds", "1", "--validation-goals", "1",
                        "--out", str(tmp_path), "--select", "two-episode"])
    assert again["configs"]["default"] == result["configs"]["default"]  # kept, not rerun
    assert again["configs"]["default"]["steps"] == [0, 500, 1000]
    other = bench.main(["--quick", "--seeds", "1", "--validation-goals", "1",
                        "--eval-episodes", "2", "--out", str(tmp_path), "--select", "two-episode"])
    assert set(other["configs"]) == {"two-episode"}  # another protocol: earlier scores dropped
    heldout = bench.heldout_goals()
    assert len(goals_run) == 4 and not any(np.isclose(heldout, g).all(1).any()
                                           for g in goals_run)


def test_reacher_config_rule_breaks_ties_by_speed_and_final_distance():
    """The lowest score wins unless others are within one paired standard error of it;
    among those, the fastest at 1,000 steps of the ones that end as close as the closest."""
    choose = _reacher_benchmark().choose_config
    steps = [0, 500, 1000, 1500]

    def entry(*runs):  # runs: (after 500, after 1,000, final) per goal and seed
        curves = np.array([[0.2, *run] for run in runs])
        return {"score": float(curves.mean()), "steps": steps, "run_curves": curves.tolist(),
                "distance_mean": curves.mean(0).tolist(),
                "final_distance": float(curves[:, -1].mean())}

    lowest = entry((0.10, 0.05, 0.010), (0.10, 0.05, 0.012), (0.10, 0.05, 0.011))
    fast = entry((0.12, 0.03, 0.011), (0.11, 0.04, 0.012), (0.12, 0.03, 0.010))
    drifting = entry((0.12, 0.03, 0.030), (0.06, 0.04, 0.032), (0.12, 0.03, 0.030))
    slow = entry((0.20, 0.10, 0.010), (0.20, 0.09, 0.012), (0.20, 0.10, 0.011))
    assert choose({"a": lowest, "b": fast}) == "b"  # a tie on the score: the faster
    assert choose({"a": lowest, "b": drifting}) == "a"  # a tie and fast, but ends further
    assert choose({"a": lowest, "c": slow}) == "a"  # clearly worse on the score
    scored_earlier = {"score": 0.2, "steps": steps, "distance_mean": [0.2, 0.0, 0.0, 0.0],
                      "final_distance": 0.0}  # no per-run curves: by its score alone
    assert choose({"a": lowest, "d": scored_earlier}) == "a"


def test_reacher_throughput_times_the_three_rollout_paths():
    """MuJoCo, the twin, and the twin scoring one population with the library's defaults."""
    bench = _reacher_benchmark()
    out = bench.rollout_throughput(bench.training_goals()[:4], repeats=1)
    assert set(out) == {"env, 10 episodes", "twin, 10 episodes",
                        "twin, ES population (with updates)"}
    assert all(np.isfinite(v) and v > 0 for v in out.values())


def test_reacher_configurations_pin_their_meta_iterations():
    """A configuration's own n_meta_iter is its default; others run the library's, and
    each reaches meta_train_policy_loss as a keyword it accepts."""
    bench = _reacher_benchmark()
    library = inspect.signature(meta_train_policy_loss).parameters
    for name, config in bench.CONFIGS.items():
        args = bench.resolve(bench.bench.parse_args(["--config", name]))
        assert args.meta_iter == config.get("n_meta_iter", library["n_meta_iter"].default)
        assert set(config) <= set(library), name
    assert bench.resolve(bench.bench.parse_args(["--config", "400-iter", "--meta-iter",
                                                 "7"])).meta_iter == 7


def test_another_configuration_writes_beside_the_default_run():
    bench = _reacher_benchmark()

    def folder(*flags):
        return bench.results_folder(bench.bench.parse_args(list(flags)))

    assert folder() == Path("results/model_free_reacher")
    assert folder("--config", "meta-seed-1") == Path("results/model_free_reacher_meta-seed-1")
    assert folder("--config", "meta-seed-1", "--out", "elsewhere") == Path("elsewhere")
    # --select scores configurations beside the default run, where their losses are kept
    assert folder("--select", "default", "log-std-1") == Path("results/model_free_reacher")
