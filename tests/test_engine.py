"""The meta-training engine: meta-gradients, vmap vs loop, determinism, divergence, resume."""

import json
import math
import os
import re
import time

import numpy as np
import pytest
import torch

from sklearn_ml3 import LearnedLoss, MetaLossRegressor, MetaTrainingDiverged, SineTasks
from sklearn_ml3.meta import differentiable_optimizer, meta_train, update_and_task_loss
from sklearn_ml3.meta.engine import _stack  # the engine's own task stacking
from sklearn_ml3.tasks import SupervisedProblem, Task


def tiny_mlp(n_features, n_outputs):
    return torch.nn.Sequential(torch.nn.Linear(n_features, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, n_outputs))


def sine_problem(**kwargs):
    tasks = SineTasks(amplitude=(0.5, 2.0), phase=(-1.0, 1.0), n_points=20)
    return SupervisedProblem(tasks, tiny_mlp, **kwargs)


def double_loss(seed=0, **kwargs):
    # unfrozen: these tests take meta-gradients by hand, outside meta_train
    return LearnedLoss(hidden_layer_sizes=(6, 6), activation="tanh", random_state=seed,
                       **kwargs).to(torch.float64).requires_grad_(True)


def to64(tree):
    return {k: v.double() for k, v in tree.items()}


def episode(problem, n_tasks, seed=0):
    rng = np.random.default_rng(seed)
    tasks = [Task(*(t.double() for t in task[:4]), task.extra)
             for task in problem.sample_tasks(n_tasks, rng)]
    params = [to64(problem.init_params(t, 10 + i)) for i, t in enumerate(tasks)]
    return tasks, params


def meta_objective(loss, problem, tasks, params, solver="sgd", lr=0.1, unroll=1,
                   vectorize=False):
    opt = differentiable_optimizer(solver, lr)
    states = [opt.init(p) for p in params]
    if vectorize:
        value, _, _ = update_and_task_loss(loss, problem, opt, _stack(params), _stack(states),
                                           _stack(tasks), unroll=unroll, vectorize=True)
    else:
        leafs = [{k: v.clone().requires_grad_() for k, v in p.items()} for p in params]
        value, _, _ = update_and_task_loss(loss, problem, opt, leafs, states, tasks,
                                           unroll=unroll)
    return value


def meta_gradient(loss, *args, **kwargs):
    value = meta_objective(loss, *args, **kwargs)
    return torch.autograd.grad(value, list(loss.parameters()))


@pytest.mark.parametrize("solver,unroll", [("sgd", 1), ("momentum", 2), ("adam", 2)])
def test_meta_gradient_matches_central_finite_differences(solver, unroll):
    problem = sine_problem()
    loss = double_loss()
    tasks, params = episode(problem, 2)
    lr = 0.05 if solver != "adam" else 0.01
    grads = meta_gradient(loss, problem, tasks, params, solver=solver, unroll=unroll, lr=lr)
    eps = 1e-6
    checked = 0
    gen = torch.Generator().manual_seed(0)
    for p, g in zip(loss.parameters(), grads, strict=True):
        for flat in torch.randperm(p.numel(), generator=gen)[:4]:
            idx = np.unravel_index(int(flat), tuple(p.shape))
            original = p.data[idx].item()
            values = []
            for shifted in (original + eps, original - eps):
                p.data[idx] = shifted
                values.append(meta_objective(loss, problem, tasks, params, solver=solver,
                                             unroll=unroll, lr=lr).item())
            p.data[idx] = original
            up, down = values
            numeric = (up - down) / (2 * eps)
            assert g[idx].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
            checked += 1
    assert checked >= 8


def test_meta_gradient_matches_handwritten_create_graph_reference():
    """A from-scratch second-order computation with plain autograd gives the same numbers."""
    problem = sine_problem()
    loss = double_loss(seed=3)
    tasks, params = episode(problem, 3, seed=1)
    lr = 0.1
    engine = meta_gradient(loss, problem, tasks, params, lr=lr)

    module = tiny_mlp(1, 1).double()
    total = 0.0
    for task, p in zip(tasks, params, strict=True):
        theta = {k: v.clone().requires_grad_() for k, v in p.items()}
        pred = torch.func.functional_call(module, theta, (task.X_train,)).squeeze(-1)
        inner = loss(pred, task.y_train)
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
        new = {k: v - lr * g for (k, v), g in zip(theta.items(), grads, strict=True)}
        pred_new = torch.func.functional_call(module, new, (task.X_val,)).squeeze(-1)
        total = total + ((pred_new - task.y_val) ** 2).mean()
    reference = torch.autograd.grad(total / len(tasks), list(loss.parameters()))
    for a, b in zip(engine, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_vmap_and_loop_give_the_same_meta_gradient(solver):
    problem = sine_problem()
    loss = double_loss(seed=1)
    tasks, params = episode(problem, 4, seed=2)
    loop = meta_gradient(loss, problem, tasks, params, solver=solver, unroll=2)
    vmapped = meta_gradient(loss, problem, tasks, params, solver=solver, unroll=2,
                            vectorize=True)
    for a, b in zip(loop, vmapped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_vectorised_and_loop_meta_training_agree():
    def run(vectorize):
        loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
        meta_train(loss, sine_problem(), n_meta_iter=6, tasks_per_iter=3, inner_steps=2,
                   inner_lr=0.05, random_state=4, vectorize=vectorize, verbose=0)
        return loss

    a, b = run(True), run(False)
    np.testing.assert_allclose(a.meta_history_, b.meta_history_, rtol=1e-5)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_meta_training_improves_the_one_step_task_loss_on_held_out_inits():
    problem = SupervisedProblem(SineTasks.meta_train(), tiny_mlp)
    tasks = problem.sample_tasks(20, np.random.default_rng(99))
    params = [problem.init_params(t, 1000 + i) for i, t in enumerate(tasks)]
    opt = differentiable_optimizer("sgd", 0.05)

    def one_step_task_loss(loss):
        leafs = [{k: v.clone().requires_grad_() for k, v in p.items()} for p in params]
        value, _, _ = update_and_task_loss(loss, problem, opt, leafs,
                                           [opt.init(p) for p in leafs], tasks)
        return value.item()

    loss = LearnedLoss(hidden_layer_sizes=(20, 20), random_state=0)
    before = one_step_task_loss(loss)
    meta_train(loss, problem, n_meta_iter=200, inner_lr=0.05, meta_lr=3e-3, random_state=0,
               verbose=0)
    after = one_step_task_loss(loss)
    assert after < 0.8 * before


def test_meta_training_is_deterministic_under_random_state():
    def run():
        loss = LearnedLoss(hidden_layer_sizes=(8, 8), random_state=7)
        return loss.meta_fit(sine_problem(), n_meta_iter=12, inner_steps=3, inner_lr=0.05,
                             tasks_per_iter=2, verbose=0)

    a, b = run(), run()
    np.testing.assert_array_equal(a.meta_history_, b.meta_history_)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    c = LearnedLoss(hidden_layer_sizes=(8, 8), random_state=8)
    c.meta_fit(sine_problem(), n_meta_iter=12, inner_steps=3, inner_lr=0.05,
               tasks_per_iter=2, verbose=0)
    assert not np.array_equal(a.meta_history_, c.meta_history_)


def test_divergence_guard_stops_and_keeps_the_last_finite_network():
    calls = []

    def extra(params, task):
        calls.append(1)
        return torch.tensor(math.nan) if len(calls) == 6 else torch.tensor(0.0)

    problem = SupervisedProblem(SineTasks(), tiny_mlp, extra_loss=extra)
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    snapshots = []

    def remember(iteration, value):  # phi after the update of this iteration
        snapshots.append({k: v.clone() for k, v in loss.network_.state_dict().items()})

    with pytest.raises(MetaTrainingDiverged, match="diverged at iteration 5"):
        meta_train(loss, problem, n_meta_iter=20, inner_lr=0.01, meta_lr=0.1, verbose=0,
                   callback=remember)
    assert loss.meta_history_.shape == (5,)
    assert np.all(np.isfinite(loss.meta_history_))
    assert loss.meta_info_["n_meta_iter_done"] == 5
    # the network kept is the last one whose task loss was finite (used at iteration 4)
    for k, v in loss.network_.state_dict().items():
        torch.testing.assert_close(v, snapshots[3][k], rtol=0, atol=0)
        assert not torch.equal(v, snapshots[4][k])


def test_interrupted_meta_training_resumes_exactly(tmp_path):
    kwargs = dict(n_meta_iter=30, inner_steps=5, inner_lr=0.05, tasks_per_iter=2,
                  random_state=3, verbose=0)

    reference = LearnedLoss(hidden_layer_sizes=(8,), random_state=1)
    reference.meta_fit(sine_problem(), **kwargs)

    ckpt = tmp_path / "run.ckpt"
    interrupted = LearnedLoss(hidden_layer_sizes=(8,), random_state=1)

    def stop(iteration, value):
        if iteration == 22:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.meta_fit(sine_problem(), checkpoint=ckpt, checkpoint_every=10,
                             callback=stop, **kwargs)
    assert ckpt.exists()

    resumed = LearnedLoss(hidden_layer_sizes=(8,), random_state=1)
    resumed.meta_fit(sine_problem(), checkpoint=ckpt, checkpoint_every=10, **kwargs)
    np.testing.assert_allclose(resumed.meta_history_, reference.meta_history_, rtol=1e-6)
    for x, y in zip(resumed.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_divergence_at_the_first_iteration_leaves_the_loss_untrained():
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    before = {k: v.clone() for k, v in loss.network_.state_dict().items()}
    with pytest.raises(MetaTrainingDiverged, match="diverged at iteration 0"):
        loss.meta_fit(sine_problem(), n_meta_iter=5, inner_lr=1e12, verbose=0)
    assert not loss.is_meta_trained and loss.meta_info_ == {}
    for k, v in loss.network_.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.warns(UserWarning, match="not been meta-trained"):
        loss.check_compatible("regression")


@pytest.mark.parametrize("change, difference", [
    ({"inner_lr": 0.5}, "options.inner_lr: 0.05 in the checkpoint, 0.5 now"),
    ({"random_state": 2}, "random_state: 1 in the checkpoint, 2 now"),
    ({"problem": sine_problem(target_scaling="standard")}, "problem.target_scaling"),
    ({"problem": SupervisedProblem(SineTasks(n_points=30), tiny_mlp)}, "problem.tasks"),
])
def test_checkpoint_of_another_run_is_refused(tmp_path, change, difference):
    ckpt = tmp_path / "run.ckpt"
    settings = dict(n_meta_iter=4, inner_lr=0.05, random_state=1, verbose=0, checkpoint=ckpt)
    LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(sine_problem(), **settings)
    problem = change.pop("problem", sine_problem())
    with pytest.raises(ValueError, match=re.escape(difference)):
        LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
            problem, **{**settings, **change})


def test_checkpoint_of_other_fixed_tasks_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(20, 1)), rng.normal(size=20)) for _ in range(2)]
    ckpt = tmp_path / "run.ckpt"
    settings = dict(n_meta_iter=3, random_state=1, verbose=0, checkpoint=ckpt)
    LearnedLoss(hidden_layer_sizes=(4,), random_state=1).meta_fit(tasks, **settings)
    other = [(x, y + 1.0) for x, y in tasks]  # same count and shapes, other data
    with pytest.raises(ValueError, match="tasks: '[0-9a-f]+' in the checkpoint"):
        LearnedLoss(hidden_layer_sizes=(4,), random_state=1).meta_fit(other, **settings)


def test_checkpoint_past_n_meta_iter_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
        sine_problem(), n_meta_iter=6, checkpoint=ckpt, verbose=0)
    with pytest.raises(ValueError, match="at iteration 6, past n_meta_iter=4"):
        LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
            sine_problem(), n_meta_iter=4, checkpoint=ckpt, verbose=0)


def test_a_second_run_on_a_locked_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    errors = []

    def second_run(iteration, value):  # while the first run holds the checkpoint
        if iteration == 1:
            with pytest.raises(RuntimeError, match=f"checkpoint {re.escape(str(ckpt))} is in "
                               f"use by process {os.getpid()}") as info:
                LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
                    sine_problem(), n_meta_iter=4, checkpoint=ckpt, verbose=0)
            errors.append(info.value)

    LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
        sine_problem(), n_meta_iter=4, checkpoint=ckpt, verbose=0, callback=second_run)
    assert len(errors) == 1
    # released at the end: the same run resumes (and has nothing left to do)
    LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
        sine_problem(), n_meta_iter=4, checkpoint=ckpt, verbose=0)


def test_checkpoints_keep_the_elapsed_time(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    slow = SupervisedProblem(SineTasks(n_points=20), tiny_mlp,
                             extra_loss=lambda p, t: (time.sleep(0.01), torch.tensor(0.0))[1])

    def stop(iteration, value):
        if iteration == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
            slow, n_meta_iter=20, checkpoint=ckpt, checkpoint_every=10, random_state=0,
            verbose=0, callback=stop)
    saved = json.loads(torch.load(ckpt, weights_only=True)["time"])
    assert saved["wall"] >= 10 * 0.01  # ten sleeping iterations before the save
    resumed = LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
        slow, n_meta_iter=20, checkpoint=ckpt, checkpoint_every=10, random_state=0, verbose=0)
    assert resumed.meta_info_["meta_train_time_s"]["wall"] >= 20 * 0.01


def test_checkpoint_with_other_options_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=1)
    loss.meta_fit(sine_problem(), n_meta_iter=4, checkpoint=ckpt, verbose=0)
    with pytest.raises(ValueError, match="other meta-training options"):
        LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
            sine_problem(), n_meta_iter=4, inner_lr=0.5, checkpoint=ckpt, verbose=0)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read meta-training checkpoint"):
        LearnedLoss(hidden_layer_sizes=(8,), random_state=1).meta_fit(
            sine_problem(), n_meta_iter=4, checkpoint=ckpt, verbose=0)


def test_meta_info_records_how_the_loss_was_trained():
    template = MetaLossRegressor(hidden_layer_sizes=(8,), lr=0.02, solver="momentum")
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    loss.meta_fit(SineTasks.meta_train(), estimator=template, n_meta_iter=3, inner_steps=3,
                  target_scaling="standard", verbose=0)
    info = loss.meta_info_
    assert info["inner_optimizer"] == "momentum"
    assert info["inner_lr"] == 0.02
    assert info["inner_steps"] == 3 and info["unroll"] == 1
    assert info["problem"]["target_scaling"] == "standard"
    assert info["versions"]["torch"] == torch.__version__
    assert info["meta_train_time_s"]["cpu"] > 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(inner_steps=3, unroll=2), "multiple of unroll"),
        (dict(n_meta_iter=0), "at least 1"),
        (dict(inner_optimizer="rmsprop"), r"optimizer \(solver\) must be one of"),
    ],
)
def test_bad_meta_training_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearnedLoss(random_state=0).meta_fit(sine_problem(), verbose=0, **kwargs)


def test_bad_tasks_get_clear_errors():
    loss = LearnedLoss(random_state=0)
    X = np.ones((5, 2))
    with pytest.raises(ValueError, match="NaN or infinity"):
        loss.meta_fit([(X, np.array([1, 2, math.nan, 4, 5.0]))], n_meta_iter=1, verbose=0)
    with pytest.raises(ValueError, match="one row per target"):
        loss.meta_fit([(X, np.ones(4))], n_meta_iter=1, verbose=0)
    with pytest.raises(ValueError, match="tasks is empty"):
        loss.meta_fit([], n_meta_iter=1, verbose=0)
    with pytest.raises(ValueError, match="each task must be"):
        loss.meta_fit([X], n_meta_iter=1, verbose=0)


def test_array_tasks_of_different_shapes_train_with_the_loop():
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(n, 3)), rng.normal(size=n)) for n in (10, 14, 9)]
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    loss.meta_fit(tasks, estimator=MetaLossRegressor(hidden_layer_sizes=(5,), lr=0.01),
                  n_meta_iter=5, tasks_per_iter=2, verbose=0)
    assert loss.meta_info_["vectorized"] is False
    assert np.all(np.isfinite(loss.meta_history_))


def test_shaping_term_reads_meta_train_only_information():
    """An extra task-loss term sees Task.extra; the optimizee's inner step never does."""
    seen = []

    def extra(params, task):
        seen.append(float(task.extra["amplitude"]))
        return sum((p ** 2).sum() for p in params.values()) * 0.0 + task.extra["amplitude"]

    problem = SupervisedProblem(SineTasks(amplitude=(1.0, 2.0)), tiny_mlp, extra_loss=extra,
                                beta=1.0, gamma=0.5)
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    meta_train(loss, problem, n_meta_iter=3, verbose=0)
    assert len(seen) == 3 and all(1.0 <= a <= 2.0 for a in seen)
    assert loss.meta_info_["problem"]["shaped"] is True
