"""MountainCar shaped by an intermediate goal on the left hill (paper IV-B.3, Fig. 6a-b).

Model-based setting with known dynamics: policies are rolled out, and the
task loss differentiated, through the exact torch twin of the environment
(:func:`rl.envs.mountain_car_step`). The car starts at rest at the valley
bottom; a task is a goal position on the right hill.

- ML3 shaped: meta-train task loss ``|x_T - g| + gamma * max(0, min_t x_t - x_left)``
  (the intermediate point ``x_left`` on the left hill is meta-train-only
  information; the hinge vanishes once the rollout swings that far);
- ML3 unshaped: meta-train task loss ``|x_T - g|``;
- iLQR (:func:`rl.baselines.ilqr`) from rest with the environment's own
  objective (``sum_t |x_t - g|``, plus the final distance), zero initial controls;
- task loss: gradient descent on ``|x_T - g|`` through the twin, with the
  learned losses' optimizer (SGD) at their step size and at its own best step
  size, and with Adam at its best step size; best step sizes by the baseline
  rule (validation goals from their own seed stream, grid extended until the
  best is interior);
- step-size control, per learned loss: the step-size diagnostic
  (:func:`sklearn_ml3.meta.step_size_diagnostic`) compares its gradient with
  the task loss's on the held-out goals, and the task loss is run with SGD at
  the inner lr x the norm ratio.

All goals of a method train at once (:func:`rl.meta.shaping.train_twin_policies`:
one plan per goal in one batched rollout, each on its own gradient).

Meta-training follows the scheme that worked for the model-based PointmassGoal
experiment: an episode is as long as the meta-test run (``inner_steps`` =
``--test-updates`` plain SGD policy updates, ``phi`` updated after every one),
4 goals per meta-iteration, and goal-relative loss inputs
``(g - x_t, v_t / 0.07, a_t)``.

At meta-test the learned losses train fresh policies on held-out goals
alone; each trained policy is also run in the gymnasium env
``ml3/MountainCarGoal-v0``. Training, held-out and validation goals are
drawn per seed from the seed's own streams. Metric: final distance to the goal after each
policy update; success: the env's ``is_success`` (distance < 0.05) at the
last step.

Usage::

    python benchmarks/shaping_mountain_car.py           # 5 seeds x 400 meta-iterations
    python benchmarks/shaping_mountain_car.py --full    # 5 seeds x 2000 meta-iterations
"""

from __future__ import annotations

import numpy as np
import torch

from rl.baselines import ilqr
from rl.envs.mountain_car import MountainCarGoalEnv, mountain_car_step
from rl.meta.shaping import MountainCarShapingProblem, evaluate_in_env, train_twin_policies
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

ILQR_ITERS = (0, 1, 2, 5, 10, 25)
SGD_LR_GRID = (10.0, 30.0, 100.0)
ADAM_LR_GRID = (0.01, 0.03, 0.1, 0.3)


def ilqr_curve(problem, goal: float) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Final distance after ``ILQR_ITERS`` iterations; the last plan's states and actions."""
    x0 = problem.start_state().double()

    def running(x, u):
        return torch.sqrt((x[..., 0] - goal) ** 2 + 1e-6) + 1e-3 * (u**2).sum(-1)

    def final(x):
        return torch.sqrt((x[..., 0] - goal) ** 2 + 1e-6)

    distances, X, U = [], None, None
    for n in ILQR_ITERS:
        u0 = torch.zeros(problem.horizon, 1, dtype=torch.float64)
        if n == 0:
            state, xs = x0, [x0]
            for u in u0:
                state = mountain_car_step(state, u)
                xs.append(state)
            X, U = torch.stack(xs), u0
        else:
            X, U, _ = ilqr(mountain_car_step, running, final, x0, u0, n_iter=n,
                           u_low=-1.0, u_high=1.0)
        distances.append(abs(float(X[-1, 0]) - goal))
    return distances, X.numpy(), U.numpy()


def replay_in_env(goal: float, actions: np.ndarray) -> dict:
    """Open-loop actions in the gymnasium env from rest at the valley bottom."""
    import gymnasium as gym

    from rl.envs.mountain_car import VALLEY_BOTTOM

    env = gym.make("ml3/MountainCarGoal-v0", goal=goal, max_episode_steps=len(actions),
                   init_low=VALLEY_BOTTOM, init_high=VALLEY_BOTTOM)
    env.reset(seed=0)
    info = {}
    for a in actions:
        _, _, _, _, info = env.step(np.asarray(a, dtype=np.float32))
    env.close()
    return {"final_distance": float(info["distance"]), "success": bool(info["is_success"])}


bench = Benchmark("shaping_mountain_car", __doc__)
bench.add_argument("--meta-iter", type=int, default=None,
                   help="meta-iterations (default 400; --full 2000)")
bench.add_argument("--inner-steps", type=int, default=None,
                   help="policy updates per meta-training episode (default: --test-updates)")
bench.add_argument("--tasks-per-iter", type=int, default=4)
bench.add_argument("--loss-features", default="relative", choices=("relative", "absolute"))
bench.add_argument("--inner-lr", type=float, default=30.0)
bench.add_argument("--solver", default="sgd")
bench.add_argument("--meta-lr", type=float, default=1e-2)
bench.add_argument("--gamma", type=float, default=0.3)
bench.add_argument("--test-updates", type=int, default=30)
bench.add_argument("--n-test", type=int, default=4)
LEARNED = ("ml3_shaped", "ml3_unshaped")


def train_goals(problem, loss, tasks, init_seed, n_updates, lr=None, solver=None):
    """Distance curves (n_goals, n_updates + 1), gym-env results and trained parameters.

    All goals train together in one batched rollout, one policy each.
    """
    policies, curves = train_twin_policies(problem, loss, tasks, n_updates=n_updates, lr=lr,
                                           solver=solver, seed=init_seed)
    env = [evaluate_in_env(problem, params, float(task.goal[0]))
           for params, task in zip(policies, tasks, strict=True)]
    return curves, env, policies


def run_seed(seed, streams, args) -> dict:
    n_iter = args.meta_iter or bench.budget(args, 400, full=2000, quick=3)
    n_updates = 3 if args.quick else args.test_updates
    goals = MountainCarGoalEnv.sample_tasks(8, streams.rng("meta_train"), "right").ravel()
    test_goals = MountainCarGoalEnv.sample_tasks(args.n_test, streams.rng("meta_test"),
                                                 "right").ravel()
    val_goals = MountainCarGoalEnv.sample_tasks(args.n_test, streams.rng("validation"),
                                                "right").ravel()
    problems = {
        "ml3_shaped": MountainCarShapingProblem(goals, shaped=True, gamma=args.gamma,
                                                policy_hidden_sizes=None,
                                                loss_features=args.loss_features),
        "ml3_unshaped": MountainCarShapingProblem(goals, shaped=False, policy_hidden_sizes=None,
                                                  loss_features=args.loss_features),
    }
    problem = problems["ml3_unshaped"]
    test = [problem.make_task(g) for g in test_goals]  # no extra information
    validation = [problem.make_task(g) for g in val_goals]
    test_init, val_init = streams.ints("init", 2)
    distance = TaskObjective(problem.summed_final_distance, "final_distance")
    curves, env, timing, trajectories, step_size = {}, {}, {}, {}, {}
    for name, prob in problems.items():
        loss = LearnedLoss(kind="features", n_inputs=prob.n_loss_inputs,
                           hidden_layer_sizes=(32, 32), random_state=streams.seed_of("init"))
        meta_train(loss, prob, n_meta_iter=n_iter, inner_steps=args.inner_steps or n_updates,
                   tasks_per_iter=args.tasks_per_iter, inner_optimizer=args.solver,
                   inner_lr=args.inner_lr, meta_lr=args.meta_lr, grad_clip=10.0,
                   random_state=streams.seed_of("meta_train"), verbose=0)
        timing[name] = loss.meta_info_["meta_train_time_s"]
        curves[name], env[name], params = train_goals(prob, loss, test, test_init, n_updates)
        with torch.no_grad():
            trajectories[name] = problem.rollout(params[0], test[0].goal)[0][:, 0].numpy()
        step_size[name] = step_size_diagnostic(problem, loss, distance, [problem.batch(test)],
                                               n_updates=n_updates, init_seeds=[[test_init]])
        control = f"task_loss_step_size_control_{name}"
        curves[control], env[control], _ = train_goals(
            problem, distance, test, test_init, n_updates,
            args.inner_lr * step_size[name]["control_lr_factor"], args.solver)
    curves["task_loss_same_lr"], env["task_loss_same_lr"], _ = train_goals(
        problem, distance, test, test_init, n_updates, args.inner_lr, args.solver)
    records = []
    for method, solver, grid in (("task_loss_best_lr", args.solver, SGD_LR_GRID),
                                 ("task_loss_adam_best_lr", "adam", ADAM_LR_GRID)):
        record = tune_lr(lambda lr, solver=solver: train_goals(
            problem, distance, validation, val_init, n_updates, lr, solver)[0][:, -1]
            .mean(), grid, name=f"task loss through the twin ({solver})",
            selected_on=f"{args.n_test} validation goals from their own seed stream, "
            "final distance after the last update")
        curves[method], env[method], _ = train_goals(
            problem, distance, test, test_init, n_updates, record["best_lr"], solver)
        records.append(record)
    ilqr_runs = [ilqr_curve(problem, float(g)) for g in test_goals]
    trajectories["ilqr"] = ilqr_runs[0][1][:, 0]
    return {"curves": {k: v.mean(0) for k, v in curves.items()},
            "final_env": {k: float(np.mean([r["final_distance"] for r in v]))
                          for k, v in env.items()},
            "success_env": {k: float(np.mean([r["success"] for r in v])) for k, v in env.items()},
            "ilqr": {"curve": np.mean([d for d, _, _ in ilqr_runs], 0),
                     **{k: float(np.mean([replay_in_env(float(g), U)[k]
                                          for g, (_, _, U) in zip(test_goals, ilqr_runs,
                                                                  strict=True)]))
                        for k in ("final_distance", "success")}},
            "baselines": records, "step_size": step_size, "meta_train_time_s": timing,
            "trajectories": trajectories, "first_test_goal": float(test_goals[0])}


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    runs = bench.run(run_seed, args)
    methods = list(runs[0]["curves"])
    final = {m: stats([r["curves"][m][-1] for r in runs]) for m in methods}
    at_10 = {m: stats([r["curves"][m][min(10, len(r["curves"][m]) - 1)] for r in runs])
             for m in methods}
    env = {m: stats([r["final_env"][m] for r in runs]) for m in methods}
    success = {m: stats([r["success_env"][m] for r in runs]) for m in methods}
    ilqr_final = stats([r["ilqr"]["curve"][-1] for r in runs])
    baselines = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
    n_updates = len(runs[0]["curves"]["ml3_shaped"]) - 1
    report = ["# MountainCar shaped by an intermediate goal", "",
              f"{args.seeds} seeds; per seed 8 training goals, {args.n_test} held-out goals and "
              f"{args.n_test} validation goals from the seed's streams; {n_updates} policy "
              f"updates ({args.solver}, lr {args.inner_lr}); known dynamics (torch twin). "
              "Mean ± std over seeds of the mean over held-out goals.", "",
              "| method | final distance (twin) | after 10 updates | final distance (gym env) | "
              "success rate (gym env) |", "|---|---|---|---|---|"]
    report += [f"| {m} | {fmt(final[m])} | {at_10[m]['mean']:.3f} | {fmt(env[m])} | "
               f"{fmt(success[m], 2)} |" for m in methods]
    report += [f"| iLQR ({ILQR_ITERS[-1]} it.) | {fmt(ilqr_final)} | | "
               f"{fmt(stats([r['ilqr']['final_distance'] for r in runs]))} | "
               f"{fmt(stats([r['ilqr']['success'] for r in runs]), 2)} |", "",
               "Tuned baseline (the baseline rule):", *baseline_lines(baselines), "",
               "Step-size diagnostic (learned loss vs the task loss, on the held-out goals):"]
    step_size = {name: {"cosine": stats([r["step_size"][name]["cosine"]["mean"] for r in runs]),
                        "norm_ratio": stats([r["step_size"][name]["norm_ratio"]["mean"]
                                             for r in runs]),
                        "n_points": sum(r["step_size"][name]["n_points"] for r in runs)}
                 for name in LEARNED}
    for name in LEARNED:
        report += step_size_lines(name, step_size[name],
                                  final[f"task_loss_step_size_control_{name}"], final[name],
                                  "final distance (twin)")
    steps = np.arange(n_updates + 1)
    horizon = len(runs[0]["trajectories"]["ilqr"])
    figures = {"mountain_car.png": [
        CurvePanel(f"seed 0, held-out goal {runs[0]['first_test_goal']:.2f}", "time step",
                   "car position", np.arange(horizon),
                   {k: [v] for k, v in runs[0]["trajectories"].items()}),
        CurvePanel("final distance vs policy updates", "policy updates",
                   "final distance to goal", steps,
                   {m: [r["curves"][m] for r in runs] for m in methods
                    if "step_size_control" not in m}),
    ]}
    results = {
        "setting": {"dynamics": "rl.envs.mountain_car_step (known, differentiable twin)",
                    "horizon": 100, "gamma": args.gamma, "ilqr_iterations": list(ILQR_ITERS)},
        "final_distance_twin": final, "final_distance_env": env, "success_rate_env": success,
        "ilqr": {"final_distance_twin": ilqr_final,
                 "curve": np.mean([r["ilqr"]["curve"] for r in runs], 0).tolist()},
        "baselines": baselines, "step_size": step_size,
        "curves": {m: [r["curves"][m] for r in runs] for m in methods},
        "meta_train_time_s": [r["meta_train_time_s"] for r in runs],
        "headline": [{
            "experiment": f"MountainCar shaping, final distance after {n_updates} updates "
                          "(shaped loss)",
            "metric": "final distance", "lower_is_better": True, "learned": final["ml3_shaped"],
            "same_lr": final["task_loss_same_lr"], "best_lr": final["task_loss_best_lr"],
            "step_size_control": final["task_loss_step_size_control_ml3_shaped"],
            "cosine": step_size["ml3_shaped"]["cosine"],
            "note": f"unshaped learned loss {final['ml3_unshaped']['mean']:.3g}; "
                    f"iLQR {ilqr_final['mean']:.3g}"}],
    }
    written = bench.write(args, results, report, figures)
    print((args.out / "report.md").read_text())
    return written


if __name__ == "__main__":
    main()
