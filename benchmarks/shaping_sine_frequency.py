"""Shaping a learned loss with the true frequency of a sine (paper IV-B.1, Fig. 5a-b).

Model ``f(x) = sin(omega x)``, ``omega0 = 0.1``, SGD lr 1.0, 10 steps. Meta-
training tasks: ``nu ~ U[-5, 5]``, 64 points in [-5, 5] (the authors' setting).
Two learned losses on ``(y_pred, y, x)`` (3 x 10 ELU, linear output):

- shaped: meta-train task loss ``(omega - nu)^2`` (``nu`` is meta-train-only),
- unshaped: meta-train task loss MSE,

compared with MSE at lr 1.0 and MSE at its best lr from a grid (picked on
validation frequencies, reported on the test frequencies). Metric: ``|omega -
nu|`` after each of 10 steps on 21 test frequencies in [-5, 5].

Usage::

    python benchmarks/shaping_sine_frequency.py            # 5 seeds, 8000 meta-iterations (~5 min)
    python benchmarks/shaping_sine_frequency.py --full     # 5 seeds, 20000 meta-iterations
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from sklearn_ml3 import LearnedLoss, meta_train  # noqa: E402
from sklearn_ml3._utils import versions  # noqa: E402
from sklearn_ml3.shaping import (  # noqa: E402
    SineFrequencyTasks,
    meta_test_curve,
    mse_loss,
    sine_frequency_problem,
)

INNER_LR = 1.0
N_STEPS = 10
LR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def new_loss(seed: int) -> LearnedLoss:
    return LearnedLoss(kind="regression", n_extra_inputs=1, activation="elu",
                       hidden_layer_sizes=(10, 10, 10), bias=True, output="none",
                       random_state=seed)


def frequency_distance(params, task):
    """Evaluation metric only (never used for training)."""
    return (params["omega"] - task.extra["nu"]).abs()


def curves(problem, loss, tasks, lr):
    return np.stack([meta_test_curve(problem, loss, t, n_steps=N_STEPS, lr=lr,
                                     metric=frequency_distance) for t in tasks])


def landscape(problem, loss, task, omegas):
    values = []
    with torch.no_grad():
        for w in omegas:
            params = {"omega": torch.tensor(float(w))}
            values.append(float(loss(*problem.loss_inputs(params, task))))
    return np.asarray(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 seeds, 20000 meta-iterations")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--meta-iter", type=int, default=None)
    parser.add_argument("--meta-lr", type=float, default=1e-2)
    parser.add_argument("--out", default="results/shaping_sine_frequency")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_seeds = args.seeds or 5
    n_meta_iter = args.meta_iter or (20000 if args.full else 8000)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sampler = SineFrequencyTasks()
    problems = {"shaped": sine_frequency_problem(sampler, shaped=True),
                "unshaped": sine_frequency_problem(sampler, shaped=False)}
    test_nu = np.linspace(-5, 5, 21)
    methods = ("ML3 shaped", "ML3 unshaped", "MSE (lr 1.0)", "MSE (best lr)")
    per_seed = {m: [] for m in methods}
    timing, best_lrs, losses = {}, [], {}
    for seed in tqdm(range(n_seeds), desc="seeds"):
        for name, problem in problems.items():
            loss = new_loss(seed)
            meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=N_STEPS,
                       tasks_per_iter=4, inner_lr=INNER_LR, meta_lr=args.meta_lr,
                       random_state=seed, verbose=0)
            timing.setdefault(name, []).append(loss.meta_info_["meta_train_time_s"])
            losses.setdefault(name, []).append(loss)
        rng = np.random.default_rng(10_000 + seed)  # test inputs never seen in meta-training
        test_tasks = [sampler.task(nu, rng) for nu in test_nu]
        val_tasks = [sampler.sample(rng) for _ in range(21)]
        problem = problems["unshaped"]  # loss inputs are the same for both problems
        per_seed["ML3 shaped"].append(curves(problem, losses["shaped"][-1], test_tasks, INNER_LR))
        per_seed["ML3 unshaped"].append(
            curves(problem, losses["unshaped"][-1], test_tasks, INNER_LR))
        per_seed["MSE (lr 1.0)"].append(curves(problem, mse_loss, test_tasks, INNER_LR))
        val_err = {lr: curves(problem, mse_loss, val_tasks, lr)[:, -1].mean() for lr in LR_GRID}
        best = min(val_err, key=val_err.get)
        best_lrs.append(best)
        per_seed["MSE (best lr)"].append(curves(problem, mse_loss, test_tasks, best))

    # per seed: mean over the 21 test frequencies; then mean/std over seeds
    summary = {}
    for m in methods:
        arr = np.stack(per_seed[m])  # (seeds, 21, N_STEPS + 1)
        final = arr[:, :, -1].mean(1)
        summary[m] = {"final_mean_abs_error": float(final.mean()),
                      "final_std_over_seeds": float(final.std()),
                      "per_seed": final.tolist(),
                      "curve_mean": arr.mean((0, 1)).tolist(),
                      "curve_std_over_seeds": arr.mean(1).std(0).tolist()}

    # Fig. 5b: optimisation curves
    fig, ax = plt.subplots(figsize=(5, 4))
    for m in methods:
        mean = np.asarray(summary[m]["curve_mean"])
        std = np.asarray(summary[m]["curve_std_over_seeds"])
        ax.plot(mean, label=m)
        ax.fill_between(range(len(mean)), mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("gradient step")
    ax.set_ylabel("mean |omega - nu| (21 test frequencies)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "optimisation_curves.png", dpi=120)
    plt.close(fig)

    # Fig. 5a: landscapes over omega (seed 0), each rescaled to [0, 1]
    omegas = np.linspace(-7, 7, 281)
    rng = np.random.default_rng(99)
    fig, axes = plt.subplots(3, 3, figsize=(10, 7), sharex=True)
    for col, nu in enumerate((-3.0, 0.7, 3.5)):
        task = sampler.task(nu, rng)
        rows = (("ML3 shaped", losses["shaped"][0]), ("ML3 unshaped", losses["unshaped"][0]),
                ("MSE", mse_loss))
        for row, (name, fn) in enumerate(rows):
            values = landscape(problems["unshaped"], fn, task, omegas)
            values = (values - values.min()) / max(values.max() - values.min(), 1e-12)
            ax = axes[row, col]
            ax.plot(omegas, values)
            ax.axvline(nu, color="red")
            ax.set_title(f"{name}, nu = {nu}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("omega")
    fig.tight_layout()
    fig.savefig(out / "loss_landscapes.png", dpi=120)
    plt.close(fig)

    results = {
        "experiment": "shaping_sine_frequency",
        "protocol": {"n_seeds": n_seeds, "n_meta_iter": n_meta_iter, "tasks_per_iter": 4,
                     "inner_steps": N_STEPS, "inner_lr": INNER_LR, "meta_lr": args.meta_lr,
                     "omega0": 0.1, "n_points": sampler.n_points,
                     "frequency_range": sampler.frequency_range, "x_range": sampler.x_range,
                     "test_frequencies": test_nu.tolist(), "mse_lr_grid": LR_GRID,
                     "mse_best_lr_per_seed": best_lrs},
        "reference_authors_code": {"ML3 shaped": 0.107, "ML3 unshaped": 1.733, "MSE": 2.751},
        "summary": summary,
        "meta_train_time_s": timing,
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["# Shaping: sine frequency", "",
             f"{n_seeds} seeds, {n_meta_iter} meta-iterations x 4 tasks, 21 test frequencies, "
             f"{N_STEPS} SGD steps.", "",
             "| loss | mean abs(omega - nu) after 10 steps (mean +- std over seeds) |",
             "|---|---|"]
    for m in methods:
        s = summary[m]
        lines.append(f"| {m} | {s['final_mean_abs_error']:.3f} +- "
                     f"{s['final_std_over_seeds']:.3f} |")
    lines += ["", f"MSE best lr per seed: {best_lrs}", "",
              "Reference (authors' code): 0.107 shaped, 1.733 unshaped, 2.751 MSE.", "",
              "![curves](optimisation_curves.png)", "", "![landscapes](loss_landscapes.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
