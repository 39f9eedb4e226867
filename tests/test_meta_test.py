"""The one meta-test loop (sklearn_ml3.meta.meta_test), the baseline rule and the step-size
diagnostic."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn_ml3 import LearnedLoss, SineTasks, meta_train
from sklearn_ml3.experiments.sine import heldout_curves
from sklearn_ml3.meta import (
    MetaTrainOnly,
    TaskObjective,
    meta_test,
    step_size_diagnostic,
    tune_lr,
    untrained_control,
)
from sklearn_ml3.meta.baselines import mse_loss
from sklearn_ml3.shaping import SineFrequencyTasks, sine_frequency_problem

from ._helpers import ForbiddenExtra

#: Curves recorded with the meta-test loops this API replaced, on fixed seeds.
OLD = json.loads((Path(__file__).parent / "data" / "old_meta_test_curves.json").read_text())


def frequency_distance(params, task):
    return (params["omega"] - task.extra["nu"]).abs()


def frequency_loss():
    return LearnedLoss(kind="regression", n_extra_inputs=1, activation="elu",
                       hidden_layer_sizes=(10, 10), bias=True, output="none", random_state=0)


def test_reproduces_the_sine_experiment_loop():
    """The old loop ran one task from init seed 3, with and without target scaling."""
    from sklearn_ml3.experiments.sine import OPTIMIZEE, _training_task, heldout_mse

    sampler = SineTasks(amplitude=(0.2, 5.0), phase=(-np.pi, np.pi), x_range=(-5.0, 5.0),
                        n_points=100, n_val_points=1000)
    rng = np.random.default_rng([0, 2024])  # the old loop's task draw
    task = [sampler.sample(rng) for _ in range(2)][1]
    learned = LearnedLoss(kind="regression", hidden_layer_sizes=(8, 8), output="softplus",
                          random_state=0)
    for loss, standardize, old in ((mse_loss, False, "sine_mse"),
                                   (learned, True, "sine_learned_standardized")):
        result = meta_test(OPTIMIZEE, loss, [_training_task(task, standardize)], n_updates=20,
                           metric=heldout_mse, init_seeds=[[3]], lr=1e-2, optimizer="sgd")
        np.testing.assert_allclose(result.curves[0, 0], OLD[old], rtol=1e-6)
    np.testing.assert_array_equal(heldout_curves("squared_error", [task, task], 1e-2, 3,
                                                 init_seeds=[0, 1]),
                                  meta_test(OPTIMIZEE, mse_loss, [_training_task(task, False)] * 2,
                                            n_updates=3, metric=heldout_mse,
                                            init_seeds=[[0, 1]], lr=1e-2,
                                            optimizer="sgd").curves[0])


def test_reproduces_the_shaping_loop():
    problem = sine_frequency_problem(shaped=True)
    task = SineFrequencyTasks().task(2.0, np.random.default_rng(1))
    learned = meta_test(problem, frequency_loss(), [task], n_updates=6, lr=1.0,
                        optimizer="sgd", metric=frequency_distance, init_seeds=[[0]])
    np.testing.assert_allclose(learned.curves[0, 0], OLD["frequency_learned"], rtol=1e-6)
    adam = meta_test(problem, mse_loss, [task], n_updates=6, lr=0.3, optimizer="adam",
                     metric=frequency_distance, init_seeds=[[2]])
    np.testing.assert_allclose(adam.curves[0, 0], OLD["frequency_mse_adam"], rtol=1e-6)


def test_reproduces_the_rl_loops():
    from rl.dynamics import DynamicsEnsemble
    from rl.meta import model_based as mb
    from rl.meta.shaping import (
        MountainCarShapingProblem,
        train_twin_policy_on_task_loss,
        train_twin_policy_with_loss,
    )

    mc = MountainCarShapingProblem([0.5], policy_hidden_sizes=(8,), horizon=40)
    task = mc.make_task(0.5)
    loss = LearnedLoss(kind="features", n_inputs=mc.n_loss_inputs, hidden_layer_sizes=(8,),
                       random_state=0)
    np.testing.assert_allclose(train_twin_policy_with_loss(mc, loss, task, n_updates=4, lr=0.3,
                                                           seed=5)[1],
                               OLD["mountain_car_learned"], rtol=1e-6)
    np.testing.assert_allclose(train_twin_policy_on_task_loss(mc, task, n_updates=4, lr=0.05,
                                                              seed=5)[1],
                               OLD["mountain_car_task_loss"], rtol=1e-6)
    pm = "ml3/PointmassGoal-v0"
    spec = mb.env_spec(pm)
    loss = LearnedLoss(kind="features", n_inputs=mb.n_loss_inputs(spec, "goal_frame"),
                       hidden_layer_sizes=(8,), output="softplus", learned_lr=True,
                       random_state=0)
    goals = [[0.5, 0.5], [-0.6, 0.2]]
    _, dist = mb.train_policy_with_loss(loss, pm, goals, 4, lr=0.5, policy_hidden_sizes=(8,),
                                        eval_every=2, random_state=7)
    np.testing.assert_allclose(dist, OLD["pointmass_learned"], rtol=1e-5)
    dynamics = DynamicsEnsemble(spec.state_dim, spec.action_dim, random_state=0)
    _, dist = mb.train_policy_with_model(dynamics, pm, goals, 3, lr=0.1, policy_hidden_sizes=(8,),
                                         random_state=7)
    np.testing.assert_allclose(dist, OLD["pointmass_model"], rtol=1e-5)


def test_meta_test_never_reads_extra():
    """Tasks whose extra raises on any read run through; the metric sees the real task."""
    problem = sine_frequency_problem(shaped=True)
    loss = frequency_loss()
    meta_train(loss, problem, n_meta_iter=3, inner_steps=3, tasks_per_iter=2, inner_lr=1.0,
               random_state=0, verbose=0)
    tasks = [SineFrequencyTasks().task(nu, np.random.default_rng(1)) for nu in (2.0, -1.0)]
    forbidden = [t._replace(extra=ForbiddenExtra()) for t in tasks]
    blind = meta_test(problem, loss, forbidden, n_updates=5,
                      metric=lambda p, t: p["omega"], init_seeds=[[0, 1]])
    seen = meta_test(problem, loss, tasks, n_updates=5, metric=lambda p, t: p["omega"],
                     init_seeds=[[0, 1]])
    assert blind.curves.shape == (1, 2, 6)
    np.testing.assert_array_equal(blind.curves, seen.curves)
    # the settings the loss was meta-trained with are the default
    assert (seen.optimizer, seen.lr) == ("sgd", 1.0)


def test_training_that_reads_extra_fails_loudly():
    problem = sine_frequency_problem(shaped=True)
    task = SineFrequencyTasks().task(2.0, np.random.default_rng(1))
    cheat = TaskObjective(lambda p, t: (p["omega"] - t.extra["nu"]) ** 2)
    with pytest.raises(RuntimeError, match="meta-train-only"):
        meta_test(problem, cheat, [task], n_updates=1, lr=0.1, optimizer="sgd",
                  metric=frequency_distance)
    with pytest.raises(RuntimeError, match="meta-train-only"):
        len(MetaTrainOnly())


def test_a_loss_without_a_record_needs_lr_and_optimizer():
    problem = sine_frequency_problem(shaped=False)
    task = SineFrequencyTasks().task(2.0, np.random.default_rng(1))
    with pytest.raises(ValueError, match="optimizer= and lr="):
        meta_test(problem, mse_loss, [task], n_updates=1, metric=frequency_distance)
    with pytest.raises(ValueError, match="lr"):
        meta_test(problem, mse_loss, [task], n_updates=1, lr=0.0, optimizer="sgd",
                  metric=frequency_distance)
    with pytest.raises(ValueError, match="init_seeds"):
        meta_test(problem, mse_loss, [task], n_updates=1, lr=0.1, optimizer="sgd",
                  metric=frequency_distance, init_seeds=[[0, 1]])


def test_evaluation_schedule_includes_the_last_update():
    problem = sine_frequency_problem(shaped=False)
    task = SineFrequencyTasks().task(2.0, np.random.default_rng(1))
    every = meta_test(problem, mse_loss, [task], n_updates=7, lr=0.3, optimizer="sgd",
                      metric=frequency_distance, init_seeds=[[0], [1]])
    sparse = meta_test(problem, mse_loss, [task], n_updates=7, lr=0.3, optimizer="sgd",
                       metric=frequency_distance, init_seeds=[[0], [1]], eval_every=3)
    assert sparse.steps.tolist() == [0, 3, 6, 7]
    np.testing.assert_array_equal(sparse.curves, every.curves[:, :, [0, 3, 6, 7]])
    assert every.per_run().shape == (2, 8)


# ------------------------------------------------------------------ baseline rule
def bowl(best):
    """A validation score with its minimum at ``best`` (log-quadratic)."""
    return lambda lr: (math.log10(lr) - math.log10(best)) ** 2


def test_grid_whose_best_is_at_the_top_edge_is_extended():
    calls = []

    def score(lr):
        calls.append(lr)
        return bowl(0.3)(lr)

    record = tune_lr(score, [1e-3, 3e-3, 1e-2, 3e-2], name="mse", selected_on="validation")
    assert record["best_lr"] == 0.3
    assert record["lr_grid"] == [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
    assert record["edge_reason"] is None
    assert sorted(calls) == record["lr_grid"]  # each lr scored once
    assert set(record) >= {"name", "lr_grid", "best_lr", "selected_on", "scores",
                           "edge_reason"}


def test_grid_is_extended_downwards_and_for_higher_is_better():
    record = tune_lr(lambda lr: -bowl(1e-4)(lr), [1e-2, 3e-2, 0.1], name="acc",
                     selected_on="validation", lower_is_better=False)
    assert record["best_lr"] == 1e-4 and record["edge_reason"] is None
    assert record["lr_grid"][0] == 3e-5


def test_edge_kept_when_the_next_value_diverges():
    record = tune_lr(lambda lr: math.inf if lr > 0.1 else -lr, [0.01, 0.03, 0.1],
                     name="mse", selected_on="validation")
    assert record["best_lr"] == 0.1
    assert record["edge_reason"] == "the next value, lr 0.3, diverged"
    assert record["scores"]["0.3"] == math.inf


def test_edge_reason_after_the_extension_budget():
    record = tune_lr(lambda lr: -lr, [1.0], name="mse", selected_on="validation",
                     max_extensions=2)
    assert record["best_lr"] == 10.0 and "after 2 extensions" in record["edge_reason"]
    with pytest.raises(ValueError, match="diverged"):
        tune_lr(lambda lr: math.nan, [0.1, 0.3], name="mse", selected_on="validation",
                max_extensions=1)


# ----------------------------------------------------------- step-size diagnostic
def test_step_size_diagnostic_finds_a_scaled_loss():
    """A loss that is exactly 7 x MSE has cosine 1 with MSE and norm ratio 7."""
    problem = sine_frequency_problem(shaped=False)
    tasks = [SineFrequencyTasks().task(nu, np.random.default_rng(3)) for nu in (1.0, 2.5)]

    def scaled(y_pred, y, *rest):
        return 7.0 * mse_loss(y_pred, y)

    report = step_size_diagnostic(problem, scaled, mse_loss, tasks, n_updates=3,
                                  init_seeds=[[0, 1], [2, 3]], lr=0.05, optimizer="sgd")
    assert report["cosine"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert report["norm_ratio"]["mean"] == pytest.approx(7.0, rel=1e-4)
    assert report["control_lr_factor"] == pytest.approx(7.0, rel=1e-4)
    assert report["n_points"] == 12 and len(report["cosine"]["per_run"]) == 2
    opposite = step_size_diagnostic(problem, lambda *a: -mse_loss(*a), mse_loss, tasks,
                                    n_updates=1, init_seeds=[[0, 1]], lr=0.05,
                                    optimizer="sgd")
    assert opposite["cosine"]["mean"] == pytest.approx(-1.0, abs=1e-5)


def test_untrained_control_is_the_same_network_freshly_initialised():
    from sklearn_ml3 import LearnedLoss

    trained = LearnedLoss(kind="features", n_inputs=3, hidden_layer_sizes=(5,), random_state=4)
    trained.meta_info_.update(inner_optimizer="adam", inner_lr=1e-3)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # stands in for meta-training
    control = untrained_control(trained)
    assert control.get_config() == trained.get_config()
    assert control.meta_info_ == trained.meta_info_ and control.meta_info_ is not trained.meta_info_
    fresh = LearnedLoss(kind="features", n_inputs=3, hidden_layer_sizes=(5,), random_state=0)
    for a, b, c in zip(control.parameters(), fresh.parameters(), trained.parameters(),
                       strict=True):
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, c)
