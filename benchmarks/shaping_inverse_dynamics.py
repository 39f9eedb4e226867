"""Shaping a learned loss with a physics prior for inverse dynamics (paper IV-B.2, Fig. 5c-d).

Optimizee: :class:`~rl.meta.inverse_dynamics.InertiaNetwork`, ``tau = M_theta(q) qdd +
b_theta(q, qd)``. Meta-training tasks: fresh smooth trajectories of a MuJoCo arm
(``arm2``, ``arm7``). Learned losses read ``(tau_pred, tau)`` per joint:

- shaped: task loss ``torque MSE + (M_theta(q) - M(q))^2`` with the true MuJoCo
  mass matrix (meta-train-only information),
- unshaped: task loss torque MSE only,

compared with MSE at the same SGD lr and at its best lr from a grid (picked per
seed on the test tasks themselves, among the lrs that do not diverge: in MSE's
favour). Meta-training
follows the horizon the loss is used for: plain SGD inner steps, ``inner_steps``
equal to the number of meta-test updates (``phi`` updated after every inner step),
4 tasks per meta-iteration (vmapped). At meta-test a fresh network trains on the
torques of new trajectories with the loss alone; metrics: held-out torque MSE
(per-joint torque-scale units) and the scaled inertia error of ``M_theta`` vs
updates.

Usage::

    python benchmarks/shaping_inverse_dynamics.py          # arm2, 5 seeds, 1000 meta-iterations
    python benchmarks/shaping_inverse_dynamics.py --full   # arm2 + arm7, 5 seeds, 2000
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

from rl.meta.inverse_dynamics import InverseDynamicsProblem  # noqa: E402
from sklearn_ml3 import LearnedLoss, meta_train  # noqa: E402
from sklearn_ml3._utils import versions  # noqa: E402
from sklearn_ml3.shaping import meta_test_curve, mse_loss  # noqa: E402

SOLVER = "sgd"
# SGD lr of meta-training and meta-test (MSE diverges on arm7 at 0.1 on some tasks)
LRS = {"arm2": 0.1, "arm7": 0.03}
LR_GRID = (0.01, 0.03, 0.1, 0.3, 0.6)
TASKS_PER_ITER, META_LR = 4, 3e-3


def evaluate(problem, loss, tasks, lr, n_updates, metric=None):
    metric = metric or problem.torque_error
    return np.stack([meta_test_curve(problem, loss, t, n_steps=n_updates, lr=lr, solver=SOLVER,
                                     seed=100 + i, metric=metric)
                     for i, t in enumerate(tasks)]).mean(0)


def make_loss(seed):
    return LearnedLoss(hidden_layer_sizes=(50, 50), activation="elu", bias=True,
                       output="none", random_state=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--meta-iter", type=int, default=None)
    parser.add_argument("--arms", nargs="+", default=None, choices=sorted(LRS))
    parser.add_argument("--gamma", type=float, default=0.1,
                        help="weight of the inertia term in the shaped task loss (beta = 1)")
    parser.add_argument("--n-updates", type=int, default=100)
    parser.add_argument("--out", default="results/shaping_inverse_dynamics")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_seeds = args.seeds or 5
    n_meta_iter = args.meta_iter or (2000 if args.full else 1000)
    arms = args.arms or (["arm2", "arm7"] if args.full else ["arm2"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = ("ML3 shaped", "ML3 unshaped", "MSE (same lr)", "MSE (best lr)")
    results = {"experiment": "shaping_inverse_dynamics", "arms": {}, "versions": versions(),
               "protocol": {"n_seeds": n_seeds, "n_meta_iter": n_meta_iter,
                            "inner_steps": args.n_updates, "tasks_per_iter": TASKS_PER_ITER,
                            "meta_lr": META_LR, "solver": SOLVER, "lr": LRS,
                            "gamma": args.gamma, "beta": 1.0,
                            "learned_loss": {"hidden_layer_sizes": [50, 50],
                                             "activation": "elu", "bias": True,
                                             "output": "none"},
                            "mse_lr_grid": LR_GRID, "n_updates": args.n_updates,
                            "n_test_tasks": 3}}
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        problems = {"shaped": InverseDynamicsProblem(arm, shaped=True, gamma=args.gamma),
                    "unshaped": InverseDynamicsProblem(arm, shaped=False)}
        lr = LRS[arm]
        per_seed = {m: [] for m in methods}
        timing, best_lrs = {}, []
        inertia = {m: [] for m in methods[:3]}
        for seed in tqdm(range(n_seeds), desc=arm):
            t_seed = time.perf_counter()
            learned = {}
            for name, problem in problems.items():
                loss = make_loss(seed)
                meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=args.n_updates,
                           tasks_per_iter=TASKS_PER_ITER, inner_optimizer=SOLVER, inner_lr=lr,
                           meta_lr=META_LR, grad_clip=10.0, random_state=seed, verbose=0)
                learned[name] = loss
                timing.setdefault(name, []).append(loss.meta_info_["meta_train_time_s"])
            rng = np.random.default_rng(50_000 + seed)  # new trajectories
            test = problems["unshaped"].sample_tasks(3, rng)
            p = problems["unshaped"]
            per_seed["ML3 shaped"].append(evaluate(p, learned["shaped"], test, lr, args.n_updates))
            per_seed["ML3 unshaped"].append(
                evaluate(p, learned["unshaped"], test, lr, args.n_updates))
            per_seed["MSE (same lr)"].append(evaluate(p, mse_loss, test, lr, args.n_updates))
            for m, fn in (("ML3 shaped", learned["shaped"]),
                          ("ML3 unshaped", learned["unshaped"]), ("MSE (same lr)", mse_loss)):
                inertia[m].append(evaluate(p, fn, test, lr, args.n_updates,
                                           metric=p.inertia_error))
            # best lr on the test tasks themselves (in MSE's favour); a diverging lr never wins
            grid = {g: evaluate(p, mse_loss, test, g, args.n_updates) for g in LR_GRID}
            best = min(grid, key=lambda k: np.nan_to_num(grid[k][-1], nan=np.inf))
            best_lrs.append(best)
            per_seed["MSE (best lr)"].append(grid[best])
            timing.setdefault("wall_s_total", []).append(time.perf_counter() - t_seed)
        summary = {}
        for m in methods:
            arr = np.stack(per_seed[m])
            summary[m] = {"final_torque_mse": float(arr[:, -1].mean()),
                          "final_std_over_seeds": float(arr[:, -1].std()),
                          "at_10_updates": float(arr[:, 10].mean()),
                          "curve_mean": arr.mean(0).tolist()}
            if m in inertia:
                ine = np.stack(inertia[m])
                summary[m]["final_inertia_error"] = float(ine[:, -1].mean())
                summary[m]["final_inertia_error_std"] = float(ine[:, -1].std())
            ax.plot(arr.mean(0), label=m)
        ax.set_yscale("log")
        ax.set_title(arm)
        ax.set_xlabel("update")
        ax.set_ylabel("held-out torque MSE (scaled)")
        ax.legend()
        results["arms"][arm] = {"summary": summary, "lr": lr, "meta_train_time_s": timing,
                                "mse_best_lr_per_seed": best_lrs}
    fig.tight_layout()
    fig.savefig(out / "torque_error_curves.png", dpi=120)
    plt.close(fig)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["# Shaping: inverse dynamics with an inertia prior", "",
             f"{n_seeds} seeds, {n_meta_iter} meta-iterations, {args.n_updates} SGD updates "
             f"(lr {LRS}) at meta-test on 3 new tasks; shaped task loss: torque MSE + "
             f"{args.gamma} * inertia error.", "",
             "| arm | loss | torque MSE after 10 | after final update (mean +- std) "
             "| inertia error after final update |",
             "|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        for m, s in r["summary"].items():
            lines.append(f"| {arm} | {m} | {s['at_10_updates']:.3f} | "
                         f"{s['final_torque_mse']:.3f} +- {s['final_std_over_seeds']:.3f} | "
                         + (f"{s['final_inertia_error']:.3f} +- "
                            f"{s['final_inertia_error_std']:.3f} |"
                            if "final_inertia_error" in s else "- |"))
    lines += ["", "![curves](torque_error_curves.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
