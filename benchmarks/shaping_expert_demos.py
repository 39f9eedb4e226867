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
- task loss: gradient descent on the final fingertip distance through the
  twin (a hand-written loss with known dynamics): SGD at the learned loss's
  inner lr, SGD at its best lr and Adam at its best lr, best lrs by the
  baseline rule (6 validation targets, 3 per half-plane, from their own seed
  stream);
- step-size control: the step-size diagnostic
  (:func:`sklearn_ml3.meta.step_size_diagnostic`) compares the learned loss's
  gradient with the task loss's on the new targets, and the task loss is run
  with SGD at the inner lr x the norm ratio;
- iLQR expert planned on each new target (an oracle reference).

All targets of a method train at once (:func:`rl.meta.shaping.train_twin_policies`:
one policy per target in one batched rollout, each on its own gradient).

Per seed, from the seed's streams: 4 training targets (right half-plane),
new targets 3 in the training region (unseen) and 3 in the left half-plane.
Metric: final fingertip distance after each policy update (twin), and the
final distance / success (< 0.02) of the trained policy in the gymnasium env
``ml3/ReacherGoal-v0`` (its own start noise).

Usage::

    python benchmarks/shaping_expert_demos.py           # 5 seeds x 150 meta-iterations
    python benchmarks/shaping_expert_demos.py --full    # 5 seeds x 1000 meta-iterations
"""

from __future__ import annotations

import numpy as np
import torch

from rl.baselines import expert_actions_reacher
from rl.envs.planar_arm import reacher_fingertip
from rl.envs.reacher import ReacherGoalEnv
from rl.meta.shaping import (
    ReacherExpertProblem,
    behaviour_cloning,
    evaluate_in_env,
    train_twin_policies,
)
from sklearn_ml3 import LearnedLoss, meta_train
from sklearn_ml3.experiments.harness import (
    Benchmark,
    CurvePanel,
    baseline_lines,
    fmt,
    stats,
    step_size_lines,
)
from sklearn_ml3.meta import TaskObjective, step_size_diagnostic, tune_lr

SGD_LR_GRID = (0.1, 0.3, 1.0)
ADAM_LR_GRID = (3e-3, 1e-2, 3e-2)
GROUPS = ("same_region", "other_region")

bench = Benchmark("shaping_expert_demos", __doc__)
bench.add_argument("--meta-iter", type=int, default=None,
                   help="meta-iterations (default 150; --full 1000)")
bench.add_argument("--inner-steps", type=int, default=10)
bench.add_argument("--inner-lr", type=float, default=0.3)
bench.add_argument("--meta-lr", type=float, default=3e-3)
bench.add_argument("--test-updates", type=int, default=30)


def train_targets(problem, loss, tasks, init_seed, n_updates, lr=None, solver=None):
    """Twin distance curves (n_targets, n_updates + 1) and gym-env results per target.

    All targets train together in one batched rollout, one policy each.
    """
    policies, curves = train_twin_policies(problem, loss, tasks, n_updates=n_updates, lr=lr,
                                           solver=solver, seed=init_seed)
    env = [evaluate_in_env(problem, params, task.goal.numpy(), seed=k)
           for k, (params, task) in enumerate(zip(policies, tasks, strict=True))]
    return curves, env


def run_seed(seed, streams, args) -> dict:
    n_iter = args.meta_iter or bench.budget(args, 150, full=1000, quick=2)
    n_updates = 2 if args.quick else args.test_updates
    train_goals = ReacherGoalEnv.sample_tasks(4, streams.rng("meta_train"), "right")
    rng = streams.rng("meta_test")
    test_goals = np.concatenate([ReacherGoalEnv.sample_tasks(3, rng, "right"),
                                 ReacherGoalEnv.sample_tasks(3, rng, "left")])
    rng = streams.rng("validation")
    val_goals = np.concatenate([ReacherGoalEnv.sample_tasks(3, rng, "right"),
                                ReacherGoalEnv.sample_tasks(3, rng, "left")])
    problem = ReacherExpertProblem(train_goals)  # plans the 4 expert demonstrations
    test = [problem.make_task(g) for g in test_goals]  # no expert
    validation = [problem.make_task(g) for g in val_goals]
    test_init, val_init = streams.ints("init", 2)
    loss = LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs,
                       hidden_layer_sizes=(32, 32), random_state=streams.seed_of("init"))
    meta_train(loss, problem, n_meta_iter=n_iter, inner_steps=args.inner_steps,
               tasks_per_iter=2, inner_optimizer="sgd", inner_lr=args.inner_lr,
               meta_lr=args.meta_lr, grad_clip=10.0, random_state=streams.seed_of("meta_train"),
               verbose=0)
    curves, env = {}, {}
    curves["ml3_shaped"], env["ml3_shaped"] = train_targets(problem, loss, test, test_init,
                                                            n_updates)
    bc = behaviour_cloning(problem, problem.train_tasks, n_updates=500, lr=1e-2,
                           seed=streams.seed_of("init"))
    with torch.no_grad():
        bc_distance = [float(problem.final_distance(bc, t)) for t in test]
    curves["behaviour_cloning"] = np.repeat(np.asarray(bc_distance)[:, None], n_updates + 1, 1)
    env["behaviour_cloning"] = [evaluate_in_env(problem, bc, t.goal.numpy(), seed=k)
                                for k, t in enumerate(test)]
    distance = TaskObjective(problem.summed_final_distance, "final_distance")
    curves["task_loss_same_lr"], env["task_loss_same_lr"] = train_targets(
        problem, distance, test, test_init, n_updates, args.inner_lr, "sgd")
    records = []
    for method, solver, grid in (("task_loss_best_lr", "sgd", SGD_LR_GRID),
                                 ("task_loss_adam_best_lr", "adam", ADAM_LR_GRID)):
        record = tune_lr(lambda lr, solver=solver: train_targets(
            problem, distance, validation, val_init, n_updates, lr, solver)[0][:, -1]
            .mean(), grid, name=f"task loss through the twin ({solver})",
            selected_on="6 validation targets (3 per half-plane) from their own seed stream, "
            "final distance after the last update")
        curves[method], env[method] = train_targets(problem, distance, test, test_init,
                                                    n_updates, record["best_lr"], solver)
        records.append(record)
    step_size = step_size_diagnostic(problem, loss, distance, [problem.batch(test)],
                                     n_updates=n_updates, init_seeds=[[test_init]])
    curves["task_loss_step_size_control"], env["task_loss_step_size_control"] = train_targets(
        problem, distance, test, test_init, n_updates,
        args.inner_lr * step_size["control_lr_factor"], "sgd")
    expert = []
    for g in test_goals:
        _, states, _ = expert_actions_reacher(g, np.zeros(4), problem.horizon,
                                              problem.expert_iter)
        tip = reacher_fingertip(torch.as_tensor(states[-1, :2]))
        expert.append(float(np.linalg.norm(tip.numpy() - g)))
    groups = {"same_region": slice(0, 3), "other_region": slice(3, 6)}
    return {
        "curves": {m: {g: c[sl].mean(0) for g, sl in groups.items()} for m, c in curves.items()},
        "final_env": {m: {g: float(np.mean([r["final_distance"] for r in e[sl]]))
                          for g, sl in groups.items()} for m, e in env.items()},
        "success_env": {m: {g: float(np.mean([r["success"] for r in e[sl]]))
                            for g, sl in groups.items()} for m, e in env.items()},
        "ilqr_expert": {g: float(np.mean(expert[sl])) for g, sl in groups.items()},
        "baselines": records, "step_size": step_size,
        "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
        "meta_history": loss.meta_history_, "train_goals": train_goals,
        "test_goals": test_goals}


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    runs = bench.run(run_seed, args)
    methods = list(runs[0]["curves"])
    table = {m: {g: {"final_distance_twin": stats([r["curves"][m][g][-1] for r in runs]),
                     "final_distance_env": stats([r["final_env"][m][g] for r in runs]),
                     "success_rate_env": stats([r["success_env"][m][g] for r in runs])}
                 for g in GROUPS} for m in methods}
    expert = {g: stats([r["ilqr_expert"][g] for r in runs]) for g in GROUPS}
    baselines = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
    n_updates = len(runs[0]["curves"]["ml3_shaped"]["same_region"]) - 1
    report = ["# ReacherGoal with expert demonstrations at meta-train time", "",
              f"{args.seeds} seeds; {n_updates} policy updates on each new target; known "
              "dynamics (torch twin); targets drawn per seed. Mean ± std over seeds.", "",
              "| method | targets | final distance (twin) | final distance (gym env) | "
              "success (gym env) |", "|---|---|---|---|---|"]
    for m in methods:
        for g in GROUPS:
            r = table[m][g]
            report.append(f"| {m} | {g} | {fmt(r['final_distance_twin'])} | "
                          f"{fmt(r['final_distance_env'])} | {fmt(r['success_rate_env'], 2)} |")
    report += [f"| iLQR expert (oracle) | {g} | {fmt(expert[g])} | | |" for g in GROUPS]
    step_size = {"cosine": stats([r["step_size"]["cosine"]["mean"] for r in runs]),
                 "norm_ratio": stats([r["step_size"]["norm_ratio"]["mean"] for r in runs]),
                 "n_points": sum(r["step_size"]["n_points"] for r in runs)}
    report += ["", "Tuned baseline (the baseline rule):", *baseline_lines(baselines), "",
               "Step-size diagnostic (learned loss vs the task loss, on the new targets):",
               *step_size_lines("ml3_shaped", step_size,
                                table["task_loss_step_size_control"]["same_region"]
                                ["final_distance_twin"],
                                table["ml3_shaped"]["same_region"]["final_distance_twin"],
                                "final distance (training region, twin)")]
    steps = np.arange(n_updates + 1)
    figures = {"expert_demos.png": [
        CurvePanel(f"new targets, {g.replace('_', ' ')}", "policy updates on the new target",
                   "final fingertip distance", steps,
                   {m: [r["curves"][m][g] for r in runs] for m in methods
                    if "step_size_control" not in m}) for g in GROUPS]}
    results = {
        "setting": {"dynamics": "rl.envs.reacher_step (known, differentiable twin)",
                    "inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
                    "meta_lr": args.meta_lr, "test_updates": n_updates},
        "results": table, "ilqr_expert_final_distance": expert, "baselines": baselines,
        "step_size": step_size,
        "meta_train_time_s": stats([r["meta_train_time_s"]["cpu"] for r in runs]),
        "headline": [{
            "experiment": "expert-demo shaping, final distance on new targets in the "
                          "training region",
            "metric": "final distance", "lower_is_better": True,
            "learned": table["ml3_shaped"]["same_region"]["final_distance_twin"],
            "same_lr": table["task_loss_same_lr"]["same_region"]["final_distance_twin"],
            "best_lr": table["task_loss_best_lr"]["same_region"]["final_distance_twin"],
            "step_size_control": table["task_loss_step_size_control"]["same_region"]
            ["final_distance_twin"],
            "cosine": step_size["cosine"],
            "note": "behavioural cloning "
                    f"{table['behaviour_cloning']['same_region']['final_distance_twin']['mean']:.3g}"
                    "; other region: learned "
                    f"{table['ml3_shaped']['other_region']['final_distance_twin']['mean']:.3g}"}],
    }
    written = bench.write(args, results, report, figures)
    print((args.out / "report.md").read_text())
    return written


if __name__ == "__main__":
    main()
