"""Shaping with meta-train-only information: the supervised convention and sine frequency."""

import numpy as np
import pytest
import torch

from sklearn_ml3 import LearnedLoss, MetaLossRegressor, Task
from sklearn_ml3.shaping import (
    SineFrequencyTasks,
    frequency_error,
    sine_frequency_problem,
)


def sine_loss(seed=0):
    return LearnedLoss(kind="regression", n_extra_inputs=1, activation="elu",
                       hidden_layer_sizes=(10, 10, 10), bias=True, output="none",
                       random_state=seed)


def test_sine_tasks_carry_true_frequency_only_in_extra():
    task = SineFrequencyTasks(n_points=32).task(2.5, np.random.default_rng(0))
    assert float(task.extra["nu"]) == 2.5
    torch.testing.assert_close(task.y_train, torch.sin(2.5 * task.X_train).ravel())


@pytest.mark.parametrize("kwargs", [{"frequency_range": (1, 1)}, {"x_range": (2, -2)},
                                    {"n_points": 0}])
def test_sine_tasks_reject_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SineFrequencyTasks(**kwargs)


def test_shaped_task_loss_is_the_frequency_distance():
    problem = sine_frequency_problem(shaped=True)  # beta=0, gamma=1
    task = SineFrequencyTasks().task(-1.5, np.random.default_rng(0))
    params = {"omega": torch.tensor(0.5)}
    problem.init_params(task, 0)  # builds the optimizee architecture
    assert float(problem.task_loss(params, task)) == pytest.approx(4.0)
    mixed = sine_frequency_problem(shaped=True, beta=2.0, gamma=3.0)
    mixed.init_params(task, 0)
    mse = torch.mean((torch.sin(0.5 * task.X_val).ravel() - task.y_val) ** 2)
    assert float(mixed.task_loss(params, task)) == pytest.approx(float(2 * mse + 3 * 4.0),
                                                                 rel=1e-5)


def test_shaped_meta_gradient_step_lowers_the_frequency_error():
    problem = sine_frequency_problem(shaped=True)
    loss = sine_loss()
    tasks = problem.sample_tasks(4, np.random.default_rng(0))

    def task_loss_after_one_step():
        total = 0.0
        for i, task in enumerate(tasks):
            params = {k: v.requires_grad_() for k, v in problem.init_params(task, i).items()}
            grad = torch.autograd.grad(loss(*problem.loss_inputs(params, task)),
                                       params["omega"], create_graph=True)[0]
            total = total + problem.task_loss({"omega": params["omega"] - grad}, task)
        return total / len(tasks)

    loss.requires_grad_(True)  # a hand-written meta-gradient, outside meta_train
    before = task_loss_after_one_step()
    phi = list(loss.parameters())
    grads = torch.autograd.grad(before, phi, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(phi, grads, strict=True):
            if g is not None:
                p -= 1e-3 * g
    assert float(task_loss_after_one_step().detach()) < float(before.detach())


def test_meta_fit_routes_extra_loss_beta_gamma():
    """LearnedLoss.meta_fit(..., extra_loss=, beta=, gamma=) shapes supervised meta-training."""
    rng = np.random.default_rng(0)
    seen = []

    def slope_error(params, task, predict):
        seen.append(float(task.extra["slope"]))
        X = task.X_val
        return ((predict(X + 1) - predict(X)) - task.extra["slope"]).pow(2).mean()

    tasks = []
    for slope in (1.0, -2.0):
        X = rng.normal(size=(20, 1)).astype(np.float32)
        y = (slope * X).ravel()
        tasks.append(Task(*(torch.from_numpy(a) for a in (X, y, X, y)),
                          {"slope": torch.tensor(slope)}))
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    loss.meta_fit(tasks, MetaLossRegressor(hidden_layer_sizes=(4,), lr=0.01),
                  extra_loss=slope_error, beta=0.5, gamma=2.0, n_meta_iter=4, verbose=0)
    assert loss.meta_info_["problem"]["shaped"]
    assert set(seen) <= {1.0, -2.0} and seen
    # at meta-test the estimator fits from (X, y) alone
    X = rng.normal(size=(30, 1)).astype(np.float32)
    reg = MetaLossRegressor(hidden_layer_sizes=(4,), loss=loss, lr=0.01, max_iter=5,
                            random_state=0).fit(X, 3 * X.ravel())
    assert np.all(np.isfinite(reg.predict(X)))


def test_frequency_error_reads_extra():
    task = SineFrequencyTasks().task(1.0, np.random.default_rng(0))
    assert float(frequency_error({"omega": torch.tensor(3.0)}, task)) == pytest.approx(4.0)
