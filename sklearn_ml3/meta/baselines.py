"""How hand-written baselines are tuned, and whether a learned loss learned only a step size.

Two rules every comparison of this project follows (PROTOCOLS.md):

- :func:`tune_lr`, **the baseline rule**: the best learning rate of a
  hand-written loss is chosen on validation tasks drawn apart from the
  meta-test tasks, from a x3 grid (1, 3, 10, 30, ...) that is extended until
  the best value is interior, or until the next value diverges (then the
  record says so in ``edge_reason``). The record it returns goes into every
  ``results.json`` unchanged.
- :func:`step_size_diagnostic`, **the step-size control**: on meta-test
  batches, the cosine between the learned loss's gradient and the
  hand-written loss's gradient and the ratio of their norms; a caller then
  runs the hand-written loss at ``lr x ratio``. A learned loss whose
  advantage disappears against that control has learned a step size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..learned_loss import LearnedLoss
from .evaluate import TaskObjective, _training_value, blind, meta_trained_settings
from .optim import torch_optimizer


def mse_loss(y_pred: torch.Tensor, y: torch.Tensor, *unused: torch.Tensor) -> torch.Tensor:
    """Hand-written MSE with the learned loss's call signature (extra inputs ignored)."""
    return torch.nn.functional.mse_loss(y_pred, y)


def log_loss(proba: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Hand-written cross-entropy on a classification learned loss's inputs
    (predicted probabilities and one-hot targets)."""
    return -(onehot * torch.log(proba.clamp_min(1e-30))).sum(-1).mean()


#: How far a grid is extended at most, in x3 steps on each side.
MAX_EXTENSIONS = 6


def _decade_step(lr: float, up: bool) -> float:
    """The neighbour of ``lr`` on the 1-3-10 grid (x3 or x10/3 steps)."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10**exponent
    if up:
        return (3.0 if mantissa < 2 else 10 / 3) * lr
    return lr / (3.0 if mantissa > 2 else 10 / 3)


def _clean(lr: float) -> float:
    return float(f"{lr:.6g}")


def tune_lr(score: Callable[[float], float], lr_grid: Sequence[float], *, name: str,
            selected_on: str, lower_is_better: bool = True,
            max_extensions: int = MAX_EXTENSIONS) -> dict[str, Any]:
    """Pick a hand-written loss's learning rate by the baseline rule.

    Parameters
    ----------
    score : callable ``lr -> float``
        The baseline's score at ``lr`` on the validation tasks (never the
        meta-test tasks); NaN or infinity means training diverged.
    lr_grid : sequence of float
        Starting grid (positive; x3 steps such as ``1e-3, 3e-3, 1e-2``).
    name : str
        The baseline's name in the record.
    selected_on : str
        What the validation tasks are (recorded, e.g. ``"validation
        frequencies drawn from their own seed stream"``).
    lower_is_better : bool, default=True
    max_extensions : int, default=6
        Extension steps allowed on each side.

    Returns
    -------
    record : dict
        ``name``, ``lr_grid`` (every lr evaluated, sorted), ``scores``
        (``{lr: score}``), ``best_lr``, ``selected_on``, ``lower_is_better``
        and ``edge_reason`` (None when the best lr is interior, else why the
        grid stopped there).

    Raises
    ------
    ValueError
        If the grid is empty or not positive, or every lr diverged.
    """
    grid = sorted({_clean(float(v)) for v in lr_grid})
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"lr_grid must hold positive numbers, got {list(lr_grid)}")
    scores: dict[float, float] = {}

    def evaluate(lr):
        if lr not in scores:
            value = float(score(lr))
            scores[lr] = value if math.isfinite(value) else math.inf * (1 if lower_is_better
                                                                        else -1)
        return scores[lr]

    for lr in grid:
        evaluate(lr)
    sign = 1.0 if lower_is_better else -1.0

    def best_lr():
        finite = [lr for lr in scores if math.isfinite(scores[lr])]
        if not finite:
            raise ValueError(f"{name}: every learning rate of {sorted(scores)} diverged")
        return min(finite, key=lambda lr: (sign * scores[lr], lr))

    edge_reason = None
    extensions = {True: 0, False: 0}
    while True:
        best, evaluated = best_lr(), sorted(scores)
        if evaluated[0] < best < evaluated[-1]:
            break
        up = best == evaluated[-1]  # a one-value grid is extended upwards first
        if extensions[up] >= max_extensions:
            edge_reason = (f"best lr still at the {'top' if up else 'bottom'} edge after "
                           f"{max_extensions} extensions")
            break
        extensions[up] += 1
        nxt = _clean(_decade_step(best, up))
        if not math.isfinite(evaluate(nxt)):
            edge_reason = f"the next value, lr {nxt:g}, diverged"
            break
    best = best_lr()
    return {
        "name": name,
        "lr_grid": sorted(scores),
        "scores": {f"{lr:g}": scores[lr] for lr in sorted(scores)},
        "best_lr": best,
        "selected_on": selected_on,
        "lower_is_better": bool(lower_is_better),
        "edge_reason": edge_reason,
    }


def compare_paired(learned, other, *, lower_is_better: bool) -> str:
    """``"better"``, ``"tie"`` or ``"worse"``: ``learned`` against ``other``, run by run.

    ``learned`` and ``other`` hold one score per run (seed, or task and seed)
    in the same order, so the runs are paired. The learned loss is better or
    worse when the mean paired difference is more than two standard errors
    of the differences from zero, else it is a tie. A diverged run (NaN or
    infinity) counts as the worst possible score.
    """
    learned = np.asarray(learned, dtype=float)
    other = np.asarray(other, dtype=float)
    if learned.shape != other.shape or learned.ndim != 1 or len(learned) == 0:
        raise ValueError(f"need two equal-length 1-D score lists, got shapes {learned.shape} "
                         f"and {other.shape}")
    sign = -1.0 if lower_is_better else 1.0
    learned, other = (np.where(np.isfinite(v), v, -sign * np.inf) for v in (learned, other))
    diff = sign * (learned - other)
    if not np.all(np.isfinite(diff)):
        finite = np.isfinite(learned).all(), np.isfinite(other).all()
        return "tie" if finite[0] == finite[1] else ("better" if finite[0] else "worse")
    standard_error = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
    if abs(diff.mean()) <= 2 * standard_error:
        return "tie"
    return "better" if diff.mean() > 0 else "worse"


def untrained_control(loss, random_state: int = 0):
    """The same loss network before meta-training, with the same recorded settings.

    The control of a policy-loss comparison: the same architecture, input
    standardisation and inner optimizer and lr (``meta_info_``), freshly
    initialised with ``random_state``. What a meta-trained loss does beyond it
    is what meta-training learned.
    """
    control = LearnedLoss(**loss.get_config(), random_state=random_state)
    control.meta_info_ = dict(loss.meta_info_)
    return control


def _flat_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                      for g, p in zip(grads, params, strict=True)])


def step_size_diagnostic(problem, learned, handwritten, tasks: Sequence[Any], *,
                         n_updates: int, init_seeds, lr: float | None = None,
                         optimizer: str | None = None) -> dict[str, Any]:
    """Compare the learned loss's gradient with a hand-written loss's on meta-test batches.

    Follows the learned loss's own meta-test training (fresh optimizees,
    ``n_updates`` steps with its optimizer and lr) and, before every update,
    computes both losses on the *same* loss inputs (the same mini-batch).

    Parameters
    ----------
    problem : object
        As for :func:`~sklearn_ml3.meta.evaluate.meta_test` (``init_params``,
        ``loss_inputs``, optional ``seed_batches``).
    learned : LearnedLoss
    handwritten : callable or TaskObjective
        The hand-written loss on the same inputs, e.g. MSE on ``(y_pred, y)``,
        or the task loss itself as a
        :class:`~sklearn_ml3.meta.evaluate.TaskObjective` (the shaping
        experiments' baseline).
    tasks : sequence
        Meta-test tasks (blinded here). A batched task (``problem.batch``)
        is one point per update: its cosine is over the stacked gradient of
        all its policies.
    n_updates : int
    init_seeds : array-like of int, shape (n_runs, n_tasks)
    lr, optimizer : optional
        Default: what ``learned`` was meta-trained with.

    Returns
    -------
    dict
        ``cosine`` and ``norm_ratio`` (``|grad learned| / |grad hand-written|``),
        each as ``{"mean", "std", "per_run"}`` over runs (a run's value is the
        mean over its tasks and updates; the ratio is averaged in log space),
        ``n_points`` and ``control_lr_factor``: the ratio by which to multiply
        the hand-written loss's lr for the control run.
    """
    trained_optimizer, trained_lr = meta_trained_settings(learned)
    optimizer = optimizer or trained_optimizer
    lr = trained_lr if lr is None else float(lr)
    if optimizer is None or lr is None:
        raise ValueError("pass optimizer= and lr= for a loss without a meta-training record")
    seeds = np.atleast_2d(np.asarray(init_seeds, dtype=np.int64))
    tasks = list(tasks)
    seed_batches = getattr(problem, "seed_batches", None)
    cos_runs, log_ratio_runs, n_points = [], [], 0
    for run_seeds in seeds:
        cosines, log_ratios = [], []
        for task, seed in zip(tasks, run_seeds, strict=True):
            if seed_batches is not None:
                seed_batches(int(seed))
            hidden = blind(task)
            params = {k: v.detach().clone().requires_grad_()
                      for k, v in problem.init_params(hidden, int(seed)).items()}
            names = list(params)
            opt = torch_optimizer(optimizer, [params[k] for k in names], lr)
            for _ in range(int(n_updates)):
                value_learned, value_hand = _both_values(problem, learned, handwritten,
                                                         params, hidden)
                g_hand = _flat_grad(value_hand, [params[k] for k in names])
                g_learned = _flat_grad(value_learned, [params[k] for k in names])
                n_hand, n_learned = float(g_hand.norm()), float(g_learned.norm())
                if n_hand > 0 and n_learned > 0 and math.isfinite(n_hand * n_learned):
                    cosine = float(g_hand @ g_learned) / (n_hand * n_learned)
                    cosines.append(max(-1.0, min(1.0, cosine)))
                    log_ratios.append(math.log(n_learned / n_hand))
                for k, g in zip(names, _unflatten(g_learned, params, names), strict=True):
                    params[k].grad = g
                opt.step()
        n_points += len(cosines)
        cos_runs.append(float(np.mean(cosines)) if cosines else math.nan)
        log_ratio_runs.append(float(np.mean(log_ratios)) if log_ratios else math.nan)
    ratio_runs = np.exp(log_ratio_runs)
    return {
        "cosine": _summary(cos_runs),
        "norm_ratio": _summary(ratio_runs),
        "n_points": n_points,
        "control_lr_factor": float(np.exp(np.nanmean(log_ratio_runs))),
        "optimizer": optimizer,
        "lr": lr,
    }


def _both_values(problem, learned, handwritten, params, task):
    """Both losses at ``params``; on the same mini-batch where the problem draws one."""
    if isinstance(handwritten, TaskObjective) or hasattr(problem, "apply_loss"):
        # a task objective reads the task, and apply_loss problems have deterministic inputs
        return (_training_value(problem, learned, params, task),
                _training_value(problem, handwritten, params, task))
    inputs = problem.loss_inputs(params, task)
    return learned(*inputs), handwritten(*inputs)


def _unflatten(flat: torch.Tensor, params: dict, names: list[str]) -> list[torch.Tensor]:
    out, start = [], 0
    for k in names:
        n = params[k].numel()
        out.append(flat[start:start + n].view_as(params[k]).detach())
        start += n
    return out


def _summary(values) -> dict[str, Any]:
    values = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values)),
            "per_run": values.tolist()}


__all__ = ["MAX_EXTENSIONS", "compare_paired", "log_loss", "mse_loss", "step_size_diagnostic",
           "tune_lr", "untrained_control"]
