"""Model-based ML3 on PointmassGoal and ReacherGoal (paper IV-A.2, Fig. 3).

Per seed: meta-train a loss on 10 goals in the right half-plane while a
dynamics ensemble is learned from rollouts; meta-test on 10 new goals (5 in
the right, 5 in the left half-plane) with the learned loss alone, rolled out
in the real environment; compare with SGD on the task loss (final distance)
through the learned model at the same learning rate and at its best learning
rate from a grid (chosen on the test goals themselves, in the baseline's
favour). Metric: real-environment final distance to the goal vs number of
policy updates.

Each seed is saved to ``results/model_based_<env>/seeds/seed_<k>.json`` as
soon as it is done, and the report aggregates every saved seed, so a run can
be split (``--seeds 0 1`` then ``--seeds 2 3 4``) and resumed.

Usage::

    python benchmarks/model_based.py --env pointmass            # 5 seeds, ~2.5 min CPU/seed
    python benchmarks/model_based.py --env reacher              # 5 seeds, ~5 min CPU/seed
    python benchmarks/model_based.py --env pointmass --full     # longer meta-training
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

from rl.dynamics import DynamicsEnsemble  # noqa: E402
from rl.meta.model_based import (  # noqa: E402
    FEATURE_SETS,
    env_spec,
    learned_rates,
    meta_train_model_based_loss,
    policy_trajectory,
    train_policy_with_loss,
    train_policy_with_model,
)
from sklearn_ml3._utils import versions  # noqa: E402

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
CONFIGS = {
    "pointmass": {
        "env_id": "ml3/PointmassGoal-v0", "seeds": 5,
        # goal-frame loss features; each policy is trained for the 40 updates
        # it gets at meta-test, phi updated after every one of them
        "meta": {"n_meta_iter": 400, "inner_steps": 40, "tasks_per_iter": 4,
                 "inner_lr": 0.1, "meta_lr": 3e-3, "features": "goal_frame",
                 "learned_lr": True},
        "full_meta": {"n_meta_iter": 1200},
        "n_updates": 40, "eval_every": 5, "lr_grid": LR_GRID,
    },
    "reacher": {
        "env_id": "ml3/ReacherGoal-v0", "seeds": 5,
        # the fingertip's goal direction seen from the joints (J(q)^T d frame);
        # 200 meta-iterations were not enough for it, 600 were
        "meta": {"n_meta_iter": 600, "inner_steps": 40, "tasks_per_iter": 4,
                 "inner_lr": 0.1, "meta_lr": 3e-3, "features": "joint_frame",
                 "learned_lr": True},
        "full_meta": {"n_meta_iter": 1200},
        "n_updates": 40, "eval_every": 5, "lr_grid": (1e-4, 3e-4, 1e-3, 1e-2, 1e-1, 1.0),
    },
}


def run_seed(name: str, seed: int, full: bool, overrides: dict | None = None) -> dict:
    cfg = CONFIGS[name]
    env_id = cfg["env_id"]
    spec = env_spec(env_id)
    meta = dict(cfg["meta"], **(cfg["full_meta"] if full else {}), **(overrides or {}))
    rng = np.random.default_rng(seed)
    train_goals = spec.sample_goals(10, rng, "right")
    test_rng = np.random.default_rng(10_000 + seed)  # a stream meta-training never sees
    test_goals = np.concatenate([spec.sample_goals(5, test_rng, "right"),
                                 spec.sample_goals(5, test_rng, "left")])
    dynamics = DynamicsEnsemble(spec.state_dim, spec.action_dim, random_state=seed)
    loss = meta_train_model_based_loss(env_id, train_goals, dynamics=dynamics,
                                       random_state=seed, verbose=1, **meta)
    n_updates, every = cfg["n_updates"], cfg["eval_every"]
    lr = meta["inner_lr"]
    steps = list(range(0, n_updates + 1, every))
    if steps[-1] != n_updates:
        steps.append(n_updates)
    init_seed = 1_000 + seed
    t0 = time.perf_counter()
    params_ml3, ml3 = train_policy_with_loss(loss, env_id, test_goals, n_updates,
                                             eval_every=every, random_state=init_seed)
    ml3_time = time.perf_counter() - t0
    # the learning-rate multiplier the loss outputs along the way (1 without learned_lr)
    rates = {}
    for k in sorted({0, min(5, n_updates), n_updates}):
        params_k = params_ml3 if k == n_updates else train_policy_with_loss(
            loss, env_id, test_goals, k, eval_every=max(k, 1), random_state=init_seed)[0]
        rates[k] = learned_rates(loss, params_k, env_id, test_goals).tolist()
    grid = {}
    for grid_lr in tqdm(cfg["lr_grid"], desc=f"{name} seed {seed}: lr grid", leave=False):
        _, dist = train_policy_with_model(dynamics, env_id, test_goals, n_updates, lr=grid_lr,
                                          eval_every=every, random_state=init_seed)
        grid[grid_lr] = dist
    if lr not in grid:
        _, grid[lr] = train_policy_with_model(dynamics, env_id, test_goals, n_updates, lr=lr,
                                              eval_every=every, random_state=init_seed)
    finite = {k: v for k, v in grid.items() if np.isfinite(v[:, -1]).all()}
    best_lr = min(finite, key=lambda k: finite[k][:, -1].mean())
    # trajectories of the learned loss's policies on meta-train and meta-test goals
    params_train, _ = train_policy_with_loss(loss, env_id, train_goals[:5], n_updates,
                                             eval_every=n_updates, random_state=init_seed)
    hidden = loss.meta_info_["policy"]["hidden_layer_sizes"]

    def paths(params, goals):
        return [policy_trajectory({k: v[i] for k, v in params.items()}, env_id, g,
                                  hidden).tolist() for i, g in enumerate(goals)]

    return {
        "seed": seed, "env_id": env_id, "full": full, "meta_options": meta,
        "train_goals": train_goals.tolist(), "test_goals": test_goals.tolist(),
        "test_goal_region": ["right"] * 5 + ["left"] * 5,
        "steps": steps, "lr": lr, "best_lr": best_lr,
        "ml3": ml3.tolist(), "model_same_lr": grid[lr].tolist(),
        "learned_rates": {str(k): v for k, v in rates.items()},
        "model_best_lr": grid[best_lr].tolist(),
        "lr_grid": list(cfg["lr_grid"]),
        "model_grid_final": {str(k): v[:, -1].tolist() for k, v in grid.items()},
        "meta_history": loss.meta_history_.tolist(),
        "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
        "meta_test_ml3_wall_s": ml3_time,
        "dynamics": dynamics.describe(),
        "trajectories": {"train": paths(params_train, train_goals[:5]),
                         "test": paths(params_ml3, test_goals),
                         "train_goals": train_goals[:5].tolist()},
    }


def _stats(runs: list[dict], key: str, goals=slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of the per-seed goal mean, per evaluation step."""
    per_seed = np.array([np.asarray(r[key])[goals].mean(0) for r in runs])
    return per_seed.mean(0), per_seed.std(0)


def report(name: str, out: Path) -> dict:
    runs = [json.loads(p.read_text()) for p in sorted((out / "seeds").glob("seed_*.json"))]
    if not runs:
        raise SystemExit(f"no seed results under {out / 'seeds'}")
    steps = runs[0]["steps"]
    methods = {"ml3": "ML3 learned loss (real env, no model)",
               "model_same_lr": f"task loss through learned model, lr {runs[0]['lr']:g}",
               "model_best_lr": "task loss through learned model, best lr of grid"}
    summary = {}
    for key in methods:
        row = {}
        for region, sl in (("all", slice(None)), ("right", slice(0, 5)), ("left", slice(5, 10))):
            mean, std = _stats(runs, key, sl)
            row[region] = {"mean": mean.tolist(), "std": std.tolist()}
        summary[key] = row
    meta_wall = [r["meta_train_time_s"]["wall"] for r in runs]
    meta_cpu = [r["meta_train_time_s"]["cpu"] for r in runs]
    result = {
        "benchmark": f"model_based_{name}", "env_id": runs[0]["env_id"],
        "seeds": [r["seed"] for r in runs], "steps": steps, "summary": summary,
        "best_lr_per_seed": [r["best_lr"] for r in runs], "lr_grid": runs[0]["lr_grid"],
        "meta_train_time_s": {"wall_mean": float(np.mean(meta_wall)),
                              "cpu_mean": float(np.mean(meta_cpu)),
                              "wall_per_seed": meta_wall, "cpu_per_seed": meta_cpu},
        "meta_options": runs[0]["meta_options"], "full": runs[0]["full"],
        "threads": torch.get_num_threads(), "versions": versions(), "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))

    # learning curves
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    for ax, region in zip(axes, ("all", "right", "left"), strict=True):
        for key, label in methods.items():
            mean = np.asarray(summary[key][region]["mean"])
            std = np.asarray(summary[key][region]["std"])
            ax.plot(steps, mean, label=label)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{runs[0]['env_id']}: test goals ({region})")
        ax.set_xlabel("policy updates")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final distance to goal (real env)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "distance_vs_updates.png", dpi=120)
    plt.close(fig)

    # trajectories (Fig. 3a style), first seed
    run = runs[0]
    fig, ax = plt.subplots(figsize=(5, 5))
    for path, goal in zip(run["trajectories"]["train"], run["trajectories"]["train_goals"],
                          strict=True):
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], color="tab:blue", alpha=0.8)
        ax.scatter(*goal, color="tab:blue", marker="x")
    for path, goal in zip(run["trajectories"]["test"], run["test_goals"], strict=True):
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], color="tab:orange", alpha=0.8)
        ax.scatter(*goal, color="tab:orange", marker="x")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_aspect("equal")
    ax.set_title(f"ML3 policies after {steps[-1]} updates\n"
                 "blue: meta-train goals, orange: meta-test goals")
    fig.tight_layout()
    fig.savefig(out / "trajectories.png", dpi=120)
    plt.close(fig)

    # columns: the first evaluations after the start, the middle and the end
    cols = sorted({i for i in (1, 2, len(steps) // 2, len(steps) - 1) if 0 < i < len(steps)})
    lines = [f"# Model-based ML3 on {runs[0]['env_id']}", "",
             f"Seeds: {result['seeds']}; meta-training options: {runs[0]['meta_options']}; "
             f"lr grid {runs[0]['lr_grid']} (best per seed: {result['best_lr_per_seed']}).", "",
             f"Meta-training wall time {np.mean(meta_wall):.1f} s, CPU "
             f"{np.mean(meta_cpu):.1f} s per seed (one thread).", "",
             "Real-environment final distance to the goal (mean +- std over seeds of the "
             "10-goal mean; right/left: the 5 goals of each half-plane):", "",
             "| method | " + " | ".join(f"{steps[i]} updates" for i in cols)
             + " | right, final | left, final |",
             "|---|" + "---|" * (len(cols) + 2)]
    for key, label in methods.items():
        s = summary[key]
        cells = [f"{s['all']['mean'][i]:.3f} +- {s['all']['std'][i]:.3f}" for i in cols]
        cells += [f"{s[r]['mean'][-1]:.3f} +- {s[r]['std'][-1]:.3f}" for r in ("right", "left")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if all("learned_rates" in r for r in runs):
        keys = list(runs[0]["learned_rates"])
        per_seed = np.array([[np.mean(r["learned_rates"][k]) for k in keys] for r in runs])
        lines += ["", "Learning-rate multiplier alpha output by the loss (step = lr * alpha; "
                  "mean +- std over seeds of the 10-goal mean): "
                  + ", ".join(f"after {k} updates: {m:.3g} +- {sd:.2g}" for k, m, sd in
                              zip(keys, per_seed.mean(0), per_seed.std(0), strict=True)) + "."]
    lines += ["", "![curves](distance_vs_updates.png)", "", "![trajectories](trajectories.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(CONFIGS), default="pointmass")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="seeds to run (default: 5)")
    parser.add_argument("--full", action="store_true", help="longer meta-training")
    parser.add_argument("--report-only", action="store_true",
                        help="aggregate the saved seeds without running any")
    parser.add_argument("--inner-lr", type=float, default=None,
                        help="policy SGD step size (default: the env's CONFIGS entry)")
    parser.add_argument("--features", default=None,
                        choices=FEATURE_SETS,
                        help="loss features (default: the env's CONFIGS entry)")
    parser.add_argument("--unroll", type=int, default=None,
                        help="policy updates per meta-gradient (default 1)")
    parser.add_argument("--meta-iter", type=int, default=None,
                        help="meta-iterations (default: the env's CONFIGS entry)")
    parser.add_argument("--no-learned-lr", action="store_true",
                        help="a loss without the learned learning-rate output")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    overrides = {} if args.inner_lr is None else {"inner_lr": args.inner_lr}
    if args.no_learned_lr:
        overrides["learned_lr"] = False
    if args.features is not None:
        overrides["features"] = args.features
    if args.unroll is not None:
        overrides["unroll"] = args.unroll
    if args.meta_iter is not None:
        overrides["n_meta_iter"] = args.meta_iter
    torch.set_num_threads(1)
    out = args.out / f"model_based_{args.env}"
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    seeds = args.seeds if args.seeds is not None else range(CONFIGS[args.env]["seeds"])
    if not args.report_only:
        for seed in seeds:
            path = out / "seeds" / f"seed_{seed}.json"
            if path.exists():
                print(f"seed {seed}: already done ({path})")
                continue
            result = run_seed(args.env, seed, args.full, overrides)
            path.write_text(json.dumps(result))
    report(args.env, out)


if __name__ == "__main__":
    main()
