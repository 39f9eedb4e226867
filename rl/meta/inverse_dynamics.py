"""Inverse dynamics with a physics prior (paper IV-B.2): a learned loss shaped by
the true MuJoCo inertia matrix at meta-train time.

The shaping convention is the supervised one of :mod:`sklearn_ml3.shaping`
(``L_T = beta * task_loss + gamma * L_extra``, meta-train-only information in
``Task.extra``); this problem lives in ``rl`` because it needs the arm models
of :mod:`rl.envs`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rl.envs import ArmModel, sample_trajectories
from rl.meta.policies import build_mlp, init_params
from sklearn_ml3._utils import build_seeded
from sklearn_ml3.tasks import Task

Params = dict[str, torch.Tensor]


class InertiaNetwork(nn.Module):
    """Inverse dynamics ``tau = M_theta(q) qdd + b_theta(q, qd)`` with a structured inertia.

    ``M_theta(q) = D L L^T D`` with ``L`` lower-triangular with a positive
    (softplus) diagonal, so the predicted inertia is symmetric positive
    definite, and ``D = diag(sqrt(mass_scale))`` a fixed scale. Joint angles
    enter through ``sin q`` and ``cos q``; velocities are divided by a fixed
    ``velocity_scale`` and the bias network's output is multiplied by a fixed
    ``torque_scale``. With scales computed from calibration trajectories every
    network works in unit-size quantities, which keeps plain SGD stable, while
    ``tau`` and ``M_theta`` stay in physical units.

    Parameters
    ----------
    n_joints : int
    hidden_layer_sizes : tuple of int, default=(64, 64)
    velocity_scale, torque_scale, mass_scale : array-like of shape (n_joints,), optional
        Fixed per-joint scales of ``qd``, of the torques and of the diagonal of
        the inertia (default: ones).
    """

    def __init__(self, n_joints: int, hidden_layer_sizes=(64, 64), *, velocity_scale=None,
                 torque_scale=None, mass_scale=None):
        super().__init__()
        self.n_joints = int(n_joints)
        n = self.n_joints

        def mlp(n_in, n_out):
            return build_mlp(n_in, hidden_layer_sizes, n_out)

        def scale(value, name):
            if value is None:
                return torch.ones(n)
            value = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
            if value.shape != (n,) or not torch.all(value > 0):
                raise ValueError(f"{name} must hold {n} positive numbers, got {value.tolist()}")
            return value

        self.inertia = mlp(2 * n, n * (n + 1) // 2)
        self.bias_force = mlp(3 * n, n)
        rows, cols = torch.tril_indices(n, n)
        # fixed 0/1 map from the packed lower triangle to a flat n x n matrix
        # (a matmul, so the model stays vmap-friendly)
        unpack = torch.zeros(len(rows), n * n)
        unpack[torch.arange(len(rows)), rows * n + cols] = 1.0
        self.register_buffer("unpack", unpack, persistent=False)
        self.register_buffer("diagonal", (rows == cols), persistent=False)
        self.register_buffer("velocity_scale", scale(velocity_scale, "velocity_scale"),
                             persistent=False)
        self.register_buffer("torque_scale", scale(torque_scale, "torque_scale"),
                             persistent=False)
        self.register_buffer("mass_root", scale(mass_scale, "mass_scale").sqrt(),
                             persistent=False)

    def mass_matrix(self, q: torch.Tensor) -> torch.Tensor:
        """Predicted inertia, shape ``(N, n_joints, n_joints)``."""
        n = self.n_joints
        raw = self.inertia(torch.cat([torch.sin(q), torch.cos(q)], dim=-1))
        raw = torch.where(self.diagonal, F.softplus(raw) + 1e-3, raw)
        L = (raw @ self.unpack).reshape(*q.shape[:-1], n, n)
        L = self.mass_root.unsqueeze(-1) * L  # D L
        return L @ L.transpose(-1, -2)

    def forward(self, X: torch.Tensor, return_mass: bool = False):
        """Torques for rows ``X = [q, qd, qdd]``; with ``return_mass`` also ``M_theta(q)``."""
        n = self.n_joints
        q, qd, qdd = X[..., :n], X[..., n:2 * n], X[..., 2 * n:3 * n]
        M = self.mass_matrix(q)
        features = torch.cat([torch.sin(q), torch.cos(q), qd / self.velocity_scale], dim=-1)
        bias = self.bias_force(features) * self.torque_scale
        tau = (M @ qdd.unsqueeze(-1)).squeeze(-1) + bias
        return (tau, M) if return_mass else tau


class InverseDynamicsProblem:
    """Inverse-dynamics learning on a MuJoCo arm, shaped by the true inertia (paper IV-B.2).

    Each task is a fresh set of smooth joint trajectories of the arm
    (:func:`rl.envs.sample_trajectories`): inputs ``[q, qd, qdd]``, targets
    the joint torques divided by a fixed per-joint torque scale. The
    optimizee is an :class:`InertiaNetwork`. The learned loss reads
    ``(tau_pred, tau)`` per joint (``LearnedLoss(kind="regression")``).

    Task loss on held-out points of the task's trajectories:

    - unshaped: torque MSE (in torque-scale units);
    - shaped: ``beta * torque MSE + gamma * mean(((M_theta(q) - M(q)) / s)^2)``
      where ``M(q)`` is the true MuJoCo mass matrix, stored in
      ``task.extra["M"]`` only, and ``s_ij = sqrt(m_i m_j)`` with ``m`` the
      mean diagonal inertia (scales the entries to unit size).

    Parameters
    ----------
    arm : {"arm2", "arm7"}, default="arm2"
    shaped : bool, default=True
    beta, gamma : float, default=1.0, 1.0
        ``beta=0`` gives the paper's pure inertia task loss.
    n_traj : int, default=4
        Trajectories per task.
    n_steps, dt : int, float, default=50, 0.1
        Samples per trajectory and sampling period (s).
    n_train : int, default=100
        Points of a task the learned loss trains on; the rest is the
        held-out set of the task loss.
    hidden_layer_sizes : tuple of int, default=(64, 64)
    random_state : int, default=0
        Seeds the calibration trajectories that fix the torque and inertia scales.
    """

    vectorizable = True

    def __init__(self, arm: str = "arm2", *, shaped: bool = True, beta: float = 1.0,
                 gamma: float = 1.0, n_traj: int = 4, n_steps: int = 50, dt: float = 0.1,
                 n_train: int = 100, hidden_layer_sizes=(64, 64), random_state: int = 0):
        if n_train < 1 or n_train >= n_traj * n_steps:
            raise ValueError(f"n_train must be in [1, n_traj * n_steps), got {n_train} with "
                             f"{n_traj * n_steps} points per task")
        self.arm = ArmModel(arm) if isinstance(arm, str) else arm
        self.shaped = bool(shaped)
        self.beta, self.gamma = float(beta), float(gamma)
        self.n_traj, self.n_steps, self.dt = int(n_traj), int(n_steps), float(dt)
        self.n_train = int(n_train)
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)
        self.random_state = random_state
        self._sample_trajectories = sample_trajectories
        calib = sample_trajectories(self.arm, 16, self.n_steps, rng=random_state, dt=self.dt)
        n = self.arm.n_joints
        self.torque_scale = torch.tensor(calib["tau"].reshape(-1, n).std(0), dtype=torch.float32)
        diag = np.diagonal(calib["M"].reshape(-1, n, n), axis1=1, axis2=2).mean(0)
        self.inertia_scale = torch.tensor(np.sqrt(np.outer(diag, diag)), dtype=torch.float32)
        self.velocity_scale = torch.tensor(calib["qd"].reshape(-1, n).std(0),
                                           dtype=torch.float32)
        self.mass_scale = torch.tensor(diag, dtype=torch.float32)
        self._module = build_seeded(self._network, 0)

    def _network(self) -> InertiaNetwork:
        return InertiaNetwork(self.n_joints, self.hidden_layer_sizes,
                              velocity_scale=self.velocity_scale,
                              torque_scale=self.torque_scale, mass_scale=self.mass_scale)

    @property
    def n_joints(self) -> int:
        return self.arm.n_joints

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` tasks of fresh trajectories; ``extra["M"]`` holds the held-out true inertia."""
        return [self._task(rng) for _ in range(n)]

    def _task(self, rng: np.random.Generator) -> Task:
        data = self._sample_trajectories(self.arm, self.n_traj, self.n_steps, rng=rng,
                                         dt=self.dt)
        n = self.n_joints
        X = np.concatenate([data[k].reshape(-1, n) for k in ("q", "qd", "qdd")], axis=1)
        tau = data["tau"].reshape(-1, n)
        M = data["M"].reshape(-1, n, n)
        order = rng.permutation(len(X))
        tr, va = order[: self.n_train], order[self.n_train:]

        def t(a):
            return torch.as_tensor(a, dtype=torch.float32)

        scale = self.torque_scale
        return Task(t(X[tr]), t(tau[tr]) / scale, t(X[va]), t(tau[va]) / scale,
                    {"M": t(M[va])})

    def init_params(self, task: Task, seed: int) -> Params:
        return init_params(self._network, seed)

    def predict(self, params: Params, X: torch.Tensor, return_mass: bool = False):
        """Scaled torques (and the inertia ``M_theta(q)`` in physical units)."""
        tau, M = torch.func.functional_call(self._module, params, (X,), {"return_mass": True})
        tau = tau / self.torque_scale
        return (tau, M) if return_mass else tau

    def loss_inputs(self, params: Params, task: Task):
        return self.predict(params, task.X_train), task.y_train

    def torque_error(self, params: Params, task: Task) -> torch.Tensor:
        """Held-out torque MSE in torque-scale units (the meta-test metric)."""
        return F.mse_loss(self.predict(params, task.X_val), task.y_val)

    def inertia_error(self, params: Params, task: Task) -> torch.Tensor:
        """Shaping term: scaled squared error of ``M_theta(q)``; reads ``task.extra["M"]``."""
        _, M = self.predict(params, task.X_val, return_mass=True)
        return (((M - task.extra["M"]) / self.inertia_scale) ** 2).mean()

    def task_loss(self, params: Params, task: Task) -> torch.Tensor:
        base = self.torque_error(params, task)
        if not self.shaped:
            return base
        return self.beta * base + self.gamma * self.inertia_error(params, task)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "inverse_dynamics", "arm": self.arm.name, "shaped": self.shaped,
            "beta": self.beta, "gamma": self.gamma, "n_traj": self.n_traj,
            "n_steps": self.n_steps, "dt": self.dt, "n_train": self.n_train,
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "torque_scale": self.torque_scale.tolist(),
        }
