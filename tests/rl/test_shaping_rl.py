"""Shaped policy losses: MountainCar intermediate goals and Reacher expert demonstrations."""

import numpy as np
import pytest
import torch

from rl.envs.mountain_car import mountain_car_step
from rl.meta.shaping import (
    GoalTask,
    MountainCarShapingProblem,
    ReacherExpertProblem,
    behaviour_cloning,
    evaluate_in_env,
    train_twin_policies,
    train_twin_policy_on_task_loss,
    train_twin_policy_with_loss,
)
from rl.meta.shaping_base import batch_init_seeds
from sklearn_ml3 import LearnedLoss, meta_train
from sklearn_ml3.meta import TaskObjective, meta_test, step_size_diagnostic
from tests._helpers import ForbiddenExtra


def features_loss(problem, seed=0):
    return LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs,
                       hidden_layer_sizes=(16,), random_state=seed)


@pytest.fixture(scope="module")
def reacher():
    # short horizon and few iLQR iterations keep the expert plans cheap
    return ReacherExpertProblem([[0.1, 0.1], [0.12, -0.05]], horizon=8, expert_iter=5,
                                policy_hidden_sizes=(8,))


def test_mountain_car_rollout_is_the_twin_dynamics():
    problem = MountainCarShapingProblem([0.45], horizon=15, policy_hidden_sizes=None)
    task = problem.make_task(0.45)
    params = problem.init_params(task, 0)
    states, actions = problem.rollout(params, task.goal)
    state = problem.start_state()
    for t in range(15):
        state = mountain_car_step(state, torch.tanh(params["u"][t]))
        torch.testing.assert_close(states[t + 1], state)
    assert actions.shape == (15, 1)


def test_mountain_car_task_loss_adds_the_intermediate_term():
    problem = MountainCarShapingProblem([0.45], horizon=20, gamma=2.0, policy_hidden_sizes=(4,))
    unshaped = MountainCarShapingProblem([0.45], horizon=20, shaped=False, policy_hidden_sizes=(4,))
    task = problem.sample_tasks(1, np.random.default_rng(0))[0]
    params = problem.init_params(task, 0)
    states, _ = problem.rollout(params, task.goal)
    visit = max(float(states[:, 0].min()) - problem.intermediate, 0.0)
    assert visit > 0  # a random policy does not swing to the left hill
    distance = unshaped.task_loss(params, task)
    assert float(distance) == pytest.approx(abs(float(states[-1, 0]) - 0.45), abs=1e-4)
    assert float(problem.task_loss(params, task)) == pytest.approx(
        float(distance + 2.0 * visit), rel=1e-5)


def test_timed_intermediate_goal_reads_one_step():
    problem = MountainCarShapingProblem([0.45], horizon=10, gamma=1.0, intermediate_step=4,
                                        policy_hidden_sizes=None)
    task = problem.sample_tasks(1, np.random.default_rng(0))[0]
    assert int(task.extra["intermediate_step"]) == 4
    params = problem.init_params(task, 0)
    states, _ = problem.rollout(params, task.goal)
    expected = abs(float(states[-1, 0]) - 0.45) + max(float(states[4, 0]) - problem.intermediate,
                                                       0.0)
    assert float(problem.task_loss(params, task)) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("policy_hidden_sizes", [None, (8,)])
def test_mountain_car_meta_test_never_reads_extra(policy_hidden_sizes):
    problem = MountainCarShapingProblem([0.4, 0.5], horizon=12,
                                        policy_hidden_sizes=policy_hidden_sizes)
    loss = features_loss(problem)
    meta_train(loss, problem, n_meta_iter=2, inner_steps=2, inner_optimizer="adam",
               inner_lr=0.1, random_state=0, verbose=0)
    task = problem.sample_tasks(1, np.random.default_rng(1))[0]
    assert "intermediate" in task.extra  # meta-training tasks carry it ...
    blind = task._replace(extra=ForbiddenExtra())  # ... meta-test must not need it
    params, curve = train_twin_policy_with_loss(problem, loss, blind, n_updates=3, lr=0.1,
                                                solver="adam")
    assert curve.shape == (4,) and np.all(np.isfinite(curve))
    _, curve_direct = train_twin_policy_on_task_loss(problem, blind, n_updates=2, lr=0.1)
    assert np.all(np.isfinite(curve_direct))
    result = evaluate_in_env(problem, params, float(task.goal[0]))
    # the gymnasium env and the twin agree on the final distance
    assert result["final_distance"] == pytest.approx(curve[-1], abs=1e-3)


def test_reacher_meta_test_never_reads_extra(reacher):
    loss = features_loss(reacher)
    meta_train(loss, reacher, n_meta_iter=2, inner_steps=2, inner_optimizer="adam",
               inner_lr=0.01, random_state=0, verbose=0)
    blind = reacher.make_task([-0.1, 0.08])._replace(extra=ForbiddenExtra())
    params, curve = train_twin_policy_with_loss(reacher, loss, blind, n_updates=2, lr=0.01,
                                                solver="adam")
    assert curve.shape == (3,) and np.all(np.isfinite(curve))
    result = evaluate_in_env(reacher, params, [-0.1, 0.08])
    assert set(result) == {"final_distance", "min_distance", "success"}


def test_reacher_tasks_hold_the_expert_and_cloning_fits_it(reacher):
    task = reacher.sample_tasks(1, np.random.default_rng(0))[0]
    assert task.extra["expert_states"].shape == (8, 4)
    assert task.extra["expert_actions"].shape == (8, 2)
    assert reacher.make_task([0.1, 0.0]).extra == {}  # meta-test tasks have no expert
    params = reacher.init_params(task, 0)
    before = float(reacher.cloning_error(params, task))
    fitted = behaviour_cloning(reacher, reacher.train_tasks, n_updates=100, lr=1e-2)
    assert float(reacher.cloning_error(fitted, task)) < 0.5 * before


def test_tiny_meta_training_lowers_the_cloning_task_loss(reacher):
    torch.manual_seed(0)
    loss = features_loss(reacher, seed=1)
    meta_train(loss, reacher, n_meta_iter=40, inner_steps=1, tasks_per_iter=2,
               inner_optimizer="sgd", inner_lr=1.0, meta_lr=1e-2, random_state=0, verbose=0)
    history = loss.meta_history_
    assert history[-10:].mean() < history[:10].mean()


@pytest.mark.parametrize("make", [
    lambda: MountainCarShapingProblem([[0.4, 0.5]]),
    lambda: MountainCarShapingProblem([0.9]),
    lambda: MountainCarShapingProblem([0.4], horizon=0),
    lambda: MountainCarShapingProblem([0.4], intermediate=-2.0),
    lambda: MountainCarShapingProblem([0.4], beta=0.0, gamma=0.0),
    lambda: MountainCarShapingProblem([0.4], gamma=-1.0),
    lambda: MountainCarShapingProblem([0.4], policy_hidden_sizes=(0,)),
    lambda: MountainCarShapingProblem([0.4], horizon=10, intermediate_step=11),
    lambda: MountainCarShapingProblem([0.4], loss_features="raw"),
    lambda: ReacherExpertProblem([[0.3, 0.0]], expert_iter=1),
    lambda: ReacherExpertProblem([0.1, 0.1], expert_iter=1),
    lambda: ReacherExpertProblem(np.zeros((0, 2)), expert_iter=1),
])
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_meta_test_rejects_bad_budget():
    problem = MountainCarShapingProblem([0.45], horizon=5, policy_hidden_sizes=None)
    task = GoalTask(torch.tensor([0.45]), {})
    loss = features_loss(problem)
    with pytest.raises(ValueError):
        train_twin_policy_with_loss(problem, loss, task, n_updates=-1, lr=0.1)
    with pytest.raises(ValueError):
        train_twin_policy_with_loss(problem, loss, task, n_updates=2, lr=0.0)
    with pytest.raises(ValueError):
        behaviour_cloning(ReacherExpertProblem([[0.1, 0.1]], horizon=3, expert_iter=1), [])


def test_mountain_car_relative_loss_inputs_are_goal_minus_position_and_velocity():
    problem = MountainCarShapingProblem([0.45], horizon=12, policy_hidden_sizes=None)
    absolute = MountainCarShapingProblem([0.45], horizon=12, policy_hidden_sizes=None,
                                         loss_features="absolute")
    task = problem.make_task(0.45)
    params = {k: v.requires_grad_() for k, v in problem.init_params(task, 3).items()}
    feats, actions = problem.loss_inputs(params, task)
    abs_feats, abs_actions = absolute.loss_inputs(params, task)
    assert problem.n_loss_inputs == feats.shape[1] + actions.shape[1] == 3
    assert absolute.n_loss_inputs == abs_feats.shape[1] + abs_actions.shape[1]
    states, _ = problem.rollout(params, task.goal)
    torch.testing.assert_close(feats[:, 0], 0.45 - states[:-1, 0].detach())
    torch.testing.assert_close(feats[:, 1], abs_feats[:, 1])
    grad, = torch.autograd.grad(actions.sum(), params["u"])
    assert grad.abs().sum() > 0


def test_meta_test_goals_go_through_the_env_validator(reacher):
    mc = MountainCarShapingProblem([0.5], horizon=5, policy_hidden_sizes=(4,))
    assert mc.make_task(0.45).goal.tolist() == [pytest.approx(0.45)]
    assert mc.make_task([0.45]).goal.shape == (1,)
    with pytest.raises(ValueError, match="must lie in"):
        mc.make_task(0.9)
    with pytest.raises(ValueError, match="within reach"):
        reacher.make_task([1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        reacher.make_task([0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="finite"):
        reacher.make_task([np.nan, 0.1])


@pytest.mark.parametrize("make", ["mountain_car", "reacher"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_batch_of_goals_trains_each_policy_as_it_would_be_trained_alone(make, optimizer,
                                                                           reacher):
    if make == "mountain_car":
        problem = MountainCarShapingProblem([0.45], horizon=12, policy_hidden_sizes=None)
        goals, lr = [0.3, 0.45, 0.5], (30.0 if optimizer == "sgd" else 0.01)
    else:
        problem = reacher
        goals, lr = [[0.1, 0.08], [0.12, -0.02], [0.05, 0.13]], (0.3 if optimizer == "sgd"
                                                                 else 0.01)
    tasks = [problem.make_task(g) for g in goals]
    loss = features_loss(problem)
    separate = {}
    for batched, alone in ((loss, loss), (TaskObjective(problem.summed_final_distance),
                                          TaskObjective(problem.final_distance))):
        together = meta_test(problem, batched, [problem.batch(tasks)], n_updates=3,
                             metric=problem.final_distance, init_seeds=[[7]], lr=lr,
                             optimizer=optimizer)
        one_by_one = meta_test(problem, alone, tasks, n_updates=3,
                               metric=problem.final_distance,
                               init_seeds=[batch_init_seeds(7, len(tasks))], lr=lr,
                               optimizer=optimizer)
        assert together.curves.shape == (1, 1, 4, 3)
        np.testing.assert_allclose(together.curves[0, 0].T, one_by_one.curves[0],
                                   rtol=0, atol=1e-4)
        assert np.ptp(together.curves[0, 0, -1]) > 0  # the goals really differ
        separate[batched] = one_by_one.curves[0]
    policies, distances = train_twin_policies(problem, loss, tasks, n_updates=3, lr=lr,
                                              solver=optimizer, seed=7)
    np.testing.assert_allclose(distances, separate[loss], rtol=0, atol=1e-4)
    with torch.no_grad():
        last = [float(problem.final_distance(p, t)) for p, t in zip(policies, tasks, strict=True)]
    np.testing.assert_allclose(last, distances[:, -1], rtol=0, atol=1e-5)


def test_batch_rejects_tasks_it_cannot_stack(reacher):
    with pytest.raises(ValueError, match="at least one"):
        reacher.batch([])
    with pytest.raises(ValueError, match="extra"):
        reacher.batch(reacher.sample_tasks(1, np.random.default_rng(0)))


def test_step_size_diagnostic_takes_the_task_loss_as_the_handwritten_loss():
    """Twice the task loss against the task loss: cosine 1, ratio 2, also for a batch."""
    problem = MountainCarShapingProblem([0.45], horizon=10, policy_hidden_sizes=None)
    tasks = [problem.make_task(g) for g in (0.3, 0.5)]
    task_loss = TaskObjective(problem.summed_final_distance)
    doubled = TaskObjective(lambda params, task: 2 * problem.summed_final_distance(params, task))
    for given, seeds in ((tasks, [[0, 1]]), ([problem.batch(tasks)], [[3]])):
        report = step_size_diagnostic(problem, doubled, task_loss, given, n_updates=2,
                                      init_seeds=seeds, lr=1.0, optimizer="sgd")
        assert report["cosine"]["mean"] == pytest.approx(1.0, abs=1e-5)
        assert report["control_lr_factor"] == pytest.approx(2.0, rel=1e-4)
