"""The sine-regression protocol (paper IV-A.1): meta-train, evaluate, report.

Shared by ``ml3 demo`` (one seed) and ``benchmarks/sine_regression.py``
(five seeds). Evaluation trains fresh MLPs through the one meta-test loop,
:func:`sklearn_ml3.meta.meta_test`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..learned_loss import LearnedLoss
from ..meta import meta_test, step_size_diagnostic, tune_lr
from ..meta.baselines import mse_loss
from ..networks import make_mlp
from ..tasks import SineTasks, SupervisedProblem, Task
from .harness import (
    CurvePanel,
    SeedStreams,
    baseline_lines,
    stats,
    step_size_lines,
    write_results,
)

BENCHMARK = "sine_regression"
HIDDEN = (100, 10)
LR = 1e-3
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
REPORT_STEPS = (0, 10, 50, 100)
#: Meta-training settings of the shipped protocol: the paper's practical scheme
#: (phi updated after every inner step, optimizees re-initialised every 20
#: steps), 4 optimizee initialisations per meta-gradient (vmap), and target
#: scaling (y standardised with the training set's mean and std, the same at
#: meta-train and meta-test). A one-step horizon (the authors' code) learns a
#: greedy loss that gets worse the longer it is meta-trained; see the docs.
META = {"n_meta_iter": 2000, "inner_steps": 20, "tasks_per_iter": 4, "meta_lr": 1e-3,
        "target_scaling": "standard"}
#: The authors' budget, used to compare meta-training speed on equal work.
AUTHORS_BUDGET = {"n_meta_iter": 500, "inner_steps": 1, "tasks_per_iter": 1,
                  "target_scaling": None}
#: Published numbers of the authors' code on this machine type (PROTOCOLS.md).
REFERENCE = {"authors_learned_loss_k100": 2.26, "mse_best_lr_k100": 1.51, "authors_cpu_s": 150.0}


def meta_train_sine_loss(seed: int, n_meta_iter: int | None = None, verbose: int = 0,
                         **overrides) -> LearnedLoss:
    """Meta-train the protocol's loss: one task ``sin(x - pi)``, MLP 1-100-10-1, SGD lr 1e-3."""
    from ..estimators import MetaLossRegressor

    options = {**META, **overrides}
    if n_meta_iter is not None:
        options["n_meta_iter"] = n_meta_iter
    template = MetaLossRegressor(hidden_layer_sizes=HIDDEN, lr=LR, solver="sgd", batch_size=None)
    loss = LearnedLoss(kind="regression", hidden_layer_sizes=(50, 50), activation="relu",
                       bias=False, output="softplus", random_state=seed)
    return loss.meta_fit(SineTasks.meta_train(), estimator=template, random_state=seed,
                         verbose=verbose, **options)


def sample_test_tasks(seed: int, n_tasks: int = 10, n_test_points: int = 1000,
                      stream: str = "meta_test") -> list[Task]:
    """Unseen tasks: amplitude U[0.2, 5], phase U[-pi, pi], x U[-5, 5]; 100 training points.

    The metric is measured on ``n_test_points`` fresh points of the same task.
    ``stream="validation"`` draws the baseline rule's validation tasks from
    their own stream (:class:`~sklearn_ml3.experiments.harness.SeedStreams`).
    """
    sampler = SineTasks(amplitude=(0.2, 5.0), phase=(-np.pi, np.pi), x_range=(-5.0, 5.0),
                        n_points=100, n_val_points=n_test_points)
    rng = SeedStreams(seed, BENCHMARK).rng(stream)
    return [sampler.sample(rng) for _ in range(n_tasks)]


#: The optimizee of the protocol as a problem for the meta-test loop. Its tasks
#: are prepared by :func:`_training_task`; the sampler only names the family.
OPTIMIZEE = SupervisedProblem(SineTasks.meta_test(),
                              lambda n_in, n_out: make_mlp(n_in, HIDDEN, n_out))


def _training_task(task: Task, standardize: bool) -> Task:
    """``task`` with training targets standardised (or not) and the scaling kept, for the
    metric only, in ``extra``; test targets stay in their own units."""
    shift, scale = (task.y_train.mean(), task.y_train.std()) if standardize else \
        (torch.tensor(0.0), torch.tensor(1.0))
    return Task(task.X_train, (task.y_train - shift) / scale, task.X_val, task.y_val,
                {"shift": shift, "scale": scale})


def heldout_mse(params, task: Task) -> torch.Tensor:
    """MSE on the task's test points, predictions mapped back to the targets' units."""
    pred = OPTIMIZEE.predict(params, task, task.X_val) * task.extra["scale"] + task.extra["shift"]
    return ((pred - task.y_val) ** 2).mean()


def heldout_curves(loss: LearnedLoss | str, tasks: list[Task], lr: float, n_steps: int = 100,
                   init_seeds=None, standardize: bool | None = None) -> np.ndarray:
    """Test MSE after 0..n_steps full-batch SGD steps of a fresh MLP on each task.

    Parameters
    ----------
    loss : LearnedLoss or "squared_error"
    init_seeds : sequence of int, optional
        MLP initialisation of each task (default ``0..n_tasks-1``).
    standardize : bool, optional
        Train on standardised targets (predictions are unscaled for the
        metric). Defaults to what the learned loss was meta-trained with, and
        to False for "squared_error".

    Returns
    -------
    ndarray of shape (n_tasks, n_steps + 1)
    """
    if standardize is None:
        standardize = isinstance(loss, LearnedLoss) and \
            loss.meta_info_.get("problem", {}).get("target_scaling") == "standard"
    result = meta_test(OPTIMIZEE, mse_loss if isinstance(loss, str) else loss,
                       [_training_task(t, standardize) for t in tasks], n_updates=n_steps,
                       metric=heldout_mse, init_seeds=init_seeds, lr=lr, optimizer="sgd")
    return result.curves[0]


def mean_test_curve(loss, tasks, lr, n_steps, seed, standardize=None) -> np.ndarray:
    """:func:`heldout_curves` averaged over ``tasks``, the MLPs initialised from the ``init``
    stream of ``seed``; ``inf`` where training diverged."""
    init = SeedStreams(seed, BENCHMARK).ints("init", len(tasks))
    curve = heldout_curves(loss, tasks, lr, n_steps, init, standardize).mean(axis=0)
    return np.where(np.isfinite(curve), curve, np.inf)


def run_seed(seed: int, streams: SeedStreams, *, n_test_tasks: int = 10,
             n_meta_iter: int | None = None, lr_grid=LR_GRID, n_steps: int = 100,
             time_budget: bool = True, meta_overrides: dict[str, Any] | None = None,
             loss_path: str | Path | None = None, verbose: int = 0) -> dict[str, Any]:
    """One seed of the protocol: meta-train, then :func:`evaluate_loss` (tuned baselines,
    meta-test, step-size diagnostic)."""
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    loss = meta_train_sine_loss(streams.seed_of("meta_train"), n_meta_iter=n_meta_iter,
                                verbose=verbose, **(meta_overrides or {}))
    meta = {"wall": time.perf_counter() - t_wall, "cpu": time.process_time() - t_cpu,
            "n_meta_iter": len(loss.meta_history_)}
    if loss_path is not None:
        loss.save(loss_path)
    if time_budget:
        meta["authors_budget_cpu"] = time_authors_budget(streams.seed_of("meta_train"))
    return {**evaluate_loss(loss, streams, n_test_tasks=n_test_tasks, lr_grid=lr_grid,
                            n_steps=n_steps), "meta_training": meta}


def evaluate_loss(loss: LearnedLoss, streams: SeedStreams, *, n_test_tasks: int = 10,
                  lr_grid=LR_GRID, n_steps: int = 100, progress=None) -> dict[str, Any]:
    """Meta-test a sine loss on one seed's unseen tasks against tuned MSE baselines.

    Curves are test MSE per step, averaged over the seed's ``n_test_tasks``
    unseen tasks. Baselines (MSE on raw and on standardised targets) are run
    at the learned loss's lr and at the best lr of :func:`~sklearn_ml3.meta.tune_lr`
    on validation tasks from their own stream. The step-size diagnostic
    compares the learned loss's gradient with MSE's on standardised targets
    (what the learned loss sees) and runs that MSE at ``lr x norm ratio``.
    ``progress`` (e.g. a ``tqdm`` bar of total 6) is updated after each of the
    six stages.

    Returns
    -------
    dict
        ``curves`` (method -> mean curve, ``inf`` where training diverged),
        ``baselines`` (:func:`~sklearn_ml3.meta.tune_lr` records) and
        ``step_size`` (:func:`~sklearn_ml3.meta.step_size_diagnostic`).
    """
    seed = streams.seed
    tasks = sample_test_tasks(seed, n_test_tasks)
    validation = sample_test_tasks(seed, n_test_tasks, stream="validation")
    init = streams.ints("init", 2 * n_test_tasks)
    test_init, val_init = init[:n_test_tasks], init[n_test_tasks:]

    def mean_curve(which, lr, standardize=None):
        return heldout_curves(which, tasks, lr, n_steps, test_init, standardize).mean(0)

    tick = progress.update if progress is not None else lambda n: None
    curves = {"learned": mean_curve(loss, LR)}
    tick(1)
    baselines = []
    for name, standardize in (("mse", False), ("mse_standardized", True)):
        record = tune_lr(
            lambda lr, s=standardize: heldout_curves("squared_error", validation, lr, n_steps,
                                                     val_init, s)[:, -1].mean(),
            lr_grid, name=name, selected_on=f"{n_test_tasks} validation sine tasks (own "
            "seed stream), test MSE after the last step")
        baselines.append(record)
        curves[f"{name} (same lr)"] = mean_curve("squared_error", LR, standardize)
        curves[f"{name} (best lr)"] = mean_curve("squared_error", record["best_lr"], standardize)
        tick(2)
    step_size = step_size_diagnostic(OPTIMIZEE, loss, mse_loss,
                                     [_training_task(t, True) for t in tasks],
                                     n_updates=n_steps, init_seeds=[test_init], lr=LR,
                                     optimizer="sgd")
    curves["mse_standardized (step-size control)"] = mean_curve(
        "squared_error", LR * step_size["control_lr_factor"], True)
    tick(1)
    return {"curves": {k: np.where(np.isfinite(v), v, np.inf) for k, v in curves.items()},
            "baselines": baselines, "step_size": step_size}


def run_protocol(seeds=(0, 1, 2, 3, 4), n_test_tasks: int = 10, n_meta_iter: int | None = None,
                 lr_grid=LR_GRID, n_steps: int = 100, out_dir: str | Path | None = None,
                 verbose: int = 1, time_budget: bool = True,
                 meta_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Meta-train one loss per seed and compare it with MSE on unseen tasks (no cache).

    ``benchmarks/sine_regression.py`` runs the same :func:`run_seed` through
    the harness (cached, resumable); ``ml3 demo`` calls this. ``meta_overrides``
    replaces entries of :data:`META` (ablations such as ``{"inner_steps": 1}``).
    With ``time_budget`` each seed also meta-trains once with the authors'
    budget (500 one-step iterations) to measure speed on equal work.

    Returns
    -------
    results : dict
        JSON-able; also written to ``out_dir`` (results.json, figures,
        report.md) when given.
    """
    out = None if out_dir is None else Path(out_dir)
    runs = []
    for seed in tqdm(seeds, desc="seeds", disable=not verbose):
        loss_path = None if out is None else out / "runs" / f"loss_seed{seed}.ml3"
        if loss_path is not None:
            loss_path.parent.mkdir(parents=True, exist_ok=True)
        runs.append({"seed": seed, **run_seed(
            seed, SeedStreams(seed, BENCHMARK), n_test_tasks=n_test_tasks,
            n_meta_iter=n_meta_iter, lr_grid=lr_grid, n_steps=n_steps, time_budget=time_budget,
            meta_overrides=meta_overrides, loss_path=loss_path)})
    results = summarise(runs, n_test_tasks, n_steps, meta_overrides or {})
    if out is not None:
        write_outputs(results, runs, out, seeds=list(seeds))
    return results


def time_authors_budget(seed: int) -> float:
    """CPU seconds to meta-train with the authors' budget (500 one-step iterations)."""
    start = time.process_time()
    meta_train_sine_loss(seed, **AUTHORS_BUDGET)
    return time.process_time() - start


def summarise(runs: list[dict], n_test_tasks: int, n_steps: int,
              meta_overrides: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over seeds of every method's curve at the report steps, and the verdict."""
    steps = [k for k in REPORT_STEPS if k <= n_steps]
    names = list(runs[0]["curves"])
    table = {name: {f"k={k}": stats([r["curves"][name][k] for r in runs]) for k in steps}
             for name in names}
    final = f"k={steps[-1]}"
    learned = table["learned"][final]
    meta = [r["meta_training"] for r in runs]
    budget = [m["authors_budget_cpu"] for m in meta if "authors_budget_cpu" in m]
    step_size = {"learned": {
        "cosine": stats([r["step_size"]["cosine"]["mean"] for r in runs]),
        "norm_ratio": stats([r["step_size"]["norm_ratio"]["mean"] for r in runs]),
        "n_points": sum(r["step_size"]["n_points"] for r in runs),
        "against": "mse_standardized", "control": "mse_standardized (step-size control)"}}
    results = {
        "protocol": "sine regression (PROTOCOLS.md section 1)",
        "n_test_tasks": n_test_tasks,
        "n_steps": n_steps,
        "meta_training": {**META, **meta_overrides, "n_meta_iter": meta[0]["n_meta_iter"],
                          "cpu_s": stats([m["cpu"] for m in meta]),
                          "wall_s": stats([m["wall"] for m in meta]),
                          "cpu_s_total": float(np.sum([m["cpu"] for m in meta]))},
        "authors_budget": {**AUTHORS_BUDGET, **({
            "cpu_s_per_seed": stats(budget),
            "speedup_vs_authors_cpu": REFERENCE["authors_cpu_s"] / 5 / float(np.mean(budget))}
            if budget else {})},
        "test_mse": table,
        "baselines": [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]],
        "step_size": step_size,
        "verdict": {
            "learned_below_authors_2.26": learned["mean"] < REFERENCE["authors_learned_loss_k100"],
            "learned_below_best_mse": learned["mean"] < table["mse (best lr)"][final]["mean"],
            "learned_below_best_standardized_mse":
                learned["mean"] < table["mse_standardized (best lr)"][final]["mean"],
            "learned_below_step_size_control":
                learned["mean"] < table["mse_standardized (step-size control)"][final]["mean"],
        },
        "headline": [{
            "experiment": f"sine regression, test MSE after {steps[-1]} steps",
            "metric": "test MSE", "lower_is_better": True,
            "learned": learned, "same_lr": table["mse (same lr)"][final],
            "best_lr": table["mse (best lr)"][final],
            "note": "best lr with the same target scaling: "
                    f"{table['mse_standardized (best lr)'][final]['mean']:.3g}",
            "step_size_control": table["mse_standardized (step-size control)"][final],
            "cosine": step_size["learned"]["cosine"]}],
        "reference": REFERENCE,
    }
    return results


def format_table(results: dict[str, Any]) -> str:
    """Markdown table of test MSE (mean ± std over seeds) at the report steps."""
    table = results["test_mse"]
    steps = list(next(iter(table.values())))
    many = len(results.get("seeds", [0, 1])) > 1  # a spread over one seed would read as certainty
    rows = ["| method | " + " | ".join(steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name, cells in table.items():
        label = f"learned loss, lr {LR:g}" if name == "learned" else name
        rows.append(f"| {label} | " + " | ".join(
            f"{cells[s]['mean']:.3f}" + (f" ± {cells[s]['std']:.3f}" if many else "")
            for s in steps) + " |")
    return "\n".join(rows)


def write_outputs(results: dict, runs: list[dict], out_dir: Path, seeds: list[int]) -> dict:
    """results.json, report.md, curves.png and landscape.png (seed 0's loss) under ``out_dir``."""
    results = {**results, "seeds": seeds}
    meta = results["meta_training"]
    report = [
        "# Sine regression", "",
        f"{len(seeds)} seeds x {results['n_test_tasks']} unseen tasks, "
        f"{results['n_steps']} full-batch SGD steps; test MSE on 1000 fresh points per task.",
        "", format_table(results), "",
        f"Meta-training: {meta['n_meta_iter']} iterations per seed, "
        f"{meta['cpu_s']['mean']:.1f} ± {meta['cpu_s']['std']:.1f} s CPU per seed "
        f"({meta['cpu_s_total']:.1f} s in all, {torch.get_num_threads()} torch thread(s)).",
    ]
    budget = results["authors_budget"]
    if "cpu_s_per_seed" in budget:
        report.append(
            f"On the authors' budget (500 one-step iterations) meta-training takes "
            f"{budget['cpu_s_per_seed']['mean']:.2f} s CPU per seed, "
            f"{budget['speedup_vs_authors_cpu']:.1f}x faster than their ~30 s.")
    final = f"k={results['n_steps']}"
    report += ["", "Tuned baselines (the baseline rule):", *baseline_lines(results["baselines"]),
               "", "Step-size diagnostic (learned loss vs MSE on standardised targets):",
               *step_size_lines("learned loss", {
                   "cosine": results["step_size"]["learned"]["cosine"],
                   "norm_ratio": results["step_size"]["learned"]["norm_ratio"],
                   "n_points": results["step_size"]["learned"]["n_points"]},
                   results["test_mse"]["mse_standardized (step-size control)"][final],
                   results["test_mse"]["learned"][final], f"test MSE at {final}"),
               "", "Verdict: " + ", ".join(f"{k}={v}" for k, v in results["verdict"].items())]
    steps = np.arange(results["n_steps"] + 1)
    shown = ["learned", "mse (same lr)", "mse (best lr)", "mse_standardized (best lr)",
             "mse_standardized (step-size control)"]
    panel = CurvePanel("Sine regression: learned loss vs MSE", "SGD steps",
                       "test MSE (unseen tasks)", steps,
                       {name: [r["curves"][name] for r in runs] for name in shown}, logy=True)
    written = write_results(out_dir, results, report, {"curves.png": [panel]},
                            benchmark=BENCHMARK)
    loss_file = out_dir / "runs" / f"loss_seed{seeds[0]}.ml3"
    if loss_file.exists():
        plot_landscape(LearnedLoss.load(loss_file), out_dir / "landscape.png")
    return written


def plot_landscape(loss: LearnedLoss, path: Path) -> None:
    """The learned loss and its gradient as functions of the prediction, next to MSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    y_pred = torch.linspace(-3, 3, 301, requires_grad=True)
    for target in (-1.0, 0.0, 1.0):
        y = torch.full_like(y_pred, target)
        per = loss.per_sample(y_pred, y)
        (grad,) = torch.autograd.grad(per.sum(), y_pred)
        line = axes[0].plot(y_pred.detach(), per.detach(), label=f"learned, y={target:g}")
        color = line[0].get_color()
        axes[0].plot(y_pred.detach(), (y_pred.detach() - target) ** 2, "--", color=color,
                     alpha=0.5, label=f"MSE, y={target:g}")
        axes[1].plot(y_pred.detach(), grad, color=color, label=f"learned, y={target:g}")
        axes[1].plot(y_pred.detach(), 2 * (y_pred.detach() - target), "--", color=color,
                     alpha=0.5)
    axes[0].set(xlabel="prediction (standardised units)", ylabel="loss", ylim=(0, 10),
                title="Loss landscape")
    axes[1].set(xlabel="prediction (standardised units)", ylabel="d loss / d prediction",
                title="Gradient (dashed: MSE)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
