"""SAC with and without Hindsight Experience Replay on the Dict form of PointmassGoal.

``gym.make("ml3/PointmassGoal-v0", goal_observation="dict")`` gives the
gymnasium-robotics goal-env form (``observation``, ``achieved_goal``,
``desired_goal`` and a vectorised ``compute_reward``) that Stable-Baselines3's
``HerReplayBuffer`` needs. Both agents train on a new goal per episode
(:class:`rl.wrappers.ResampleGoalWrapper`, goals anywhere at radius 0.5-1.5)
with the same SAC settings; HER relabels each stored transition with 4
goals achieved later in its episode ("future"). Every ``--eval-every`` steps
the deterministic policy runs one 30-step episode on each of ``--eval-goals``
goals drawn apart from the training stream; the success rate is the share of
episodes that end within 0.1 of the goal (``info["is_success"]`` at the last
step).

Writes ``results/her_pointmass/{results.json, success_rate.png, report.md}``;
finished runs are cached under ``runs/``, so an interrupted run resumes.
Default: 5 seeds x 5k steps per method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
import torch
from joblib import Parallel, delayed
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback

import rl  # noqa: F401  (registers the ml3/* environments)
from rl.envs import PointmassGoalEnv
from rl.wrappers import ResampleGoalWrapper
from sklearn_ml3._utils import versions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENV_ID = "ml3/PointmassGoal-v0"
METHODS = ("SAC+HER", "SAC")
SAC_SETTINGS = {"learning_starts": 300, "batch_size": 128, "policy_kwargs": {"net_arch": [64, 64]}}
HER_SETTINGS = {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
#: offset of the evaluation goals' seed: never the training goal stream's
EVAL_SEED_OFFSET = 10_000


def evaluate(model: SAC, goals: np.ndarray) -> dict[str, float]:
    """Success rate and mean final distance of the deterministic policy, one episode per goal."""
    success, distance = [], []
    for i, goal in enumerate(goals):
        env = gym.make(ENV_ID, goal=goal, goal_observation="dict")
        obs, _ = env.reset(seed=i)
        truncated = terminated = False
        while not (truncated or terminated):
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
        success.append(bool(info["is_success"]))
        distance.append(float(info["distance"]))
    return {"success_rate": float(np.mean(success)), "final_distance": float(np.mean(distance))}


class _EvalCallback(BaseCallback):
    def __init__(self, goals: np.ndarray, every: int):
        super().__init__()
        self.goals, self.every = goals, every
        self.curve: list[dict[str, float]] = []

    def _record(self) -> None:
        self.curve.append({"timesteps": self.num_timesteps, **evaluate(self.model, self.goals)})

    def _on_training_start(self) -> None:
        self._record()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self._record()
        return True


def run(method: str, seed: int, timesteps: int, eval_every: int, n_eval: int,
        cache: Path) -> dict:
    """Train one agent (cached as JSON) and return its evaluation curve."""
    path = cache / f"{method.replace('+', '_')}-seed{seed}-{timesteps}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    env = ResampleGoalWrapper(gym.make(ENV_ID, goal_observation="dict"), region="all", seed=seed)
    her = {"replay_buffer_class": HerReplayBuffer, "replay_buffer_kwargs": HER_SETTINGS}
    model = SAC("MultiInputPolicy", env, seed=seed, verbose=0, **SAC_SETTINGS,
                **(her if method == "SAC+HER" else {}))
    goals = PointmassGoalEnv.sample_tasks(n_eval, rng=EVAL_SEED_OFFSET + seed, region="all")
    callback = _EvalCallback(goals, eval_every)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=callback)
    result = {"method": method, "seed": seed, "curve": callback.curve,
              "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    path.write_text(json.dumps(result))
    return result


def summarise(runs: list[dict]) -> dict:
    """Per method: the mean and std over seeds of every curve point."""
    out = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        steps = [p["timesteps"] for p in mine[0]["curve"]]
        per_seed = {k: np.array([[p[k] for p in r["curve"]] for r in mine])
                    for k in ("success_rate", "final_distance")}
        out[method] = {
            "seeds": [r["seed"] for r in mine],
            "timesteps": steps,
            **{f"{k}_mean": v.mean(0).tolist() for k, v in per_seed.items()},
            **{f"{k}_std": v.std(0).tolist() for k, v in per_seed.items()},
            "final_success_rate_per_seed": per_seed["success_rate"][:, -1].tolist(),
            "wall_s": float(sum(r["wall_s"] for r in mine)),
            "cpu_s": float(sum(r["cpu_s"] for r in mine)),
        }
    return out


def plot(summary: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for method, s in summary.items():
        mean, std = np.array(s["success_rate_mean"]), np.array(s["success_rate_std"])
        ax.plot(s["timesteps"], mean, label=method)
        ax.fill_between(s["timesteps"], mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="environment steps", ylabel="success rate (held-out goals)",
           title="PointmassGoal, Dict observation", ylim=(-0.02, 1.02))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict, path: Path) -> None:
    lines = ["# SAC with and without HER on PointmassGoal (Dict observation)", "",
             f"{len(results['seeds'])} seeds, {results['timesteps']} steps each, "
             f"{results['eval_goals']} held-out goals per evaluation.", "",
             "| method | success rate | final distance | per seed |", "|---|---|---|---|"]
    for method, s in results["summary"].items():
        lines.append(
            f"| {method} | {s['success_rate_mean'][-1]:.2f} +- {s['success_rate_std'][-1]:.2f} "
            f"| {s['final_distance_mean'][-1]:.3f} +- {s['final_distance_std'][-1]:.3f} "
            f"| {', '.join(f'{x:.2f}' for x in s['final_success_rate_per_seed'])} |")
    lines += ["", "![success rate](success_rate.png)", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=5_000, help="env steps per run")
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--eval-goals", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    parser.add_argument("--out", type=Path, default=Path("results/her_pointmass"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache = args.out / "runs"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(m, s) for s in range(args.seeds) for m in METHODS]
    runs = Parallel(n_jobs=args.jobs)(
        delayed(run)(m, s, args.timesteps, args.eval_every, args.eval_goals, cache)
        for m, s in jobs)
    results = {
        "benchmark": "her_pointmass", "env_id": ENV_ID, "seeds": list(range(args.seeds)),
        "timesteps": args.timesteps, "eval_every": args.eval_every,
        "eval_goals": args.eval_goals, "sac_settings": SAC_SETTINGS,
        "her_settings": HER_SETTINGS, "summary": summarise(runs),
        "threads": 1, "device": "cpu", "versions": versions(),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results["summary"], args.out / "success_rate.png")
    write_report(results, args.out / "report.md")
    return results


if __name__ == "__main__":
    main()
