"""Model-based ML3: the problem, meta-training through the engine, meta-test helpers."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from rl.dynamics import DynamicsEnsemble
from rl.envs import pointmass_step
from rl.meta.model_based import (
    FEATURE_SETS,
    LOSS_STRUCTURES,
    OUTCOME_FEATURE_SETS,
    ModelBasedProblem,
    default_feature_set,
    env_spec,
    goal_loss_structure,
    hand_written_feedback_loss,
    learned_rates,
    loss_features,
    meta_train_model_based_loss,
    n_loss_inputs,
    policy_trajectory,
    step_size_against_model,
    train_policy_with_loss,
    train_policy_with_model,
)
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.meta import MetaProblem

PM = "ml3/PointmassGoal-v0"


class TwinDynamics(torch.nn.Module):
    """The exact point-mass dynamics with the ensemble's call signature."""

    def forward(self, state, action, member=None):
        return pointmass_step(state, action)


def _small_dynamics(seed=0):
    return DynamicsEnsemble(4, 2, n_members=2, hidden_layer_sizes=(16,), random_state=seed)


def test_problem_follows_the_engine_protocol():
    dynamics = _small_dynamics()
    problem = ModelBasedProblem(PM, [[1.0, 0.5]], dynamics, policy_hidden_sizes=(8,),
                                random_state=0)
    assert isinstance(problem, MetaProblem) and not problem.vectorizable
    problem.collect_random(2)
    dynamics.fit(*problem.transitions(), n_epochs=1)
    task = problem.sample_tasks(1, np.random.default_rng(0))[0]
    params = {k: v.requires_grad_() for k, v in problem.init_params(task, 3).items()}
    n_before = len(problem.transitions()[0])
    inputs = problem.loss_inputs(params, task)
    horizon = env_spec(PM).horizon
    assert sum(t.shape[-1] for t in inputs) == n_loss_inputs(env_spec(PM))
    assert all(len(t) == horizon for t in inputs)
    assert len(problem.transitions()[0]) == n_before + horizon  # the rollout became model data
    # goal-frame rows (distance, velocity, action): only the actions depend on the policy
    assert problem.features == "goal_frame" and len(inputs) == 3
    assert inputs[2].requires_grad and not inputs[0].requires_grad and not inputs[1].requires_grad
    value = problem.task_loss(params, task)
    grads = torch.autograd.grad(value, list(params.values()))
    assert value.ndim == 0 and value > 0
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _rotate(x, angle):
    c, s = np.cos(angle), np.sin(angle)
    return x @ torch.tensor([[c, s], [-s, c]], dtype=x.dtype)


def test_goal_frame_features_do_not_change_when_the_problem_is_rotated():
    spec = env_spec(PM)
    gen = torch.Generator().manual_seed(0)
    states, actions = torch.randn(7, 4, generator=gen), torch.randn(7, 2, generator=gen)
    goal = torch.tensor([0.9, -0.4])
    angle = 2.5  # takes this right-half-plane goal to the left half-plane
    rotated_states = torch.cat([_rotate(states[:, :2], angle), _rotate(states[:, 2:], angle)], 1)
    rotated_goal = _rotate(goal[None], angle)[0]
    assert rotated_goal[0] < 0
    before = torch.cat(loss_features(spec, states, actions, goal, "goal_frame"), 1)
    after = torch.cat(loss_features(spec, rotated_states, _rotate(actions, angle),
                                    rotated_goal, "goal_frame"), 1)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)
    # the absolute feature set does change
    full = torch.cat(loss_features(spec, states, actions, goal, "full"), 1)
    assert not torch.allclose(full, torch.cat(loss_features(
        spec, rotated_states, _rotate(actions, angle), rotated_goal, "full"), 1), atol=1e-2)
    for features in set(FEATURE_SETS) - {"joint_frame", *OUTCOME_FEATURE_SETS}:  # no arm
        rows = loss_features(spec, states, actions, goal, features)
        assert sum(t.shape[-1] for t in rows) == n_loss_inputs(spec, features)
    with pytest.raises(ValueError, match="velocity"):
        n_loss_inputs(env_spec("ml3/ReacherGoal-v0"), "goal_frame")


def test_meta_training_runs_the_mbrl_loop():
    dynamics = _small_dynamics()
    loss = meta_train_model_based_loss(
        PM, [[1.0, 0.0], [0.5, 0.8]], n_meta_iter=6, inner_steps=3, tasks_per_iter=1,
        policy_hidden_sizes=(8,), loss_hidden=(8,), dynamics=dynamics, n_random_episodes=2,
        initial_epochs=2, refit_every=2, refit_epochs=1, random_state=0, verbose=0)
    assert isinstance(loss, LearnedLoss) and loss.n_inputs == n_loss_inputs(env_spec(PM))
    assert loss.meta_history_.shape == (6,) and np.isfinite(loss.meta_history_).all()
    assert loss.meta_info_["policy"]["env_id"] == PM
    assert loss.meta_info_["policy"]["loss_structure"] == "free"  # the default
    assert loss.meta_info_["problem"]["type"] == "model_based_rl"
    # 2 random episodes, 6 inner rollouts, and 2 refits adding exploratory rollouts
    assert dynamics.n_transitions_ > (2 + 6) * env_spec(PM).horizon
    # the task loss differentiates through the model but leaves it to its own fits
    assert not any(p.requires_grad or p.grad is not None for p in dynamics.parameters())
    untouched = LearnedLoss(kind="features", n_inputs=loss.n_inputs, hidden_layer_sizes=(8,),
                            learned_lr=True, random_state=loss.random_state)
    changed = {name for (name, a), b in
               zip(loss.network_.named_parameters(), untouched.parameters(), strict=True)
               if not torch.equal(a, b)}
    # meta-gradients reached phi: the loss and the learning-rate head it outputs
    assert any(name.startswith("loss.") for name in changed)
    assert {"rate.2.weight", "rate.2.bias"} <= changed
    goals = np.array([[-1.0, 0.3], [0.7, -0.7]])
    params, _ = train_policy_with_loss(loss, PM, goals, 2, random_state=0)
    rates = learned_rates(loss, params, PM, goals)
    assert rates.shape == (2,) and (rates > 0).all() and not np.allclose(rates, 1.0)
    assert learned_rates(loss, {k: v[0] for k, v in params.items()}, PM, goals[0])[0] == \
        pytest.approx(rates[0])


@pytest.mark.parametrize("env_id", [PM, "ml3/ReacherGoal-v0"])
def test_quadratic_structure_reads_exactly_the_action_columns(env_id):
    """The controller's target must see every column but those that depend on the action."""
    spec = env_spec(env_id)
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(9, spec.state_dim, generator=gen, dtype=torch.float64)
    actions = torch.randn(9, spec.action_dim, generator=gen, dtype=torch.float64)
    goal = torch.tensor([0.1, -0.1], dtype=torch.float64)
    final = torch.randn(spec.state_dim, generator=gen, dtype=torch.float64)
    not_defined = {"joint_frame", *OUTCOME_FEATURE_SETS} if env_id == PM else {"goal_frame"}
    for features in set(FEATURE_SETS) - not_defined:
        columns = goal_loss_structure(spec, features, "quadratic")
        rows = torch.cat(loss_features(spec, states, actions, goal, features, final), 1)
        moved = torch.cat(loss_features(spec, states, actions + 0.5, goal, features, final), 1)
        depends = [i for i in range(rows.shape[1]) if not torch.allclose(rows[:, i], moved[:, i])]
        assert columns["action_columns"] == depends, features
        assert sorted(columns["action_columns"] + columns["state_columns"]) == \
            list(range(rows.shape[1]))
        assert goal_loss_structure(spec, features, "homogeneous") == columns
        assert goal_loss_structure(spec, features, "free") is None
        if features not in OUTCOME_FEATURE_SETS:
            with pytest.raises(ValueError, match="where the trajectory ended"):
                goal_loss_structure(spec, features, "feedback")
            continue
        feedback = goal_loss_structure(spec, features, "feedback")
        assert feedback["action_columns"] == columns["action_columns"]
        # the error is J(q_T)^T d_T in the row's frame: the columns that move with the end
        ended = torch.cat(loss_features(spec, states, actions, goal, features, final + 0.3), 1)
        moves = [i for i in range(rows.shape[1]) if not torch.allclose(rows[:, i], ended[:, i])]
        assert set(feedback["error_columns"]) < set(moves)
        assert sorted(sum(feedback.values(), [])) == list(range(rows.shape[1]))
    # by default free on the point mass, a feedback gain on the arm's outcome
    assert goal_loss_structure(spec, "auto") == (
        None if env_id == PM else goal_loss_structure(spec, "joint_frame_outcome", "feedback"))
    assert set(LOSS_STRUCTURES) == {"free", "quadratic", "homogeneous", "feedback"}
    with pytest.raises(ValueError, match="loss_structure must be"):
        goal_loss_structure(spec, "auto", "advantage")


@pytest.mark.parametrize("structure,bias", [("quadratic", True), ("homogeneous", False)])
def test_controller_loss_meta_trains_saves_and_trains_policies(tmp_path, structure, bias):
    loss = meta_train_model_based_loss(
        PM, [[1.0, 0.0], [0.5, 0.8]], n_meta_iter=4, inner_steps=2, tasks_per_iter=1,
        policy_hidden_sizes=(8,), loss_hidden=(8,), dynamics=_small_dynamics(),
        n_random_episodes=2, initial_epochs=2, loss_structure=structure, random_state=0,
        verbose=0)
    assert loss.structure == goal_loss_structure(env_spec(PM), "goal_frame", "quadratic")
    assert loss.bias is bias and loss.meta_info_["policy"]["loss_structure"] == structure
    if not bias:  # bias-free ReLU layers: t(c x) = c t(x) for c > 0
        x = torch.randn(6, len(loss.structure["state_columns"]),
                        generator=torch.Generator().manual_seed(0))
        target = loss.network_.loss.target
        torch.testing.assert_close(target(2.5 * x), 2.5 * target(x))
    untouched = LearnedLoss(**loss.get_config(), random_state=loss.random_state)
    assert not torch.equal(loss.network_.loss.target[0].weight,
                           untouched.network_.loss.target[0].weight)  # phi was meta-trained
    loaded = LearnedLoss.load(loss.save(tmp_path / "controller.ml3"))
    goal = [-1.0, 0.3]
    _, before = train_policy_with_loss(loss, PM, goal, 3, random_state=0)
    _, after = train_policy_with_loss(loaded, PM, goal, 3, random_state=0)
    np.testing.assert_array_equal(before, after)
    assert len(set(np.round(after, 6))) > 1  # the policy moved


def test_reacher_default_is_a_learned_feedback_gain_on_the_outcome(tmp_path):
    reacher = "ml3/ReacherGoal-v0"
    spec = env_spec(reacher)
    assert default_feature_set(spec) == "joint_frame_outcome" and n_loss_inputs(spec) == 10
    loss = meta_train_model_based_loss(
        reacher, [[0.15, 0.05]], n_meta_iter=2, inner_steps=2, tasks_per_iter=1,
        policy_hidden_sizes=(8,), loss_hidden=(8,), dynamics=DynamicsEnsemble(
            spec.state_dim, spec.action_dim, n_members=2, hidden_layer_sizes=(16,),
            random_state=0),
        n_random_episodes=2, initial_epochs=2, random_state=0, verbose=0)
    assert loss.structure == goal_loss_structure(spec, "joint_frame_outcome", "feedback")
    info = loss.meta_info_["policy"]
    assert (info["features"], info["loss_structure"]) == ("joint_frame_outcome", "feedback")
    loaded = LearnedLoss.load(loss.save(tmp_path / "feedback.ml3"))
    _, before = train_policy_with_loss(loss, reacher, [-0.1, 0.1], 2, random_state=0)
    _, after = train_policy_with_loss(loaded, reacher, [-0.1, 0.1], 2, random_state=0)
    np.testing.assert_array_equal(before, after)
    # the point mass keeps the free goal-frame loss
    assert goal_loss_structure(env_spec(PM), "auto", "auto") is None


def test_hand_written_feedback_loss_is_the_jacobian_transpose_step():
    """Identity gain: the action gradient is minus J(q_T)^T d_T, and it reaches a near goal."""
    reacher = "ml3/ReacherGoal-v0"
    spec = env_spec(reacher)
    loss = hand_written_feedback_loss(reacher)
    rows = torch.randn(5, n_loss_inputs(spec), generator=torch.Generator().manual_seed(0))
    columns = loss.structure
    actions = rows[:, columns["action_columns"]].clone().requires_grad_(True)
    rows = rows.index_put((torch.arange(5)[:, None], torch.tensor(columns["action_columns"])),
                          actions)
    loss.per_sample(rows).sum().backward()
    torch.testing.assert_close(actions.grad, -rows[:, columns["error_columns"]].detach())
    with pytest.raises(ValueError, match="pass lr"):
        train_policy_with_loss(loss, reacher, [0.15, 0.05], 1)
    _, distances = train_policy_with_loss(loss, reacher, [0.15, 0.05], 10, lr=1.0,
                                          eval_every=10, random_state=0)
    assert distances[-1] < 0.2 * distances[0]
    with pytest.raises(ValueError, match="where the trajectory ended"):
        hand_written_feedback_loss(PM)


def test_learned_rate_scales_the_policy_step():
    """With learned_lr the update is lr * alpha * grad of the loss: alpha acts as a step size."""
    spec = env_spec(PM)
    loss = LearnedLoss(kind="features", n_inputs=n_loss_inputs(spec), hidden_layer_sizes=(8,),
                       learned_lr=True, random_state=0)
    loss.meta_info_["inner_lr"] = 0.05
    plain = LearnedLoss(kind="features", n_inputs=n_loss_inputs(spec), hidden_layer_sizes=(8,),
                        random_state=0)
    plain.meta_info_["inner_lr"] = 0.05
    assert learned_rates(loss, train_policy_with_loss(loss, PM, [0.5, 0.5], 0)[0], PM,
                         [0.5, 0.5])[0] == pytest.approx(1.0)  # untrained head: alpha = 1
    p_rate, _ = train_policy_with_loss(loss, PM, [0.5, 0.5], 1, policy_hidden_sizes=(8,))
    p_plain, _ = train_policy_with_loss(plain, PM, [0.5, 0.5], 1, policy_hidden_sizes=(8,))
    for k in p_rate:  # same loss network, alpha = 1: identical first step
        torch.testing.assert_close(p_rate[k], p_plain[k])
    with torch.no_grad():
        loss.network_.rate[-1].bias.fill_(np.log(3.0))
    p0, _ = train_policy_with_loss(loss, PM, [0.5, 0.5], 0, policy_hidden_sizes=(8,))
    p_fast, _ = train_policy_with_loss(loss, PM, [0.5, 0.5], 1, policy_hidden_sizes=(8,))
    step_fast = torch.cat([(p_fast[k] - p0[k]).flatten() for k in p0])
    step_plain = torch.cat([(p_plain[k] - p0[k]).flatten() for k in p0])
    assert step_plain.norm() > 1e-3
    alpha = learned_rates(loss, p0, PM, [0.5, 0.5], policy_hidden_sizes=(8,))[0]
    assert 2.5 < alpha < 3.0  # exp of the softly bounded log-rate
    torch.testing.assert_close(step_fast, float(alpha) * step_plain, rtol=1e-3, atol=1e-6)


def test_step_size_against_model_measures_the_loss_update_with_its_learned_rate():
    """The diagnostic sees the update meta-test takes: alpha x the loss's gradient."""
    spec = env_spec(PM)
    loss = LearnedLoss(kind="features", n_inputs=n_loss_inputs(spec), hidden_layer_sizes=(8,),
                       learned_lr=True, random_state=0)
    loss.meta_info_["inner_lr"] = 0.05
    goals = [[0.5, 0.5], [-0.6, 0.2]]
    plain = step_size_against_model(loss, TwinDynamics(), PM, goals, 1,
                                    policy_hidden_sizes=(8,), random_state=3)
    with torch.no_grad():
        loss.network_.rate[-1].bias.fill_(np.log(3.0))
    fast = step_size_against_model(loss, TwinDynamics(), PM, goals, 1,
                                   policy_hidden_sizes=(8,), random_state=3)
    p0, _ = train_policy_with_loss(loss, PM, goals, 0, policy_hidden_sizes=(8,), random_state=3)
    alphas = learned_rates(loss, p0, PM, goals, policy_hidden_sizes=(8,))
    assert plain["n_points"] == fast["n_points"] == 1
    assert -1 <= plain["cosine"]["mean"] <= 1 and plain["cosine"]["mean"] != 0
    assert fast["cosine"]["mean"] == pytest.approx(plain["cosine"]["mean"], abs=1e-4)
    assert fast["norm_ratio"]["mean"] / plain["norm_ratio"]["mean"] == pytest.approx(
        float(alphas.mean()), rel=1e-2)
    assert plain["lr"] == 0.05 and plain["optimizer"] == "sgd"


def test_task_loss_through_the_exact_model_reaches_a_left_goal():
    goal = [-1.0, 0.3]
    _, dist = train_policy_with_model(TwinDynamics(), PM, goal, 40, lr=0.1,
                                      policy_hidden_sizes=(16,), eval_every=10, random_state=0)
    assert dist.shape == (5,)
    assert dist[-1] < 0.5 * dist[0]


def test_goals_are_trained_together_but_independently():
    goals = np.array([[-1.0, 0.3], [0.7, -0.7]])
    _, both = train_policy_with_model(TwinDynamics(), PM, goals, 5, lr=0.05,
                                      policy_hidden_sizes=(8,), random_state=1)
    _, first = train_policy_with_model(TwinDynamics(), PM, goals[0], 5, lr=0.05,
                                       policy_hidden_sizes=(8,), random_state=1)
    assert both.shape == (2, 6)
    np.testing.assert_allclose(both[0], first, rtol=1e-5)


def test_train_policy_with_loss_uses_the_loss_and_returns_a_trajectory():
    loss = LearnedLoss(kind="features", n_inputs=n_loss_inputs(env_spec(PM)),
                       hidden_layer_sizes=(8,), random_state=0)
    params, dist = train_policy_with_loss(loss, PM, [0.0, -1.0], 3, lr=0.5,
                                          policy_hidden_sizes=(8,), random_state=0)
    assert dist.shape == (4,) and np.isfinite(dist).all()
    assert len(set(np.round(dist, 6))) > 1  # the policy moved
    path = policy_trajectory(params, PM, [0.0, -1.0], policy_hidden_sizes=(8,))
    assert path.shape == (env_spec(PM).horizon + 1, 2)
    np.testing.assert_allclose(np.linalg.norm(path[-1] - [0.0, -1.0]), dist[-1], rtol=1e-4)
    # a loss on the absolute feature set is recognised by its width
    full = LearnedLoss(kind="features", n_inputs=n_loss_inputs(env_spec(PM), "full"),
                       hidden_layer_sizes=(8,), random_state=0)
    _, dist_full = train_policy_with_loss(full, PM, [0.0, -1.0], 2, lr=0.5,
                                          policy_hidden_sizes=(8,), random_state=0)
    assert dist_full.shape == (3,) and np.isfinite(dist_full).all()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="supports"):
        env_spec("CartPole-v1")
    with pytest.raises(ValueError, match="goals must have shape"):
        ModelBasedProblem(PM, [1.0, 0.0], _small_dynamics())
    with pytest.raises(ValueError, match="state_dim 4"):
        ModelBasedProblem(PM, [[1.0, 0.0]], DynamicsEnsemble(8, 2))
    with pytest.raises(ValueError, match="goal"):
        train_policy_with_model(TwinDynamics(), PM, [5.0, 0.0], 1)
    wrong = LearnedLoss(kind="features", n_inputs=3)
    with pytest.raises(ValueError, match="reads 3 features"):
        train_policy_with_loss(wrong, PM, [1.0, 0.0], 1, lr=0.1)
    fresh = LearnedLoss(kind="features", n_inputs=n_loss_inputs(env_spec(PM)))
    with pytest.raises(ValueError, match="inner_lr"):
        train_policy_with_loss(fresh, PM, [1.0, 0.0], 1)


def test_joint_frame_features_point_the_arm_towards_the_goal():
    """J(q)^T d is a joint direction that moves the fingertip towards the goal."""
    from rl.meta._arm import arm_jacobian_t

    spec = env_spec("ml3/ReacherGoal-v0")
    assert n_loss_inputs(spec, "joint_frame") == 6
    gen = torch.Generator().manual_seed(0)
    q = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 6 - 3
    goal = torch.tensor([0.05, -0.12], dtype=torch.float64)

    def tip(q):
        l1, l2 = spec.arm_links
        return torch.stack([l1 * torch.cos(q[:, 0]) + l2 * torch.cos(q.sum(1)),
                            l1 * torch.sin(q[:, 0]) + l2 * torch.sin(q.sum(1))], -1)

    states = torch.cat([torch.cos(q), torch.sin(q), torch.zeros(50, 2), tip(q)], -1)
    offset = goal - tip(q)
    direction = arm_jacobian_t(states[:, 0:2], states[:, 2:4], offset, spec.arm_links)
    # J^T d is minus the gradient of |tip - goal|^2 / 2 in joint space
    q_req = q.clone().requires_grad_(True)
    ((tip(q_req) - goal) ** 2).sum().div(2).backward()
    torch.testing.assert_close(direction, -q_req.grad)
    actions = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    rows = loss_features(spec, states, actions, goal, "joint_frame")
    assert [r.shape[-1] for r in rows] == [1, 1, 2, 2]
    u = direction / direction.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(rows[3][:, 0], (actions * u).sum(-1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="2-link arm"):
        loss_features(env_spec(PM), states[:, :4], actions, goal, "joint_frame")


def test_outcome_features_see_where_the_trajectory_ended_in_every_row():
    """The outcome columns: time left, |d_T| and J(q_T)^T d_T in each row's frame, unchanged
    by a base rotation."""
    from rl.meta._arm import arm_jacobian_t, in_frame

    spec = env_spec("ml3/ReacherGoal-v0")
    gen = torch.Generator().manual_seed(1)
    q = torch.rand(8, 2, generator=gen, dtype=torch.float64) * 6 - 3
    qd = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    actions = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    goal = torch.tensor([0.12, 0.05], dtype=torch.float64)
    l1, l2 = spec.arm_links

    def arm_states(q):
        tip = torch.stack([l1 * torch.cos(q[:, 0]) + l2 * torch.cos(q.sum(1)),
                           l1 * torch.sin(q[:, 0]) + l2 * torch.sin(q.sum(1))], -1)
        return torch.cat([torch.cos(q), torch.sin(q), qd, tip], -1)

    def rows(q, goal):
        trajectory = arm_states(q)
        return loss_features(spec, trajectory[:-1], actions, goal, "joint_frame_outcome",
                             final_state=trajectory[-1])

    features = rows(q, goal)
    assert [r.shape[-1] for r in features] == [1, 1, 2, 1, 1, 2, 2]
    assert sum(r.shape[-1] for r in features) == n_loss_inputs(spec, "joint_frame_outcome")
    joint = loss_features(spec, arm_states(q)[:-1], actions, goal, "joint_frame")
    for before, now in zip(joint, features[:3] + features[6:], strict=True):
        torch.testing.assert_close(before, now)  # the joint-frame row around the new columns
    final = arm_states(q)[-1:]
    miss = goal - final[:, 6:8]
    time_left = torch.tensor([7, 6, 5, 4, 3, 2, 1], dtype=torch.float64) / 7
    torch.testing.assert_close(features[3][:, 0], time_left)
    torch.testing.assert_close(features[4][:, 0], miss.norm(dim=-1).expand(7), atol=1e-5,
                               rtol=1e-5)
    direction = arm_jacobian_t(arm_states(q)[:-1, 0:2], arm_states(q)[:-1, 2:4],
                               goal - arm_states(q)[:-1, 6:8])
    u = direction / direction.norm(dim=-1, keepdim=True)
    final_direction = arm_jacobian_t(final[:, 0:2], final[:, 2:4], miss).expand(7, 2)
    torch.testing.assert_close(features[5], in_frame(u, final_direction), atol=1e-5, rtol=1e-5)
    # rotating the arm's base and the goal together changes nothing
    angle = 2.0
    turned = q + torch.tensor([angle, 0.0], dtype=torch.float64)
    turned_goal = _rotate(goal[None], angle)[0]
    for before, after in zip(features, rows(turned, turned_goal), strict=True):
        torch.testing.assert_close(before, after)
    with pytest.raises(ValueError, match="final_state"):
        loss_features(spec, arm_states(q)[:-1], actions, goal, "joint_frame_outcome")


def test_benchmark_variants_write_beside_the_default_run():
    """A variant run without --out must not replace the default run's results."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "model_based.py"
    spec = importlib.util.spec_from_file_location("model_based_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def out(*flags):
        return bench.default_out(bench.bench.parse_args(["--env", "reacher", *flags]))

    assert out() == Path("results/model_based_reacher")
    assert out("--loss-structure", "quadratic") == \
        Path("results/model_based_reacher_loss-structure-quadratic")
    assert out("--full", "--no-learned-lr") == \
        Path("results/model_based_reacher_no-learned-lr_full")
    assert len({out(), out("--quick"), out("--meta-iter", "100"), out("--unroll", "5"),
                out("--inner-lr", "0.01"), out("--features", "relative")}) == 6
