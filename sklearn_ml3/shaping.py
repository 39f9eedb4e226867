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
This module adds the sine-frequency shaping experiment of the paper:

- sine frequency regression ``f(x) = sin(omega x)`` with the shaping term
  ``(omega - nu)^2`` (:class:`SineFrequencyTasks`, :func:`sine_frequency_problem`);
- (the inverse-dynamics experiment with a physics prior lives with the arm
  models, in :mod:`rl.meta.inverse_dynamics`);

and :func:`mse_loss`, the hand-written baseline with the learned loss's call
signature. Meta-test runs (a fresh optimizee trained with a loss alone, no
task loss and no extra information) go through :func:`sklearn_ml3.meta.meta_test`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .meta.baselines import mse_loss
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


__all__ = [
    "SineFrequencyModel",
    "SineFrequencyTasks",
    "frequency_error",
    "mse_loss",
    "sine_frequency_problem",
]
