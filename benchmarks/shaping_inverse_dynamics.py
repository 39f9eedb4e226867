"""Shaping a learned loss with a physics prior for inverse dynamics (paper IV-B.2, Fig. 5c-d).

Optimizee: rl.meta.inverse_dynamics.InertiaNetwork, tau = M_theta(q) qdd +
b_theta(q, qd). Meta-training tasks: fresh smooth trajectories of a MuJoCo arm
(arm2, arm7). Learned losses read (tau_pred, tau) per joint:

- shaped: task loss torque MSE + gamma (M_theta(q) - M(q))^2 with the true MuJoCo
  mass matrix (meta-train-only information),
- unshaped: task loss torque MSE only,

compared with MSE at the same SGD lr, MSE at its best lr by the baseline rule
(3 validation trajectories from their own seed stream; a lr that diverges on
any of them scores infinity) and the step-size control (MSE at lr x each
learned loss's gradient-norm ratio). Meta-training follows the horizon the
loss is used for: plain SGD inner steps, inner_steps equal to the number of
meta-test updates, 4 tasks per meta-iteration (vmapped). At meta-test a fresh
network trains on the torques of 3 new trajectories with the loss alone;
metrics: held-out torque MSE (per-joint torque-scale units) and the scaled
inertia error of M_theta vs updates.

Usage::

    python benchmarks/shaping_inverse_dynamics.py          # arm2, 5 seeds, 1000 meta-iterations
    python benchmarks/shaping_inverse_dynamics.py --full   # arm2 + arm7, 5 seeds, 2000
"""

from __future__ import annotations

import numpy as np

from rl.meta.inverse_dynamics import InverseDynamicsProblem
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
from sklearn_ml3.meta.baselines import mse_loss

SOLVER = "sgd"
# SGD lr of meta-training and meta-test (MSE diverges on arm7 at 0.1 on some tasks)
LRS = {"arm2": 0.1, "arm7": 0.03}
LR_GRID = (0.01, 0.03, 0.1, 0.3)
TASKS_PER_ITER, META_LR, N_TASKS = 4, 3e-3, 3
LEARNED = ("ML3 shaped", "ML3 unshaped")

bench = Benchmark("shaping_inverse_dynamics", __doc__)
bench.add_argument("--meta-iter", type=int, default=None,
                   help="meta-iterations (default 1000; --full 2000)")
bench.add_argument("--arms", nargs="+", default=None, choices=sorted(LRS))
bench.add_argument("--gamma", type=float, default=0.1,
                   help="weight of the inertia term in the shaped task loss (beta = 1)")
bench.add_argument("--n-updates", type=int, default=100)


def make_loss(seed):
    return LearnedLoss(hidden_layer_sizes=(50, 50), activation="elu", bias=True,
                       output="none", random_state=seed)


def arms(args):
    return args.arms or (["arm2", "arm7"] if args.full else ["arm2"])


def run_seed(seed, streams, args) -> dict:
    n_meta_iter = args.meta_iter or bench.budget(args, 1000, full=2000, quick=5)
    n_updates = 5 if args.quick else args.n_updates
    return {arm: run_arm(arm, streams, args, n_meta_iter, n_updates) for arm in arms(args)}


def run_arm(arm, streams, args, n_meta_iter, n_updates) -> dict:
    problems = {"ML3 shaped": InverseDynamicsProblem(arm, shaped=True, gamma=args.gamma),
                "ML3 unshaped": InverseDynamicsProblem(arm, shaped=False)}
    lr = LRS[arm]
    learned, timing = {}, {}
    for name, problem in problems.items():
        loss = make_loss(streams.seed_of("init"))
        meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=n_updates,
                   tasks_per_iter=TASKS_PER_ITER, inner_optimizer=SOLVER, inner_lr=lr,
                   meta_lr=META_LR, grad_clip=10.0, random_state=streams.seed_of("meta_train"),
                   verbose=0)
        learned[name], timing[name] = loss, loss.meta_info_["meta_train_time_s"]
    p = problems["ML3 unshaped"]
    test = p.sample_tasks(N_TASKS, streams.rng("meta_test"))
    validation = p.sample_tasks(N_TASKS, streams.rng("validation"))
    init = streams.ints("init", 2 * N_TASKS)

    def curves(loss, tasks=test, seeds=init[:N_TASKS], lr=None, metric=p.torque_error):
        return meta_test(p, loss, tasks, n_updates=n_updates, metric=metric,
                         init_seeds=[seeds], lr=lr,
                         optimizer=None if lr is None else SOLVER).curves[0].mean(0)

    torque = {name: curves(loss) for name, loss in learned.items()}
    torque["MSE (same lr)"] = curves(mse_loss, lr=lr)
    record = tune_lr(lambda g: curves(mse_loss, validation, init[N_TASKS:], g)[-1],
                     LR_GRID, name=f"MSE on {arm}",
                     selected_on=f"{N_TASKS} validation trajectories from their own seed "
                     "stream, torque MSE after the last update")
    torque["MSE (best lr)"] = curves(mse_loss, lr=record["best_lr"])
    step_size = {}
    for name, loss in learned.items():
        diag = step_size_diagnostic(p, loss, mse_loss, test, n_updates=n_updates,
                                    init_seeds=[init[:N_TASKS]])
        step_size[name] = diag
        torque[f"MSE at lr x ratio of {name}"] = curves(mse_loss,
                                                        lr=lr * diag["control_lr_factor"])
    inertia = {name: curves(loss, metric=p.inertia_error) for name, loss in learned.items()}
    inertia["MSE (same lr)"] = curves(mse_loss, lr=lr, metric=p.inertia_error)
    return {"torque": {k: np.where(np.isfinite(v), v, np.inf) for k, v in torque.items()},
            "inertia": inertia, "baselines": [record], "step_size": step_size,
            "meta_train_time_s": timing}


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    runs = bench.run(run_seed, args)
    results = {"protocol": {"inner_steps": args.n_updates, "tasks_per_iter": TASKS_PER_ITER,
                            "meta_lr": META_LR, "solver": SOLVER, "lr": LRS,
                            "gamma": args.gamma, "beta": 1.0, "mse_lr_grid": LR_GRID,
                            "n_test_tasks": N_TASKS},
               "arms": {}, "baselines": [], "step_size": {}, "headline": []}
    report = ["# Shaping: inverse dynamics with an inertia prior", "",
              f"{args.seeds} seeds; SGD updates (lr {LRS}) at meta-test on {N_TASKS} new "
              f"trajectories per seed; shaped task loss: torque MSE + {args.gamma} * inertia "
              "error. Mean ± std over seeds of the per-seed mean over tasks.", "",
              "| arm | loss | torque MSE after 10 | after the last update | inertia error after "
              "the last update |", "|---|---|---|---|---|"]
    panels = []
    for arm in arms(args):
        per = [r[arm] for r in runs]
        summary = {}
        for m in per[0]["torque"]:
            arr = np.array([q["torque"][m] for q in per])
            summary[m] = {"final": stats(arr[:, -1]), "at_10": stats(arr[:, min(10, arr.shape[1]
                                                                               - 1)])}
            if m in per[0]["inertia"]:
                summary[m]["inertia_final"] = stats([q["inertia"][m][-1] for q in per])
            report.append(f"| {arm} | {m} | {summary[m]['at_10']['mean']:.3f} | "
                          f"{fmt(summary[m]['final'])} | "
                          + (f"{fmt(summary[m]['inertia_final'])} |"
                             if "inertia_final" in summary[m] else "- |"))
        baselines = [{"seed": r["seed"], **b} for r in runs for b in r[arm]["baselines"]]
        step_size = {name: {"cosine": stats([q["step_size"][name]["cosine"]["mean"] for q in per]),
                            "norm_ratio": stats([q["step_size"][name]["norm_ratio"]["mean"]
                                                 for q in per]),
                            "n_points": sum(q["step_size"][name]["n_points"] for q in per)}
                     for name in LEARNED}
        results["arms"][arm] = {"summary": summary, "lr": LRS[arm],
                                "meta_train_time_s": [q["meta_train_time_s"] for q in per]}
        results["baselines"] += baselines
        results["step_size"][arm] = step_size
        report += ["", f"{arm}, tuned baseline (the baseline rule):", *baseline_lines(baselines),
                   "", f"{arm}, step-size diagnostic (learned loss vs MSE):"]
        for name in LEARNED:
            report += step_size_lines(name, step_size[name],
                                      summary[f"MSE at lr x ratio of {name}"]["final"],
                                      summary[name]["final"], "final torque MSE")
        report.append("")
        n_points = len(per[0]["torque"]["MSE (same lr)"])
        panels.append(CurvePanel(arm, "update", "held-out torque MSE (scaled)",
                                 np.arange(n_points),
                                 {m: [q["torque"][m] for q in per] for m in per[0]["torque"]
                                  if "ratio" not in m}, logy=True))
        results["headline"].append({
            "experiment": f"inverse dynamics shaping ({arm}), torque MSE after "
                          f"{n_points - 1} updates (shaped loss)",
            "metric": "torque MSE", "lower_is_better": True,
            "learned": summary["ML3 shaped"]["final"],
            "same_lr": summary["MSE (same lr)"]["final"],
            "best_lr": summary["MSE (best lr)"]["final"],
            "step_size_control": summary["MSE at lr x ratio of ML3 shaped"]["final"],
            "cosine": step_size["ML3 shaped"]["cosine"],
            "note": f"unshaped learned loss: {summary['ML3 unshaped']['final']['mean']:.3g}"})
    written = bench.write(args, results, report, {"torque_error_curves.png": panels})
    print((args.out / "report.md").read_text())
    return written


if __name__ == "__main__":
    main()
