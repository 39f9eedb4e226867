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
  learned losses' optimizer and step size, and with Adam at its best step size
  from a grid (picked on the training goals).

Meta-training follows the scheme that worked for the model-based PointmassGoal
experiment: an episode is as long as the meta-test run (``inner_steps`` =
``--test-updates`` plain SGD policy updates, ``phi`` updated after every one),
4 goals per meta-iteration, and goal-relative loss inputs
``(g - x_t, v_t / 0.07, a_t)``.

At meta-test the learned losses train fresh policies on held-out goals
alone; each trained policy is also run in the gymnasium env
``ml3/MountainCarGoal-v0``. Metric: final distance to the goal after each
policy update; success: the env's ``is_success`` (distance < 0.05) at the
last step.

Usage::

    python benchmarks/shaping_mountain_car.py           # 5 seeds x 400 meta-iterations (~10 min)
    python benchmarks/shaping_mountain_car.py --full    # 5 seeds x 2000 meta-iterations
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

from rl.baselines import ilqr  # noqa: E402
from rl.envs.mountain_car import MountainCarGoalEnv, mountain_car_step  # noqa: E402
from rl.meta.shaping import (  # noqa: E402
    MountainCarShapingProblem,
    evaluate_in_env,
    train_policy_on_task_loss,
    train_policy_with_loss,
)
from sklearn_ml3 import LearnedLoss, meta_train  # noqa: E402
from sklearn_ml3._utils import versions  # noqa: E402

ILQR_ITERS = (0, 1, 2, 5, 10, 25)
TASK_LR_GRID = (0.01, 0.03, 0.1, 0.3)


def new_loss(problem, seed: int) -> LearnedLoss:
    return LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs,
                       hidden_layer_sizes=(32, 32), random_state=seed)


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


def summary(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 seeds, 2000 meta-iterations")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--meta-iter", type=int, default=None)
    parser.add_argument("--inner-steps", type=int, default=None,
                        help="policy updates per meta-training episode (default: --test-updates)")
    parser.add_argument("--tasks-per-iter", type=int, default=4)
    parser.add_argument("--loss-features", default="relative", choices=("relative", "absolute"))
    parser.add_argument("--inner-lr", type=float, default=30.0)
    parser.add_argument("--solver", default="sgd")
    parser.add_argument("--meta-lr", type=float, default=1e-2)
    parser.add_argument("--gamma", type=float, default=0.3)
    parser.add_argument("--test-updates", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--out", default="results/shaping_mountain_car")
    args = parser.parse_args(argv)
    if args.inner_steps is None:
        args.inner_steps = args.test_updates
    torch.set_num_threads(1)
    n_seeds = args.seeds or 5
    n_iter = args.meta_iter or (2000 if args.full else 400)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(12345)
    train_goals = MountainCarGoalEnv.sample_tasks(8, rng, "right").ravel()
    test_goals = MountainCarGoalEnv.sample_tasks(args.n_test, rng, "right").ravel()
    problems = {
        "ml3_shaped": MountainCarShapingProblem(train_goals, shaped=True, gamma=args.gamma,
                                                policy_hidden=None,
                                                loss_features=args.loss_features),
        "ml3_unshaped": MountainCarShapingProblem(train_goals, shaped=False, policy_hidden=None,
                                                  loss_features=args.loss_features),
    }
    problem = problems["ml3_unshaped"]
    test_tasks = [problem.make_task(g) for g in test_goals]  # no extra information

    curves = {name: [] for name in problems}
    env_results = {name: [] for name in problems}
    timing = {name: [] for name in problems}
    losses = {}
    for seed in tqdm(range(n_seeds), desc="seeds"):
        for name, prob in problems.items():
            loss = new_loss(prob, seed)
            meta_train(loss, prob, n_meta_iter=n_iter, inner_steps=args.inner_steps,
                       tasks_per_iter=args.tasks_per_iter, inner_optimizer=args.solver,
                       inner_lr=args.inner_lr,
                       meta_lr=args.meta_lr, grad_clip=10.0, random_state=seed, verbose=1)
            timing[name].append(loss.meta_info_["meta_train_time_s"])
            losses[(name, seed)] = loss
            loss.save(out / f"{name}_seed{seed}.safetensors")
            seed_curves, seed_env = [], []
            for k, task in enumerate(test_tasks):
                curve, params = train_policy_with_loss(
                    prob, loss, task, n_updates=args.test_updates, lr=args.inner_lr,
                    solver=args.solver, seed=1000 * seed + k)
                seed_curves.append(curve)
                seed_env.append(evaluate_in_env(prob, params, float(task.goal[0])))
            curves[name].append(np.mean(seed_curves, 0))
            env_results[name].append(seed_env)

    # hand-written loss: the final distance through the twin (Adam), lr picked on training goals
    train_tasks = [problem.make_task(g) for g in train_goals[:4]]
    grid_score = {}
    for lr in TASK_LR_GRID:
        finals = [train_policy_on_task_loss(problem, t, n_updates=args.test_updates, lr=lr,
                                            seed=s)[0][-1]
                  for t in train_tasks for s in range(2)]
        grid_score[lr] = float(np.mean(finals))
    best_lr = min(grid_score, key=grid_score.get)
    for label, lr, solver in (("task_loss_same_lr", args.inner_lr, args.solver),
                              ("task_loss_best_lr", best_lr, "adam")):
        curves[label], env_results[label] = [], []
        for seed in range(n_seeds):
            seed_curves, seed_env = [], []
            for k, task in enumerate(test_tasks):
                curve, params = train_policy_on_task_loss(
                    problem, task, n_updates=args.test_updates, lr=lr, solver=solver,
                    seed=1000 * seed + k)
                seed_curves.append(curve)
                seed_env.append(evaluate_in_env(problem, params, float(task.goal[0])))
            curves[label].append(np.mean(seed_curves, 0))
            env_results[label].append(seed_env)

    ilqr_curves, ilqr_env, ilqr_traj = [], [], None
    for task in tqdm(test_tasks, desc="iLQR"):
        goal = float(task.goal[0])
        dist, X, U = ilqr_curve(problem, goal)
        ilqr_curves.append(dist)
        ilqr_env.append(replay_in_env(goal, U))
        ilqr_traj = X if ilqr_traj is None else ilqr_traj

    results = {
        "setting": {
            "dynamics": "rl.envs.mountain_car_step (known, differentiable twin)",
            "train_goals": train_goals.tolist(), "test_goals": test_goals.tolist(),
            "horizon": problem.horizon, "intermediate": problems["ml3_shaped"].intermediate,
            "gamma": args.gamma, "seeds": n_seeds, "meta_iter": n_iter,
            "inner_steps": args.inner_steps, "tasks_per_iter": args.tasks_per_iter,
            "loss_features": args.loss_features, "inner_lr": args.inner_lr, "solver": args.solver,
            "meta_lr": args.meta_lr, "test_updates": args.test_updates,
            "task_loss_lr_grid": grid_score, "task_loss_best_lr": best_lr,
            "ilqr_iterations": list(ILQR_ITERS),
        },
        "final_distance_twin": {
            name: summary([c[-1] for c in cs]) for name, cs in curves.items()},
        "final_distance_env": {
            name: summary([np.mean([r["final_distance"] for r in rs]) for rs in env])
            for name, env in env_results.items()},
        "success_rate_env": {
            name: summary([np.mean([r["success"] for r in rs]) for rs in env])
            for name, env in env_results.items()},
        "ilqr": {
            "final_distance_twin": summary([d[-1] for d in ilqr_curves]),
            "final_distance_env": summary([r["final_distance"] for r in ilqr_env]),
            "success_rate_env": float(np.mean([r["success"] for r in ilqr_env])),
            "curve": np.mean(ilqr_curves, 0).tolist(),
        },
        "curves": {name: np.asarray(cs).tolist() for name, cs in curves.items()},
        "meta_train_time_s": {
            name: {"wall": summary([t["wall"] for t in ts]), "cpu": summary([t["cpu"] for t in ts])}
            for name, ts in timing.items()},
        "versions": versions(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))

    # Fig. 6a: trajectories on the first test goal (seed 0)
    task = test_tasks[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for name in problems:
        _, params = train_policy_with_loss(problems[name], losses[(name, 0)], task,
                                           n_updates=args.test_updates, lr=args.inner_lr,
                                           solver=args.solver)
        with torch.no_grad():
            states, _ = problem.rollout(params, task.goal)
        ax.plot(states[:, 0].numpy(), label=name.replace("_", " "))
    ax.plot(ilqr_traj[:, 0], label=f"iLQR ({ILQR_ITERS[-1]} it.)")
    ax.axhline(float(task.goal[0]), color="k", ls="--", lw=0.8, label="goal")
    ax.set_xlabel("time step")
    ax.set_ylabel("car position")
    ax.set_title("meta-test trajectory (held-out goal)")
    ax.legend(fontsize=8)
    # Fig. 6b: final distance vs policy updates
    ax = axes[1]
    steps = np.arange(args.test_updates + 1)
    for name, cs in curves.items():
        cs = np.asarray(cs)
        ax.plot(steps, cs.mean(0), label=name.replace("_", " "))
        ax.fill_between(steps, cs.mean(0) - cs.std(0), cs.mean(0) + cs.std(0), alpha=0.2)
    ax.plot(ILQR_ITERS, results["ilqr"]["curve"], "o-", label="iLQR (iterations)")
    ax.set_xlabel("policy updates / iLQR iterations")
    ax.set_ylabel("final distance to goal")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mountain_car.png", dpi=120)
    plt.close(fig)

    lines = [
        "# MountainCar shaped by an intermediate goal",
        "",
        f"{n_seeds} seeds x {n_iter} meta-iterations, {len(test_goals)} held-out goals, "
        f"{args.test_updates} policy updates ({args.solver}, lr {args.inner_lr}); "
        "known dynamics (torch twin).",
        "",
        "| method | final distance (twin) | final distance (gym env) | success rate (gym env) |",
        "|---|---|---|---|",
    ]
    for name in curves:
        d = results["final_distance_twin"][name]
        e = results["final_distance_env"][name]
        s = results["success_rate_env"][name]
        lines.append(f"| {name} | {d['mean']:.3f} +- {d['std']:.3f} | {e['mean']:.3f} +- "
                     f"{e['std']:.3f} | {s['mean']:.2f} +- {s['std']:.2f} |")
    il = results["ilqr"]
    lines.append(f"| iLQR ({ILQR_ITERS[-1]} it.) | {il['final_distance_twin']['mean']:.3f} | "
                 f"{il['final_distance_env']['mean']:.3f} | {il['success_rate_env']:.2f} |")
    lines += ["", f"task loss lr grid (training goals): {grid_score}; best {best_lr}", "",
              "![](mountain_car.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
