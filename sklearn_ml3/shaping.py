"""Shaping a learned loss with information that exists only at meta-train time.

ML3 (paper III-C) meta-trains with a task loss that may read extra
information about each task,

    L_T = beta * task_loss + gamma * L_extra,

for example the true parameters of a regression problem or the true inertia
matrix of a robot. The learned loss never sees that information: it reads
only what a model produces on ordinary training data. At meta-test time it
trains new models on new data alone.

For supervised problems the convention is :class:`~sklearn_ml3.tasks.SupervisedProblem`
(``extra_loss=fn(params, task[, predict])``, ``beta``, ``gamma``) and
:attr:`Task.extra <sklearn_ml3.tasks.Task>`, also reachable through
``LearnedLoss.meta_fit(tasks, estimator, extra_loss=..., beta=..., gamma=...)``.
This module adds the two supervised shaping experiments of the paper:

- sine frequency regression ``f(x) = sin(omega x)`` with the shaping term
  ``(omega - nu)^2`` (:class:`SineFrequencyTasks`, :func:`sine_frequency_problem`);
- inverse dynamics with a physics prior: a network that predicts the inertia
  matrix ``M_theta(q)`` and a bias force, shaped with the true MuJoCo mass
  matrix (:class:`InverseDynamicsProblem`);

and :func:`meta_test_curve`, which trains a fresh optimizee with a loss alone
(no task loss, no extra information) and records a metric after every update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._utils import build_seeded
from .meta.optim import torch_optimizer
from .tasks import SupervisedProblem, Task

Params = dict[str, torch.Tensor]


# ----------------------------------------------------------- sine frequency
class SineFrequencyModel(nn.Module):
    """``f(x) = sin(omega x)`` with one parameter named ``omega``.

    Parameters
    ----------
    omega0 : float, default=0.1
        Initial frequency (the experiment starts every model here).
    """

    def __init__(self, omega0: float = 0.1):
        super().__init__()
        self.omega = nn.Parameter(torch.tensor(float(omega0)))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predictions of shape ``X.shape`` (one input column)."""
        return torch.sin(self.omega * X)


class SineFrequencyTasks:
    """Tasks ``y = sin(nu x)`` whose true frequency ``nu`` is meta-train-only information.

    Each task's ``extra`` holds ``{"nu": tensor}``; a shaping term such as
    :func:`frequency_error` reads it during meta-training.

    Parameters
    ----------
    frequency_range : (float, float), default=(-5, 5)
        ``nu`` is drawn uniformly from this interval.
    x_range : (float, float), default=(-5, 5)
        Inputs are drawn uniformly from this interval.
    n_points : int, default=64
        Points per task (the same points serve the inner steps and the task loss).

    Examples
    --------
    >>> import numpy as np
    >>> task = SineFrequencyTasks().sample(np.random.default_rng(0))
    >>> sorted(task.extra), tuple(task.X_train.shape)
    (['nu'], (64, 1))
    """

    def __init__(self, frequency_range=(-5.0, 5.0), x_range=(-5.0, 5.0), n_points: int = 64):
        low, high = (float(v) for v in frequency_range)
        if not low < high:
            raise ValueError(f"frequency_range must be (low, high) with low < high, got "
                             f"{frequency_range}")
        x_low, x_high = (float(v) for v in x_range)
        if not x_low < x_high:
            raise ValueError(f"x_range must be (low, high) with low < high, got {x_range}")
        if int(n_points) < 1:
            raise ValueError(f"n_points must be at least 1, got {n_points}")
        self.frequency_range = (low, high)
        self.x_range = (x_low, x_high)
        self.n_points = int(n_points)

    def task(self, nu: float, rng: np.random.Generator) -> Task:
        """The task of frequency ``nu`` with inputs drawn from ``rng``."""
        x = rng.uniform(*self.x_range, size=(self.n_points, 1)).astype(np.float32)
        X = torch.from_numpy(x)
        y = torch.sin(float(nu) * X).ravel()
        return Task(X, y, X, y, {"nu": torch.tensor(float(nu))})

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw one task."""
        return self.task(rng.uniform(*self.frequency_range), rng)

    def __repr__(self) -> str:
        return (f"SineFrequencyTasks(frequency_range={self.frequency_range}, "
                f"x_range={self.x_range}, n_points={self.n_points})")


def frequency_error(params: Params, task: Task) -> torch.Tensor:
    """Shaping term ``(omega - nu)^2``; reads the meta-train-only ``task.extra["nu"]``."""
    return (params["omega"] - task.extra["nu"]) ** 2


class _InputAwareProblem(SupervisedProblem):
    """A regression problem whose learned loss also reads the input ``x`` (one column)."""

    def loss_inputs(self, params, task):
        y_pred, y = super().loss_inputs(params, task)
        return y_pred, y, task.X_train[:, 0]


def sine_frequency_problem(tasks: SineFrequencyTasks | None = None, *, shaped: bool = True,
                           beta: float = 0.0, gamma: float = 1.0,
                           omega0: float = 0.1) -> SupervisedProblem:
    """The sine-frequency meta-training problem (paper IV-B.1).

    The learned loss reads ``(y_pred, y, x)`` per point, so build it as
    ``LearnedLoss(kind="regression", n_extra_inputs=1, ...)``.

    Parameters
    ----------
    tasks : SineFrequencyTasks, optional
        Task sampler (default: the authors' setting, 64 points, nu and x in [-5, 5]).
    shaped : bool, default=True
        True: ``L_T = beta * MSE + gamma * (omega - nu)^2``. False: ``L_T = MSE``.
    beta, gamma : float, default=0.0, 1.0
        Weights of the shaped task loss (the paper uses the shaping term alone).
    omega0 : float, default=0.1
        Initial frequency of every optimizee.

    Returns
    -------
    problem : SupervisedProblem
    """
    tasks = SineFrequencyTasks() if tasks is None else tasks
    factory = lambda n_features, n_outputs: SineFrequencyModel(omega0)  # noqa: E731
    if not shaped:
        return _InputAwareProblem(tasks, factory, kind="regression")
    return _InputAwareProblem(tasks, factory, kind="regression", extra_loss=frequency_error,
                              beta=beta, gamma=gamma)


# ----------------------------------------------------------- inverse dynamics
class InertiaNetwork(nn.Module):
    """Inverse dynamics ``tau = M_theta(q) qdd + b_theta(q, qd)`` with a structured inertia.

    ``M_theta(q) = L L^T`` with ``L`` lower-triangular and a positive
    (softplus) diagonal, so the predicted inertia is symmetric positive
    definite. Joint angles enter through ``sin q`` and ``cos q``.

    Parameters
    ----------
    n_joints : int
    hidden_layer_sizes : tuple of int, default=(64, 64)
    """

    def __init__(self, n_joints: int, hidden_layer_sizes=(64, 64)):
        super().__init__()
        self.n_joints = int(n_joints)
        n = self.n_joints

        def mlp(n_in, n_out):
            layers, width = [], n_in
            for h in hidden_layer_sizes:
                layers += [nn.Linear(width, int(h)), nn.Tanh()]
                width = int(h)
            return nn.Sequential(*layers, nn.Linear(width, n_out))

        self.inertia = mlp(2 * n, n * (n + 1) // 2)
        self.bias_force = mlp(3 * n, n)
        rows, cols = torch.tril_indices(n, n)
        # fixed 0/1 map from the packed lower triangle to a flat n x n matrix
        # (a matmul, so the model stays vmap-friendly)
        unpack = torch.zeros(len(rows), n * n)
        unpack[torch.arange(len(rows)), rows * n + cols] = 1.0
        self.register_buffer("unpack", unpack, persistent=False)
        self.register_buffer("diagonal", (rows == cols), persistent=False)

    def mass_matrix(self, q: torch.Tensor) -> torch.Tensor:
        """Predicted inertia, shape ``(N, n_joints, n_joints)``."""
        n = self.n_joints
        raw = self.inertia(torch.cat([torch.sin(q), torch.cos(q)], dim=-1))
        raw = torch.where(self.diagonal, F.softplus(raw) + 1e-3, raw)
        L = (raw @ self.unpack).reshape(*q.shape[:-1], n, n)
        return L @ L.transpose(-1, -2)

    def forward(self, X: torch.Tensor, return_mass: bool = False):
        """Torques for rows ``X = [q, qd, qdd]``; with ``return_mass`` also ``M_theta(q)``."""
        n = self.n_joints
        q, qd, qdd = X[..., :n], X[..., n:2 * n], X[..., 2 * n:3 * n]
        M = self.mass_matrix(q)
        bias = self.bias_force(torch.cat([torch.sin(q), torch.cos(q), qd], dim=-1))
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
        from rl.envs import ArmModel, sample_trajectories

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
        self._module = build_seeded(lambda: InertiaNetwork(n, self.hidden_layer_sizes), 0)

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
        module = build_seeded(lambda: InertiaNetwork(self.n_joints, self.hidden_layer_sizes),
                              seed)
        return {k: v.detach().clone() for k, v in module.named_parameters()}

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


# ------------------------------------------------------------------ meta-test
def mse_loss(y_pred: torch.Tensor, y: torch.Tensor, *unused: torch.Tensor) -> torch.Tensor:
    """Plain MSE with the learned loss's call signature (extra inputs ignored)."""
    return F.mse_loss(y_pred, y)


def meta_test_curve(problem, loss: Callable[..., torch.Tensor], task: Task, *,
                    n_steps: int, lr: float, solver: str = "sgd", seed: int = 0,
                    metric: Callable[[Params, Task], torch.Tensor] | None = None,
                    params: Params | None = None) -> np.ndarray:
    """Train a fresh optimizee on ``task`` with ``loss`` alone and record a metric.

    Only ``problem.init_params`` and ``problem.loss_inputs`` are used for
    training: the task loss and ``task.extra`` are never read unless
    ``metric`` reads them.

    Parameters
    ----------
    problem : MetaProblem
    loss : callable
        A :class:`~sklearn_ml3.LearnedLoss` or :func:`mse_loss`, called on
        ``problem.loss_inputs(params, task)``.
    task : Task
    n_steps : int
        Number of updates.
    lr : float
    solver : {"sgd", "momentum", "adam"}, default="sgd"
    seed : int, default=0
        Seed of the optimizee initialisation.
    metric : callable ``(params, task) -> scalar``, optional
        Evaluated before training and after every update (default: the
        loss value itself).
    params : dict, optional
        Initial parameters (default ``problem.init_params(task, seed)``).

    Returns
    -------
    curve : ndarray of shape (n_steps + 1,)
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be non-negative, got {n_steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    start = problem.init_params(task, seed) if params is None else params
    params = {k: v.detach().clone().requires_grad_() for k, v in start.items()}
    optimizer = torch_optimizer(solver, list(params.values()), lr)

    def evaluate() -> float:
        with torch.no_grad():
            if metric is None:
                return float(loss(*problem.loss_inputs(params, task)))
            return float(metric(params, task))

    curve = [evaluate()]
    for _ in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        loss(*problem.loss_inputs(params, task)).backward()
        optimizer.step()
        curve.append(evaluate())
    return np.asarray(curve)


__all__ = [
    "InertiaNetwork",
    "InverseDynamicsProblem",
    "SineFrequencyModel",
    "SineFrequencyTasks",
    "frequency_error",
    "meta_test_curve",
    "mse_loss",
    "sine_frequency_problem",
]
