"""Inverse dynamics shaped by the true inertia matrix (rl.meta.inverse_dynamics)."""

import numpy as np
import pytest
import torch

from rl.envs import ArmModel
from rl.meta.inverse_dynamics import InertiaNetwork, InverseDynamicsProblem
from sklearn_ml3 import LearnedLoss, meta_train
from sklearn_ml3.meta import meta_test
from sklearn_ml3.shaping import mse_loss
from tests._helpers import ForbiddenExtra


def test_inertia_network_predicts_spd_inertia_and_torque():
    net = InertiaNetwork(3, (16,))
    X = torch.randn(10, 9)
    tau, M = net(X, return_mass=True)
    torch.testing.assert_close(M, M.transpose(-1, -2))
    assert torch.all(torch.linalg.eigvalsh(M) > 0)
    bias = net(torch.cat([X[:, :6], torch.zeros(10, 3)], 1))
    torch.testing.assert_close(tau, (M @ X[:, 6:].unsqueeze(-1)).squeeze(-1) + bias)


def test_inertia_network_scales_keep_physical_units():
    from sklearn_ml3._utils import build_seeded

    mass = torch.tensor([4.0, 0.25])
    plain = build_seeded(lambda: InertiaNetwork(2, (8,)), 3)
    scaled = build_seeded(lambda: InertiaNetwork(2, (8,), mass_scale=mass,
                                                 velocity_scale=[2.0, 0.5],
                                                 torque_scale=[10.0, 1.0]), 3)
    X = torch.randn(5, 6)
    D = torch.diag(mass.sqrt())
    torch.testing.assert_close(scaled.mass_matrix(X[:, :2]), D @ plain.mass_matrix(X[:, :2]) @ D)
    X_plain = torch.cat([X[:, :2], X[:, 2:4] / torch.tensor([2.0, 0.5]), torch.zeros(5, 2)], 1)
    X_scaled = torch.cat([X[:, :4], torch.zeros(5, 2)], 1)
    torch.testing.assert_close(scaled(X_scaled), plain(X_plain) * torch.tensor([10.0, 1.0]))
    with pytest.raises(ValueError, match="mass_scale"):
        InertiaNetwork(2, mass_scale=[1.0, -1.0])
    with pytest.raises(ValueError, match="torque_scale"):
        InertiaNetwork(2, torque_scale=[1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def arm2_problem():
    return InverseDynamicsProblem("arm2", n_traj=2, n_steps=30, n_train=30,
                                  hidden_layer_sizes=(16,))


def test_inverse_dynamics_tasks_hold_true_mass_matrix(arm2_problem):
    task = arm2_problem.sample_tasks(1, np.random.default_rng(0))[0]
    q = task.X_val[:, :2].double().numpy()
    np.testing.assert_allclose(task.extra["M"].numpy(), ArmModel("arm2").mass_matrix(q),
                               rtol=1e-5, atol=1e-6)
    assert task.X_train.shape == (30, 6) and task.y_train.shape == (30, 2)


def test_inverse_dynamics_shaped_loss_adds_inertia_term(arm2_problem):
    task = arm2_problem.sample_tasks(1, np.random.default_rng(1))[0]
    params = arm2_problem.init_params(task, 0)
    shaped = float(arm2_problem.task_loss(params, task))
    expected = float(arm2_problem.torque_error(params, task)
                     + arm2_problem.inertia_error(params, task))
    assert shaped == pytest.approx(expected, rel=1e-5)
    unshaped = InverseDynamicsProblem("arm2", shaped=False, n_traj=2, n_steps=30, n_train=30,
                                      hidden_layer_sizes=(16,))
    assert float(unshaped.task_loss(params, task)) == pytest.approx(
        float(arm2_problem.torque_error(params, task)), rel=1e-5)


def test_inverse_dynamics_meta_training_and_blind_meta_test(arm2_problem):
    loss = LearnedLoss(hidden_layer_sizes=(16,), random_state=0)
    history = meta_train(loss, arm2_problem, n_meta_iter=6, inner_steps=3, tasks_per_iter=2,
                         inner_optimizer="sgd", inner_lr=0.1, random_state=0, verbose=0)
    assert np.all(np.isfinite(history)) and loss.meta_info_["vectorized"]
    task = arm2_problem.sample_tasks(1, np.random.default_rng(2))[0]
    blind = task._replace(extra=ForbiddenExtra())
    # the calibrated input/output scales make plain SGD on MSE stable at lr 0.1
    curve = meta_test(arm2_problem, mse_loss, [blind], n_updates=20, lr=0.1, optimizer="sgd",
                      metric=arm2_problem.torque_error).curves[0, 0]
    assert np.all(np.isfinite(curve)) and curve[-1] < 0.5 * curve[0]
    # by default the optimizer and lr the loss was meta-trained with
    learned = meta_test(arm2_problem, loss, [blind], n_updates=5,
                        metric=arm2_problem.torque_error)
    assert np.all(np.isfinite(learned.curves)) and (learned.optimizer, learned.lr) == ("sgd", 0.1)


def test_inverse_dynamics_rejects_bad_split():
    with pytest.raises(ValueError, match="n_train"):
        InverseDynamicsProblem("arm2", n_traj=1, n_steps=10, n_train=10)
