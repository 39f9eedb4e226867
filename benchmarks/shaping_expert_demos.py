"""ReacherGoal with expert demonstrations at meta-train time only (paper IV-B.4, Fig. 6c-d).

Model-based setting with known dynamics: the policies' rollouts run through
the exact torch twin of Reacher-v5 (:func:`rl.envs.reacher_step`) from rest
at ``q = 0``. Expert demonstrations are iLQR plans on the twin
(:func:`rl.baselines.expert_actions_reacher`) for 4 training targets (right
half-plane).

- ML3 shaped: meta-train task loss = behavioural-cloning error of the updated
  policy on the expert's states and actions (the paper's objective); at
  meta-test the learned loss alone trains fresh policies on new targets,
  from the policies' own rollouts, without any expert;
- behavioural cloning: one goal-conditioned policy fitted to the 4 training
  demonstrations (Adam), evaluated on the new targets;
- task loss: Adam on the final fingertip distance through the twin (a
  hand-written loss with known dynamics), at its best lr from a grid picked on
  a training target (one policy initialisation per new target: it is the
  slowest part of the script);
- iLQR expert planned on each new target (an oracle reference).

New targets: 3 in the training region (unseen) and 3 in the left half-plane.
Metric: final fingertip distance after each policy update (twin), and the
final distance / success (< 0.02) of the trained policy in the gymnasium env
``ml3/ReacherGoal-v0`` (its own start noise).

Usage::

    python benchmarks/shaping_expert_demos.py           # 5 seeds x 150 meta-iterations (~3 min)
    python benchmarks/shaping_expert_demos.py --full    # 5 seeds x 1000 meta-iterations
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from rl.baselines import expert_actions_reacher  # noqa: E402
from rl.envs.planar_arm import reacher_fingertip  # noqa: E402
from rl.envs.reacher import ReacherGoalEnv  # noqa: E402
from rl.meta.shaping import (  # noqa: E402
    ReacherExpertProblem,
    behaviour_cloning,
    evaluate_in_env,
    train_policy_on_task_loss,
    train_policy_with_loss,
)
from sklearn_ml3 import LearnedLoss, meta_train  # noqa: E402
from sklearn_ml3._utils import versions  # noqa: E402

TASK_LR_GRID = (3e-3, 1e-2, 3e-2)


def summary(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 seeds, 1000 meta-iterations")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--meta-iter", type=int, default=None)
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--inner-lr", type=float, default=0.3)
    parser.add_argument("--meta-lr", type=float, default=3e-3)
    parser.add_argument("--test-updates", type=int, default=30)
    parser.add_argument("--reuse", action="store_true",
                        help="load learned losses already saved in --out (same settings) "
                             "instead of meta-training them again")
    parser.add_argument("--out", default="results/shaping_expert_demos")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_seeds = args.seeds or 5
    n_iter = args.meta_iter or (1000 if args.full else 150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(2024)
    train_goals = ReacherGoalEnv.sample_tasks(4, rng, "right")
    test_groups = {"same_region": ReacherGoalEnv.sample_tasks(3, rng, "right"),
                   "other_region": ReacherGoalEnv.sample_tasks(3, rng, "left")}
    test_goals = np.concatenate(list(test_groups.values()))
    group_of = np.repeat(list(test_groups), [len(g) for g in test_groups.values()])
    problem = ReacherExpertProblem(train_goals)  # plans the 4 expert demonstrations
    test_tasks = [problem.make_task(g) for g in test_goals]  # no expert

    def run_group(train_fn, n_inits=n_seeds):
        """Meta-test curves (n_inits, n_goals, n_updates + 1) and gym results."""
        curves, env = [], []
        for seed in range(n_inits):
            seed_curves, seed_env = [], []
            for k, task in enumerate(test_tasks):
                curve, params = train_fn(seed, k, task)
                seed_curves.append(curve)
                seed_env.append(evaluate_in_env(problem, params, task.goal.numpy(), seed=k))
            curves.append(seed_curves)
            env.append(seed_env)
        return np.asarray(curves), env

    results_curves, results_env, timing = {}, {}, []
    losses = []
    for seed in tqdm(range(n_seeds), desc="seeds"):
        path = out / f"ml3_shaped_seed{seed}.safetensors"
        if args.reuse and path.exists():
            loss = LearnedLoss.load(path)
            if loss.meta_info_.get("n_meta_iter_done") != n_iter:
                raise ValueError(f"{path} was meta-trained with a different budget")
            timing.append(loss.meta_info_["meta_train_time_s"])
            losses.append(loss)
            continue
        loss = LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs,
                           hidden_layer_sizes=(32, 32), random_state=seed)
        meta_train(loss, problem, n_meta_iter=n_iter, inner_steps=args.inner_steps,
                   tasks_per_iter=2, inner_optimizer="sgd", inner_lr=args.inner_lr,
                   meta_lr=args.meta_lr, grad_clip=10.0, random_state=seed, verbose=1)
        timing.append(loss.meta_info_["meta_train_time_s"])
        loss.save(path)
        losses.append(loss)

    results_curves["ml3_shaped"], results_env["ml3_shaped"] = run_group(
        lambda s, k, t: train_policy_with_loss(problem, losses[s], t, n_updates=args.test_updates,
                                               lr=args.inner_lr, seed=1000 * s + k))

    bc_params = [behaviour_cloning(problem, problem.train_tasks, n_updates=500, lr=1e-2,
                                   seed=s) for s in range(n_seeds)]

    def bc_fn(s, k, task):
        with torch.no_grad():
            d = float(problem.final_distance(bc_params[s], task))
        return np.full(args.test_updates + 1, d), bc_params[s]

    results_curves["behaviour_cloning"], results_env["behaviour_cloning"] = run_group(bc_fn)

    # the slowest part (gradients through 50 RK4 steps): lr picked on one training
    # target, one policy initialisation per new target
    train_tasks = [problem.make_task(g) for g in train_goals[:1]]
    grid = {lr: float(np.mean([train_policy_on_task_loss(problem, t, n_updates=args.test_updates,
                                                         lr=lr)[0][-1] for t in train_tasks]))
            for lr in TASK_LR_GRID}
    best_lr = min(grid, key=grid.get)
    results_curves["task_loss_best_lr"], results_env["task_loss_best_lr"] = run_group(
        lambda s, k, t: train_policy_on_task_loss(problem, t, n_updates=args.test_updates,
                                                  lr=best_lr, seed=1000 * s + k), n_inits=1)

    expert_distance = []
    for g in test_goals:
        _, states, _ = expert_actions_reacher(g, np.zeros(4), problem.horizon,
                                              problem.expert_iter)
        tip = reacher_fingertip(torch.as_tensor(states[-1, :2]))
        expert_distance.append(float(np.linalg.norm(tip.numpy() - g)))

    table = {}
    for name, curves in results_curves.items():
        env = results_env[name]
        table[name] = {}
        for group in test_groups:
            mask = group_of == group
            table[name][group] = {
                "final_distance_twin": summary(curves[:, mask, -1].mean(1)),
                "final_distance_env": summary(
                    [np.mean([r["final_distance"] for r in np.asarray(e)[mask]]) for e in env]),
                "success_rate_env": summary(
                    [np.mean([r["success"] for r in np.asarray(e)[mask]]) for e in env]),
            }
    results = {
        "setting": {
            "dynamics": "rl.envs.reacher_step (known, differentiable twin)",
            "train_goals": train_goals.tolist(),
            "test_goals": {k: v.tolist() for k, v in test_groups.items()},
            "seeds": n_seeds, "meta_iter": n_iter, "inner_steps": args.inner_steps,
            "inner_lr": args.inner_lr, "meta_lr": args.meta_lr,
            "test_updates": args.test_updates, "task_loss_lr_grid": grid,
            "task_loss_best_lr": best_lr, "horizon": problem.horizon,
        },
        "results": table,
        "ilqr_expert_final_distance": {
            group: float(np.mean(np.asarray(expert_distance)[group_of == group]))
            for group in test_groups},
        "curves": {name: c.mean(1).tolist() for name, c in results_curves.items()},
        "meta_train_time_s": {"wall": summary([t["wall"] for t in timing]),
                              "cpu": summary([t["cpu"] for t in timing])},
        "meta_history": [loss.meta_history_.tolist() for loss in losses],
        "versions": versions(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.scatter(*train_goals.T, label="training targets (expert)", color="tab:blue")
    ax.scatter(*test_goals.T, label="meta-test targets", color="tab:orange")
    circle = np.linspace(0, 2 * np.pi, 200)
    ax.plot(0.21 * np.cos(circle), 0.21 * np.sin(circle), "k:", lw=0.8)
    ax.set_aspect("equal")
    ax.set_title("targets (end-effector plane)")
    ax.legend(fontsize=8)
    ax = axes[1]
    steps = np.arange(args.test_updates + 1)
    for name, curves in results_curves.items():
        per_seed = curves.mean(1)
        ax.plot(steps, per_seed.mean(0), label=name.replace("_", " "))
        ax.fill_between(steps, per_seed.mean(0) - per_seed.std(0),
                        per_seed.mean(0) + per_seed.std(0), alpha=0.2)
    ax.axhline(float(np.mean(expert_distance)), color="k", ls="--", lw=0.8,
               label="iLQR expert")
    ax.set_xlabel("policy updates on the new target")
    ax.set_ylabel("final fingertip distance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "expert_demos.png", dpi=120)
    plt.close(fig)

    lines = ["# ReacherGoal with expert demonstrations at meta-train time", "",
             f"{n_seeds} seeds x {n_iter} meta-iterations; {args.test_updates} policy updates "
             "on each new target; known dynamics (torch twin).", "",
             "| method | targets | final distance (twin) | final distance (gym env) | "
             "success (gym env) |", "|---|---|---|---|---|"]
    for name, groups in table.items():
        for group, r in groups.items():
            d, e, s = (r["final_distance_twin"], r["final_distance_env"],
                       r["success_rate_env"])
            lines.append(f"| {name} | {group} | {d['mean']:.3f} +- {d['std']:.3f} | "
                         f"{e['mean']:.3f} +- {e['std']:.3f} | {s['mean']:.2f} +- "
                         f"{s['std']:.2f} |")
    for group, d in results["ilqr_expert_final_distance"].items():
        lines.append(f"| iLQR expert (oracle) | {group} | {d:.3f} | | |")
    lines += ["", f"task loss lr grid (training targets): {grid}; best {best_lr}", "",
              "![](expert_demos.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
