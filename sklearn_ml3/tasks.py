"""Supervised tasks for meta-training: the task record, samplers, and the
:class:`SupervisedProblem` that turns them into a problem for the engine."""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from ._utils import build_seeded


class Task(NamedTuple):
    """One supervised task.

    A named tuple of tensors (a pytree), so that tasks of equal shapes can be
    stacked and batched with ``torch.func.vmap``.

    Attributes
    ----------
    X_train, y_train : Tensor
        Data the learned loss sees during inner steps.
    X_val, y_val : Tensor
        Data of the task loss on the updated model.
    extra : dict of str to Tensor
        Information that exists only at meta-train time (true parameters,
        mass matrices, ...), read by shaping task losses.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    extra: dict = {}


def _range(value) -> tuple[float, float]:
    if np.ndim(value) == 0:
        return float(value), float(value)
    low, high = value
    return float(low), float(high)


class SineTasks:
    """Sine regression tasks ``y = A sin(x + b)`` (paper IV-A.1).

    Parameters
    ----------
    amplitude, phase : float or (low, high)
        Fixed values or uniform ranges.
    x_range : (low, high)
        Inputs are drawn uniformly from this interval.
    n_points : int
        Training points per task.
    n_val_points : int or None
        Points for the task loss; None reuses the training points.

    Examples
    --------
    >>> import numpy as np
    >>> task = SineTasks(amplitude=(0.2, 5.0)).sample(np.random.default_rng(0))
    >>> tuple(task.X_train.shape)
    (100, 1)
    """

    def __init__(self, amplitude=1.0, phase=-math.pi, x_range=(-2.0, 2.0), n_points=100,
                 n_val_points=None):
        self.amplitude = _range(amplitude)
        self.phase = _range(phase)
        self.x_range = _range(x_range)
        self.n_points = int(n_points)
        self.n_val_points = n_val_points

    @classmethod
    def meta_train(cls) -> SineTasks:
        """The meta-training task of the authors' code: ``sin(x - pi)``, x in [-2, 2]."""
        return cls(amplitude=1.0, phase=-math.pi, x_range=(-2.0, 2.0))

    @classmethod
    def meta_test(cls) -> SineTasks:
        """Meta-test tasks: amplitude U[0.2, 5], phase U[-pi, pi], x in [-5, 5]."""
        return cls(amplitude=(0.2, 5.0), phase=(-math.pi, math.pi), x_range=(-5.0, 5.0))

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw one task."""
        amp = rng.uniform(*self.amplitude)
        phase = rng.uniform(*self.phase)

        def points(n):
            x = rng.uniform(*self.x_range, size=(n, 1)).astype(np.float32)
            return torch.from_numpy(x), torch.from_numpy((amp * np.sin(x + phase)).ravel())

        X, y = points(self.n_points)
        X_val, y_val = (X, y) if self.n_val_points is None else points(int(self.n_val_points))
        extra = {"amplitude": torch.tensor(amp, dtype=torch.float32),
                 "phase": torch.tensor(phase, dtype=torch.float32)}
        return Task(X, y, X_val, y_val, extra)

    def __repr__(self):
        return (f"SineTasks(amplitude={self.amplitude}, phase={self.phase}, "
                f"x_range={self.x_range}, n_points={self.n_points})")


def as_task(item, kind: str = "regression") -> Task:
    """Turn ``(X, y)``, ``(X_train, y_train, X_val, y_val)`` or a Task into a Task."""
    if isinstance(item, Task):
        return item
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 4):
        raise ValueError(
            "each task must be (X, y), (X_train, y_train, X_val, y_val) or a Task, "
            f"got {type(item).__name__}"
        )
    arrays = list(item) if len(item) == 4 else [item[0], item[1], item[0], item[1]]
    X_train, y_train, X_val, y_val = (np.asarray(a) for a in arrays)
    for name, a in zip(("X_train", "y_train", "X_val", "y_val"),
                       (X_train, y_train, X_val, y_val), strict=True):
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError(f"task array {name} contains NaN or infinity")
    for X, y in ((X_train, y_train), (X_val, y_val)):
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(
                f"a task's X must be 2-D with one row per target, got X {X.shape}, y {y.shape}"
            )
    y_dtype = torch.long if kind == "classification" else torch.float32
    return Task(
        torch.as_tensor(X_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=y_dtype),
        torch.as_tensor(X_val, dtype=torch.float32), torch.as_tensor(y_val, dtype=y_dtype), {},
    )


class SupervisedProblem:
    """Regression or classification tasks as a :class:`~sklearn_ml3.meta.MetaProblem`.

    Parameters
    ----------
    tasks : list of Task / array tuples, or a sampler with ``sample(rng)``
    module_factory : callable ``(n_features, n_outputs) -> torch.nn.Module``
        Builds the optimizee.
    kind : {"regression", "classification"}
    task_loss : callable, optional
        ``task_loss(params, task)`` or ``task_loss(params, task, predict)``
        returning a scalar; replaces the default (MSE or cross-entropy on the
        task's validation data). ``predict(X)`` evaluates the updated model.
    extra_loss : callable, optional
        A shaping term with the same signature, added as
        ``L_T = beta * task_loss + gamma * extra_loss``. It may read
        ``task.extra``, which exists only at meta-train time.
    beta, gamma : float
        Weights of the two terms.
    batch_size : int, optional
        Mini-batch size of the inner steps (full batch when None).
    target_scaling : {None, "standard"}
        "standard" trains on targets standardised with each task's training
        mean and std (regression only); estimators then do the same.
    n_classes : int, optional
        Classes of a classification problem (inferred from the tasks).
    """

    def __init__(self, tasks, module_factory, kind="regression", task_loss=None,
                 extra_loss=None, beta=1.0, gamma=1.0, batch_size=None, target_scaling=None,
                 n_classes=None):
        if kind not in ("regression", "classification"):
            raise ValueError(f"a supervised problem is 'regression' or 'classification', "
                             f"not {kind!r}")
        if target_scaling not in (None, "standard"):
            raise ValueError(f"target_scaling must be None or 'standard', got {target_scaling!r}")
        if target_scaling and kind != "regression":
            raise ValueError("target_scaling applies to regression only")
        self.kind = kind
        self.module_factory = module_factory
        self.task_loss_fn = task_loss
        self.extra_loss = extra_loss
        # which user terms take predict(X) as a third argument (decided once, not per step)
        self._takes_predict = {id(fn): len(inspect.signature(fn).parameters) >= 3
                               for fn in (task_loss, extra_loss) if fn is not None}
        self.beta, self.gamma = float(beta), float(gamma)
        self.batch_size = batch_size
        self.target_scaling = target_scaling
        if hasattr(tasks, "sample"):
            self.sampler, self.tasks = tasks, None
        else:
            items = list(tasks)
            if not items:
                raise ValueError("tasks is empty: give at least one task")
            self.sampler, self.tasks = None, [as_task(t, kind) for t in items]
        if kind == "classification" and n_classes is None:
            if self.tasks is None:
                raise ValueError("give n_classes for a classification task sampler")
            n_classes = int(max(int(t.y_train.max()) for t in self.tasks)) + 1
        self.n_classes = n_classes
        self._modules: dict[tuple[int, int], torch.nn.Module] = {}
        self._batch_gen = torch.Generator()
        self._inner_batch_sizes: list[int] = []  # samples per inner step, for describe()

    #: keys of :meth:`describe` measured during a run, not settings of it (checkpoint
    #: fingerprints ignore them)
    observed_keys = ("inner_batch_size",)

    @property
    def vectorizable(self) -> bool:
        if self.batch_size is not None:
            return False
        if self.tasks is None:
            return True
        shapes = {tuple(tuple(a.shape) for a in t[:4]) for t in self.tasks}
        return len(shapes) == 1

    # ---------------------------------------------------------- MetaProblem
    def sample_tasks(self, n, rng):
        self._batch_gen.manual_seed(int(rng.integers(2**31 - 1)))
        if self.sampler is not None:
            tasks = [as_task(self.sampler.sample(rng), self.kind) for _ in range(n)]
        else:
            idx = rng.choice(len(self.tasks), size=n, replace=n > len(self.tasks))
            tasks = [self.tasks[i] for i in idx]
        self._inner_batch_sizes += [min(self.batch_size or len(t.X_train), len(t.X_train))
                                    for t in tasks]
        return [self.prepare(t) for t in tasks]

    def prepare(self, task) -> Task:
        """``task`` (a Task or array tuple) as the optimizee trains on it: one-hot class
        targets, or targets standardised with ``target_scaling="standard"``."""
        task = as_task(task, self.kind)
        if self.kind == "classification":
            onehot = [F.one_hot(y, self.n_classes).float() for y in (task.y_train, task.y_val)]
            return task._replace(y_train=onehot[0], y_val=onehot[1])
        if self.target_scaling == "standard":
            mean, std = task.y_train.mean(), task.y_train.std().clamp_min(1e-8)
            return task._replace(y_train=(task.y_train - mean) / std,
                                 y_val=(task.y_val - mean) / std)
        return task

    def _n_outputs(self, task) -> int:
        if self.kind == "classification":
            return self.n_classes
        return 1 if task.y_train.dim() == 1 else task.y_train.shape[1]

    def _module(self, task) -> torch.nn.Module:
        """The architecture used by ``functional_call`` (its own weights are never used)."""
        return self._modules[(task.X_train.shape[-1], self._n_outputs(task))]

    def init_params(self, task, seed):
        key = (task.X_train.shape[-1], self._n_outputs(task))
        module = build_seeded(lambda: self.module_factory(*key), seed)
        self._modules.setdefault(key, module)
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    def predict(self, params, task, X):
        out = torch.func.functional_call(self._module(task), params, (X,))
        if self.kind == "regression" and task.y_train.dim() == 1:
            out = out.squeeze(-1)
        return out

    def seed_batches(self, seed: int) -> None:
        """Re-seed mini-batch sampling (the meta-test loop does so before every run)."""
        self._batch_gen.manual_seed(int(seed))

    def minibatch(self, task) -> tuple[torch.Tensor, torch.Tensor]:
        """The next inner-step batch ``(X, y)`` of ``task`` (all of it without ``batch_size``)."""
        X, y = task.X_train, task.y_train
        if self.batch_size is not None and self.batch_size < len(X):
            idx = torch.randperm(len(X), generator=self._batch_gen)[: self.batch_size]
            X, y = X[idx], y[idx]
        return X, y

    def loss_inputs(self, params, task):
        X, y = self.minibatch(task)
        out = self.predict(params, task, X)
        if self.kind == "classification":
            return torch.softmax(out, dim=-1), y
        return out, y

    def base_task_loss(self, params, task):
        out = self.predict(params, task, task.X_val)
        if self.kind == "classification":
            return -(task.y_val * torch.log_softmax(out, dim=-1)).sum(-1).mean()
        return F.mse_loss(out, task.y_val)

    def task_loss(self, params, task):
        def call(fn):
            if self._takes_predict[id(fn)]:
                return fn(params, task, lambda X: self.predict(params, task, X))
            return fn(params, task)

        base = self.base_task_loss(params, task) if self.task_loss_fn is None \
            else call(self.task_loss_fn)
        if self.extra_loss is None:
            return base
        return self.beta * base + self.gamma * call(self.extra_loss)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "supervised",
            "kind": self.kind,
            "tasks": repr(self.sampler) if self.sampler is not None else f"{len(self.tasks)} tasks",
            "target_scaling": self.target_scaling,
            "batch_size": self.batch_size,
            # what estimators compare their batch size with (full-batch: the task size)
            "inner_batch_size": (int(np.median(self._inner_batch_sizes))
                                 if self._inner_batch_sizes else None),
            "n_classes": self.n_classes,
            "shaped": self.extra_loss is not None or self.task_loss_fn is not None,
        }


def make_problem(tasks, estimator=None, kind="regression", **options):
    """Build the engine's problem from what :meth:`LearnedLoss.meta_fit` received."""
    from sklearn.base import is_classifier

    from .meta import MetaProblem

    if isinstance(tasks, MetaProblem):
        if options or estimator is not None:
            raise ValueError("a MetaProblem defines its own optimizee and task loss; do not "
                             f"also pass estimator or {sorted(options)}")
        return tasks
    if estimator is None:
        from .estimators import MetaLossClassifier, MetaLossRegressor

        estimator = MetaLossClassifier() if kind == "classification" else MetaLossRegressor()
    if is_classifier(estimator) != (kind == "classification"):
        raise ValueError(f"a {kind} loss needs a matching estimator template, got "
                         f"{type(estimator).__name__}")
    return SupervisedProblem(tasks, estimator._module_factory, kind=kind, **options)


__all__ = ["SineTasks", "SupervisedProblem", "Task", "as_task", "make_problem"]
