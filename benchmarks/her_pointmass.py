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

Per seed, the training-goal stream, SAC's seed and the evaluation goals come
from the seed's own streams (the same for both agents). Writes
``results/her_pointmass/{results.json, success_rate.png, report.md}``; each
seed is cached under ``runs/``, so an interrupted run resumes. Default: 5
seeds x 5k steps per method.

Usage::

    python benchmarks/her_pointmass.py --jobs 2
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback

import rl  # noqa: F401  (registers the ml3/* environments)
from rl.envs import PointmassGoalEnv
from rl.wrappers import ResampleGoalWrapper
from sklearn_ml3.experiments.harness import Benchmark, CurvePanel

ENV_ID = "ml3/PointmassGoal-v0"
METHODS = ("SAC+HER", "SAC")
SAC_SETTINGS = {"learning_starts": 300, "batch_size": 128, "policy_kwargs": {"net_arch": [64, 64]}}
HER_SETTINGS = {"n_sampled_goal": 4, "goal_selection_strategy": "future"}


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


def train(method: str, streams, args) -> dict:
    """Train one agent and return its evaluation curve."""
    env = ResampleGoalWrapper(gym.make(ENV_ID, goal_observation="dict"), region="all",
                              seed=streams.seed_of("meta_train"))
    her = {"replay_buffer_class": HerReplayBuffer, "replay_buffer_kwargs": HER_SETTINGS}
    model = SAC("MultiInputPolicy", env, seed=streams.seed_of("init"), verbose=0,
                **SAC_SETTINGS, **(her if method == "SAC+HER" else {}))
    goals = PointmassGoalEnv.sample_tasks(args.eval_goals, rng=streams.rng("meta_test"),
                                          region="all")
    callback = _EvalCallback(goals, args.eval_every)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(args.timesteps, callback=callback)
    return {"curve": callback.curve, "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu}


def run_seed(seed, streams, args) -> dict:
    """Both agents on the same training-goal stream, SAC seed and evaluation goals."""
    return {method: train(method, streams, args) for method in METHODS}


def summarise(runs: list[dict]) -> dict:
    """Per method: the mean and std over seeds of every curve point."""
    out = {}
    for method in METHODS:
        mine = [r[method] for r in runs]
        steps = [p["timesteps"] for p in mine[0]["curve"]]
        per_seed = {k: np.array([[p[k] for p in r["curve"]] for r in mine])
                    for k in ("success_rate", "final_distance")}
        out[method] = {
            "timesteps": steps,
            "success_rate_per_seed": per_seed["success_rate"].tolist(),
            **{f"{k}_mean": v.mean(0).tolist() for k, v in per_seed.items()},
            **{f"{k}_std": v.std(0).tolist() for k, v in per_seed.items()},
            "final_success_rate_per_seed": per_seed["success_rate"][:, -1].tolist(),
            "wall_s": float(sum(r["wall_s"] for r in mine)),
            "cpu_s": float(sum(r["cpu_s"] for r in mine)),
        }
    return out


def report(results: dict, args) -> list[str]:
    lines = ["# SAC with and without HER on PointmassGoal (Dict observation)", "",
             f"{args.seeds} seeds, {args.timesteps} steps each, "
             f"{args.eval_goals} held-out goals per evaluation.", "",
             "| method | success rate | final distance | per seed |", "|---|---|---|---|"]
    for method, s in results["summary"].items():
        lines.append(
            f"| {method} | {s['success_rate_mean'][-1]:.2f} +- {s['success_rate_std'][-1]:.2f} "
            f"| {s['final_distance_mean'][-1]:.3f} +- {s['final_distance_std'][-1]:.3f} "
            f"| {', '.join(f'{x:.2f}' for x in s['final_success_rate_per_seed'])} |")
    return lines


bench = Benchmark("her_pointmass", __doc__)
bench.add_argument("--timesteps", type=int, default=None,
                   help="env steps per run (default 5,000; --full 20,000)")
bench.add_argument("--eval-every", type=int, default=1_000)
bench.add_argument("--eval-goals", type=int, default=20)


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    args.timesteps = args.timesteps or bench.budget(args, 5_000, full=20_000, quick=1_000)
    summary = summarise(bench.run(run_seed, args))
    results = {"env_id": ENV_ID, "timesteps": args.timesteps, "eval_every": args.eval_every,
               "eval_goals": args.eval_goals, "sac_settings": SAC_SETTINGS,
               "her_settings": HER_SETTINGS, "summary": summary, "device": "cpu"}
    steps = summary[METHODS[0]]["timesteps"]
    figures = {"success_rate.png": [CurvePanel(
        "PointmassGoal, Dict observation", "environment steps",
        "success rate (held-out goals)", steps,
        {m: summary[m]["success_rate_per_seed"] for m in METHODS})]}
    return bench.write(args, results, report(results, args), figures)


if __name__ == "__main__":
    main()
