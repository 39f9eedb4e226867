"""The one meta-test loop: train fresh optimizees with a frozen loss, record metric curves.

Meta-*training* (:func:`~sklearn_ml3.meta.meta_train`) may read everything a
task carries, including the meta-train-only ``task.extra``. Meta-*test* may
not: :func:`meta_test` hands the loss and the problem a copy of each task
whose ``extra`` is :class:`MetaTrainOnly`, a mapping that raises on any read,
so a meta-test that leaks shaping information fails loudly instead of
silently looking better. Only the evaluation ``metric`` sees the real task
(an evaluation may compare with the true frequency; training may not).

Unless the caller overrides them, the optimizer and learning rate are the
ones the loss was meta-trained with (``loss.meta_info_["inner_optimizer"]``
and ``["inner_lr"]``): a loss is a loss *for* an optimizer and step size.

What a problem must provide here is a subset of
:class:`~sklearn_ml3.meta.MetaProblem`: ``init_params(task, seed)`` and
``loss_inputs(params, task)``. Two optional hooks:

- ``apply_loss(loss, params, task)``: for problems whose task is a batch of
  optimizees trained together (stacked parameters, e.g. one policy per goal);
  returns the scalar to differentiate instead of ``loss(*loss_inputs(...))``;
- ``seed_batches(seed)``: re-seeds mini-batch sampling at the start of each
  run, so that a run is reproducible on its own.

Hand-written losses written on the parameters rather than on the loss
inputs (a task loss through known dynamics, say) are wrapped in
:class:`TaskObjective`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .optim import torch_optimizer

Params = dict[str, torch.Tensor]


class MetaTrainOnly(Mapping):
    """Stands in for ``task.extra`` at meta-test time: every read raises.

    Meta-train-only information (true parameters, mass matrices, expert
    demonstrations) must never reach a meta-test run; a read means the
    experiment leaks it.
    """

    def _refuse(self, what: str):
        raise RuntimeError(
            f"meta-test {what} task.extra, which holds meta-train-only information; a "
            "meta-test loss, problem or objective must not depend on it (only the "
            "evaluation metric may)"
        )

    def __getitem__(self, key):
        self._refuse(f"read [{key!r}] of")

    def __iter__(self):
        self._refuse("iterated over")

    def __len__(self):
        self._refuse("asked for the length of")

    def __repr__(self) -> str:
        return "MetaTrainOnly()"


def blind(task: Any) -> Any:
    """``task`` with its ``extra`` replaced by :class:`MetaTrainOnly` (tasks without one as is)."""
    if hasattr(task, "extra") and hasattr(task, "_replace"):
        return task._replace(extra=MetaTrainOnly())
    return task


class TaskObjective:
    """A hand-written loss on the optimizee's parameters: ``fn(params, task) -> scalar``.

    For objectives that are not a function of the learned loss's inputs,
    e.g. the final distance to a goal through known or learned dynamics.
    ``fn`` receives the blinded task (no ``extra``).
    """

    def __init__(self, fn: Callable[[Params, Any], torch.Tensor], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "objective")

    def __call__(self, params: Params, task: Any) -> torch.Tensor:
        return self.fn(params, task)

    def __repr__(self) -> str:
        return f"TaskObjective({self.name})"


def meta_trained_settings(loss) -> tuple[str | None, float | None]:
    """The inner optimizer and learning rate a loss was meta-trained with (None if unknown)."""
    info = getattr(loss, "meta_info_", None) or {}
    lr = info.get("inner_lr")
    return info.get("inner_optimizer"), None if lr is None else float(lr)


def evaluation_steps(n_updates: int, eval_every: int) -> np.ndarray:
    """``0, eval_every, 2 * eval_every, ...`` and always ``n_updates``."""
    if int(n_updates) < 0:
        raise ValueError(f"n_updates must be non-negative, got {n_updates}")
    if int(eval_every) < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    steps = list(range(0, int(n_updates) + 1, int(eval_every)))
    if steps[-1] != int(n_updates):
        steps.append(int(n_updates))
    return np.asarray(steps)


@dataclass
class MetaTestCurves:
    """What :func:`meta_test` returns.

    Attributes
    ----------
    steps : ndarray of shape (n_evaluations,)
        Number of updates at each evaluation.
    curves : ndarray of shape (n_runs, n_tasks, n_evaluations, ...)
        The metric (trailing axes: the metric's own shape, e.g. one value per
        goal of a batched task).
    lr : float
    optimizer : str
    params : list of list of dict
        Final parameters per run and task (empty unless ``keep_params``).
    """

    steps: np.ndarray
    curves: np.ndarray
    lr: float
    optimizer: str
    params: list = field(default_factory=list)

    def per_run(self) -> np.ndarray:
        """Curves averaged over tasks (and any trailing metric axes): (n_runs, n_evaluations)."""
        c = self.curves
        return c.reshape(c.shape[0], c.shape[1], c.shape[2], -1).mean(axis=(1, 3))

    def final(self) -> np.ndarray:
        """The last evaluation of every run and task: (n_runs, n_tasks, ...)."""
        return self.curves[:, :, -1]


def _training_value(problem, loss, params: Params, task) -> torch.Tensor:
    if isinstance(loss, TaskObjective):
        return loss(params, task)
    apply = getattr(problem, "apply_loss", None)
    if apply is not None:
        return apply(loss, params, task)
    return loss(*problem.loss_inputs(params, task))


def _as_init_seeds(init_seeds, n_tasks: int) -> np.ndarray:
    if init_seeds is None:
        return np.arange(n_tasks)[None]
    seeds = np.asarray(init_seeds, dtype=np.int64)
    if seeds.ndim == 1:
        seeds = seeds[None]
    if seeds.ndim != 2 or seeds.shape[1] != n_tasks:
        raise ValueError(f"init_seeds must have shape (n_runs, {n_tasks}) (one seed per run "
                         f"and task), got {np.shape(init_seeds)}")
    return seeds


def _train_one(problem, loss, task, seed: int, init, optimizer: str, lr: float,
               n_updates: int, evaluate_at: set, metric) -> tuple[np.ndarray, Params]:
    """One fresh optimizee trained on the blinded ``task``; the metric sees the real one."""
    seed_batches = getattr(problem, "seed_batches", None)
    if seed_batches is not None:
        seed_batches(seed)
    hidden = blind(task)
    params = {k: v.detach().clone().requires_grad_() for k, v in init(hidden, seed).items()}
    opt = torch_optimizer(optimizer, list(params.values()), lr)

    def measure():
        with torch.no_grad():
            return np.asarray(torch.as_tensor(metric(params, task)).detach(), dtype=np.float64)

    curve = [measure()]
    tensors = list(params.values())
    for step in range(1, int(n_updates) + 1):
        # gradients w.r.t. the optimizee only: the loss's own parameters stay untouched
        grads = torch.autograd.grad(_training_value(problem, loss, params, hidden), tensors,
                                    allow_unused=True)
        for p, g in zip(tensors, grads, strict=True):
            p.grad = g
        opt.step()
        if step in evaluate_at:
            curve.append(measure())
    return np.stack(curve), {k: v.detach().clone() for k, v in params.items()}


def meta_test(problem, loss, tasks: Sequence[Any], *, n_updates: int,
              metric: Callable[[Params, Any], Any], init_seeds=None, lr: float | None = None,
              optimizer: str | None = None, eval_every: int = 1,
              init_params: Callable[[Any, int], Params] | None = None,
              keep_params: bool = False) -> MetaTestCurves:
    """Train fresh optimizees on ``tasks`` with ``loss`` alone and record ``metric``.

    Parameters
    ----------
    problem : object
        Provides ``init_params(task, seed)`` and ``loss_inputs(params, task)``
        (and optionally ``apply_loss`` and ``seed_batches``, see the module).
    loss : LearnedLoss, callable or TaskObjective
        A learned loss or a hand-written one, called on
        ``problem.loss_inputs(params, task)``; a :class:`TaskObjective` is
        called on ``(params, task)``.
    tasks : sequence
        Meta-test tasks. Training sees them blinded (:func:`blind`).
    n_updates : int
        Optimizer steps per run.
    metric : callable ``(params, task) -> scalar or array``
        Evaluated (without gradients) before training and at each evaluation
        step, on the real task: the only place that may read ``task.extra``.
    init_seeds : array-like of int, shape (n_runs, n_tasks) or (n_tasks,), optional
        Seed of each optimizee initialisation (default: one run, seeds
        ``0..n_tasks-1``).
    lr, optimizer : float and {"sgd", "momentum", "adam"}, optional
        Default: what ``loss`` was meta-trained with; required for a loss
        without that record.
    eval_every : int, default=1
        Evaluate every ``eval_every`` updates (and after the last).
    init_params : callable ``(task, seed) -> params``, optional
        Replaces ``problem.init_params`` (e.g. a fixed warm start).
    keep_params : bool, default=False
        Keep the final parameters of every run.

    Returns
    -------
    MetaTestCurves
    """
    trained_optimizer, trained_lr = meta_trained_settings(loss)
    optimizer = optimizer or trained_optimizer
    lr = trained_lr if lr is None else float(lr)
    if optimizer is None or lr is None:
        raise ValueError(
            f"{loss!r} has no record of the optimizer and lr it was meta-trained with; "
            "pass optimizer= and lr="
        )
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    steps = evaluation_steps(n_updates, eval_every)
    evaluate_at = set(steps.tolist())
    tasks = list(tasks)
    seeds = _as_init_seeds(init_seeds, len(tasks))
    init = problem.init_params if init_params is None else init_params
    curves, final_params = [], []
    for run_seeds in seeds:
        runs = [_train_one(problem, loss, task, int(seed), init, optimizer, lr, n_updates,
                           evaluate_at, metric) for task, seed in zip(tasks, run_seeds,
                                                                      strict=True)]
        curves.append(np.stack([curve for curve, _ in runs]))
        if keep_params:
            final_params.append([params for _, params in runs])
    return MetaTestCurves(steps, np.stack(curves), lr, optimizer,
                          final_params if keep_params else [])


__all__ = [
    "MetaTestCurves",
    "MetaTrainOnly",
    "TaskObjective",
    "blind",
    "evaluation_steps",
    "meta_test",
    "meta_trained_settings",
]
