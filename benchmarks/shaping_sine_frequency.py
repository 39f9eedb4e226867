"""Shaping a learned loss with the true frequency of a sine (paper IV-B.1, Fig. 5a-b).

Model f(x) = sin(omega x), omega0 = 0.1, SGD lr 1.0, 10 steps. Meta-training
tasks: nu ~ U[-5, 5], 64 points in [-5, 5] (the authors' setting). Two
learned losses on (y_pred, y, x) (3 x 10 ELU, linear output):

- shaped: meta-train task loss (omega - nu)^2 (nu is meta-train-only),
- unshaped: meta-train task loss MSE,

compared with MSE at lr 1.0, MSE at its best lr by the baseline rule (21
validation frequencies from their own seed stream) and the step-size control
(MSE at lr x each learned loss's gradient-norm ratio). Metric: |omega - nu|
after each of 10 steps on 21 test frequencies in [-5, 5] (inputs from the
meta-test stream).

Usage::

    python benchmarks/shaping_sine_frequency.py           # 5 seeds, 8000 meta-iterations
    python benchmarks/shaping_sine_frequency.py --full    # 5 seeds, 20000 meta-iterations
"""

from __future__ import annotations

import numpy as np
import torch

from sklearn_ml3 import LearnedLoss, meta_train
from sklearn_ml3.experiments.harness import (
    Benchmark,
    CurvePanel,
    baseline_lines,
    fmt,
    stats,
    step_size_lines,
)
from sklearn_ml3.meta import meta_test, step_size_diagnostic, tune_lr
from sklearn_ml3.shaping import SineFrequencyTasks, mse_loss, sine_frequency_problem

INNER_LR = 1.0
N_STEPS = 10
LR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
TEST_NU = np.linspace(-5, 5, 21)
LEARNED = ("ML3 shaped", "ML3 unshaped")

bench = Benchmark("shaping_sine_frequency", __doc__)
bench.add_argument("--meta-iter", type=int, default=None,
                   help="meta-iterations (default 8000; --full 20000)")
bench.add_argument("--meta-lr", type=float, default=1e-2)
SAMPLER = SineFrequencyTasks()
PROBLEMS = {"ML3 shaped": sine_frequency_problem(SAMPLER, shaped=True),
            "ML3 unshaped": sine_frequency_problem(SAMPLER, shaped=False)}
#: loss inputs are the same for both problems; meta-test never reads the task loss
PROBLEM = PROBLEMS["ML3 unshaped"]


def new_loss(seed: int) -> LearnedLoss:
    return LearnedLoss(kind="regression", n_extra_inputs=1, activation="elu",
                       hidden_layer_sizes=(10, 10, 10), bias=True, output="none",
                       random_state=seed)


def frequency_distance(params, task):
    """Evaluation metric only (reads the true frequency, never used for training)."""
    return (params["omega"] - task.extra["nu"]).abs()


def curves(loss, tasks, lr=None, optimizer=None):
    """(n_tasks, N_STEPS + 1) distances; lr and optimizer default to the loss's own."""
    return meta_test(PROBLEM, loss, tasks, n_updates=N_STEPS, metric=frequency_distance,
                     lr=lr, optimizer=optimizer).curves[0]


def meta_iter(args) -> int:
    return args.meta_iter or bench.budget(args, 8000, full=20000, quick=50)


def run_seed(seed, streams, args) -> dict:
    losses, timing = {}, {}
    for name, problem in PROBLEMS.items():
        loss = new_loss(streams.seed_of("init"))
        meta_train(loss, problem, n_meta_iter=meta_iter(args), inner_steps=N_STEPS,
                   tasks_per_iter=4, inner_lr=INNER_LR, meta_lr=args.meta_lr,
                   random_state=streams.seed_of("meta_train"), verbose=0)
        loss.save(args.out / "runs" / f"{name.replace(' ', '_')}_seed{seed}.ml3")
        losses[name], timing[name] = loss, loss.meta_info_["meta_train_time_s"]
    test_rng, val_rng = streams.rng("meta_test"), streams.rng("validation")
    test_tasks = [SAMPLER.task(nu, test_rng) for nu in TEST_NU]
    val_tasks = [SAMPLER.sample(val_rng) for _ in range(len(TEST_NU))]
    out = {name: curves(loss, test_tasks) for name, loss in losses.items()}
    out["MSE (same lr)"] = curves(mse_loss, test_tasks, INNER_LR, "sgd")
    record = tune_lr(lambda lr: curves(mse_loss, val_tasks, lr, "sgd")[:, -1].mean(), LR_GRID,
                     name="MSE", selected_on="21 validation frequencies drawn from their own "
                     "seed stream, mean |omega - nu| after the last step")
    out["MSE (best lr)"] = curves(mse_loss, test_tasks, record["best_lr"], "sgd")
    step_size = {}
    for name, loss in losses.items():
        diag = step_size_diagnostic(PROBLEM, loss, mse_loss, test_tasks, n_updates=N_STEPS,
                                    init_seeds=[np.zeros(len(test_tasks), dtype=int)])
        step_size[name] = diag
        out[f"MSE at lr x ratio of {name}"] = curves(
            mse_loss, test_tasks, INNER_LR * diag["control_lr_factor"], "sgd")
    return {"curves": {k: v.mean(0) for k, v in out.items()}, "baselines": [record],
            "step_size": step_size, "meta_train_time_s": timing}


def landscape_panel(args) -> list[CurvePanel]:
    """Fig. 5a: each loss over omega on three tasks (seed 0), rescaled to [0, 1]."""
    omegas = np.linspace(-7, 7, 281)
    rng = np.random.default_rng(99)
    fns = {name: LearnedLoss.load(args.out / "runs" / f"{name.replace(' ', '_')}_seed0.ml3")
           for name in LEARNED}
    fns["MSE"] = mse_loss
    panels = []
    for nu in (-3.0, 0.7, 3.5):
        task = SAMPLER.task(nu, rng)
        lines = {}
        with torch.no_grad():
            for name, fn in fns.items():
                values = np.array([float(fn(*PROBLEM.loss_inputs(
                    {"omega": torch.tensor(float(w))}, task))) for w in omegas])
                lines[name] = (values - values.min()) / max(np.ptp(values), 1e-12)
        panels.append(CurvePanel(f"nu = {nu}", "omega", "loss (rescaled)", omegas, lines))
    return panels


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    runs = bench.run(run_seed, args)
    methods = list(runs[0]["curves"])
    summary = {m: {"final": stats([r["curves"][m][-1] for r in runs]),
                   "curve_mean": np.mean([r["curves"][m] for r in runs], 0).tolist()}
               for m in methods}
    baselines = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
    step_size = {name: {"cosine": stats([r["step_size"][name]["cosine"]["mean"] for r in runs]),
                        "norm_ratio": stats([r["step_size"][name]["norm_ratio"]["mean"]
                                             for r in runs]),
                        "n_points": sum(r["step_size"][name]["n_points"] for r in runs),
                        "control": f"MSE at lr x ratio of {name}"} for name in LEARNED}
    n = meta_iter(args)
    report = ["# Shaping: sine frequency", "",
              f"{args.seeds} seeds, {n} meta-iterations x 4 tasks, 21 test frequencies, "
              f"{N_STEPS} SGD steps (lr {INNER_LR}).", "",
              "| loss | mean abs(omega - nu) after 10 steps (mean ± std over seeds) |",
              "|---|---|"]
    report += [f"| {m} | {fmt(summary[m]['final'])} |" for m in methods]
    report += ["", "Reference (authors' code): 0.107 shaped, 1.733 unshaped, 2.751 MSE.", "",
               "Tuned baseline (the baseline rule):", *baseline_lines(baselines), "",
               "Step-size diagnostic (learned loss vs MSE):"]
    for name in LEARNED:
        report += step_size_lines(name, step_size[name],
                                  summary[step_size[name]["control"]]["final"],
                                  summary[name]["final"], "error")
    steps = np.arange(N_STEPS + 1)
    figures = {
        "optimisation_curves.png": [CurvePanel(
            "Sine frequency: optimisation curves", "gradient step",
            "mean |omega - nu| (21 test frequencies)", steps,
            {m: [r["curves"][m] for r in runs] for m in methods})],
        "loss_landscapes.png": landscape_panel(args),
    }
    shaped = summary["ML3 shaped"]["final"]
    results = {
        "protocol": {"n_meta_iter": n, "tasks_per_iter": 4, "inner_steps": N_STEPS,
                     "inner_lr": INNER_LR, "meta_lr": args.meta_lr, "omega0": 0.1,
                     "n_points": SAMPLER.n_points, "frequency_range": SAMPLER.frequency_range,
                     "x_range": SAMPLER.x_range, "test_frequencies": TEST_NU.tolist(),
                     "mse_lr_grid": LR_GRID},
        "reference_authors_code": {"ML3 shaped": 0.107, "ML3 unshaped": 1.733, "MSE": 2.751},
        "summary": summary, "baselines": baselines, "step_size": step_size,
        "meta_train_time_s": [r["meta_train_time_s"] for r in runs],
        "headline": [{
            "experiment": "sine frequency shaping, mean abs(omega - nu) after 10 steps",
            "metric": "abs(omega - nu)", "lower_is_better": True, "learned": shaped,
            "same_lr": summary["MSE (same lr)"]["final"],
            "best_lr": summary["MSE (best lr)"]["final"],
            "step_size_control": summary["MSE at lr x ratio of ML3 shaped"]["final"],
            "cosine": step_size["ML3 shaped"]["cosine"],
            "note": f"unshaped learned loss: {summary['ML3 unshaped']['final']['mean']:.3g}"}],
    }
    written = bench.write(args, results, report, figures)
    print((args.out / "report.md").read_text())
    return written


if __name__ == "__main__":
    main()
