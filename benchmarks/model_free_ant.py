"""Model-free ML3 on AntGoal (paper IV-A.3): an opt-in long benchmark.

Meta-trains one policy loss on AntGoal training goals (checkpointed), then,
per seed, trains fresh policies on held-out goals with :class:`rl.ML3`
(learned loss only) and with Stable-Baselines3 PPO (SB3's default
hyper-parameters, normalised observations; no lr grid: one Ant run costs
minutes) on the same sample budget, and reports the final distance of
deterministic evaluation episodes. Ant costs about 200 us per simulated step
and about 1 ms per learning step on one thread, so the default is a reduced
budget (3 goals x 5 seeds, 20k steps per run, 50 meta-iterations; an estimated 15
minutes with ``--jobs 2``, not yet timed); ``--quick`` is the tiny run of the test suite and
``--full`` the paper-scale budget (hours).

Usage::

    python benchmarks/model_free_ant.py --jobs 2   # 3 goals x 5 seeds, 20k steps
    python benchmarks/model_free_ant.py --full     # 10 goals x 5 seeds, 1M steps
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rl import ML3, meta_train_policy_loss
from rl.envs import AntGoalEnv
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.experiments.harness import Benchmark, fmt, stats

ENV_ID = "ml3/AntGoal-v0"
#: goals, budget, meta-iterations, tasks per iteration, episodes per rollout, rollouts per
#: policy, horizon; one full-batch SGD step per rollout (as on ReacherGoal)
BUDGETS = {
    "quick": {"goals": 1, "budget": 64, "meta_iter": 2, "tasks": 1, "episodes": 2,
              "rollouts_per_policy": 1, "horizon": 10},
    # a reduced budget, estimated at 15 minutes on 2 cores (Ant costs ~1 ms per
    # learning step here); far below what PPO needs on Ant
    "default": {"goals": 3, "budget": 20_000, "meta_iter": 50, "tasks": 2, "episodes": 5,
                "rollouts_per_policy": 5, "horizon": 200},
    "full": {"goals": 10, "budget": 1_000_000, "meta_iter": 1000, "tasks": 4, "episodes": 10,
             "rollouts_per_policy": 20, "horizon": 200},
}

bench = Benchmark("model_free_ant", __doc__)


def budget_of(args) -> dict:
    return BUDGETS[bench.budget(args, "default", full="full", quick="quick")]


def training_goals() -> np.ndarray:
    return AntGoalEnv.sample_tasks(30, np.random.default_rng(1))


def heldout_goals(n: int) -> np.ndarray:
    return AntGoalEnv.sample_tasks(10, np.random.default_rng(2))[:n]


def loss_file(args) -> Path:
    """Where the meta-trained loss of this budget is saved."""
    return Path(args.out) / f"ant_{budget_of(args)['meta_iter']}.ml3"


def meta_trained_loss(args) -> LearnedLoss:
    """One loss for all seeds, meta-trained once (resumable) and then loaded."""
    cfg = budget_of(args)
    path = loss_file(args)
    if path.exists():
        return LearnedLoss.load(path)
    loss = meta_train_policy_loss(
        ENV_ID, goals=training_goals(), n_meta_iter=cfg["meta_iter"],
        tasks_per_iter=cfg["tasks"], rollout_episodes=cfg["episodes"], horizon=cfg["horizon"],
        batch_size=None, rollouts_per_policy=cfg["rollouts_per_policy"], log_std_init=-0.5,
        inner_optimizer="sgd", inner_lr=0.1,
        # a free loss network, one SGD step per rollout: Ant has no batched twin, so the ES
        # default of ReacherGoal does not apply
        loss_structure="free", loss_hidden_layer_sizes=(64, 64), n_epochs=1,
        meta_lr=3e-3, checkpoint=path.with_suffix(".ckpt"), random_state=0,
        verbose=0 if args.quick else 1)
    loss.save(path)
    return loss


def final_distance(model, goal, horizon: int, seed: int, n_episodes: int = 2) -> float:
    """Mean final torso-goal distance of deterministic episodes."""
    env = gym.make(ENV_ID, goal=goal, max_episode_steps=horizon)
    vec_normalize = model.get_vec_normalize_env()
    dists = []
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            inp = obs if vec_normalize is None else vec_normalize.normalize_obs(obs)
            obs, _, terminated, truncated, _ = env.step(model.predict(inp, deterministic=True)[0])
            done = terminated or truncated
        dists.append(float(np.linalg.norm(env.unwrapped.get_body_com("torso")[:2] - goal)))
    env.close()
    return float(np.mean(dists))


def run_seed(seed, streams, args) -> dict:
    """ML3 and PPO on every held-out goal; the mean final distance over goals."""
    cfg = budget_of(args)
    loss = LearnedLoss.load(loss_file(args))
    sb3_seed = streams.seed_of("init")
    final = {"ML3": [], "PPO": []}
    for goal in heldout_goals(cfg["goals"]):
        for method in final:
            env = DummyVecEnv([lambda goal=goal: gym.make(ENV_ID, goal=goal,
                                                          max_episode_steps=cfg["horizon"])])
            if method == "ML3":
                model = ML3("MlpPolicy", env, learned_loss=loss, seed=sb3_seed)
            else:
                n_steps = min(2048, cfg["budget"])
                model = PPO("MlpPolicy", VecNormalize(env, norm_reward=False), seed=sb3_seed,
                            n_steps=n_steps, batch_size=min(64, n_steps))
            model.learn(total_timesteps=cfg["budget"])
            final[method].append(final_distance(model, goal, cfg["horizon"], 10_000 + seed))
    return {"final_distance": {m: float(np.mean(v)) for m, v in final.items()},
            "final_distance_per_goal": final}


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    cfg = budget_of(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    loss = meta_trained_loss(args)
    runs = bench.run(run_seed, args)
    final = {m: stats([r["final_distance"][m] for r in runs]) for m in ("ML3", "PPO")}
    goals = heldout_goals(cfg["goals"])
    start = float(np.mean(np.linalg.norm(goals, axis=1)))
    report = [
        "# Model-free ML3 on AntGoal", "",
        f"{cfg['goals']} held-out goals x {args.seeds} seeds, {cfg['budget']} steps per run; "
        f"meta-training {cfg['meta_iter']} iterations, "
        f"{loss.meta_info_['meta_train_time_s']['cpu']:.0f} s CPU. Mean ± std over seeds of "
        "the mean over goals.", "",
        "| method | final distance |", "|---|---|",
        *(f"| {m} | {fmt(v)} |" for m, v in final.items()),
        "", f"Mean goal distance from the start: {start:.3f}.",
    ]
    results = {"config": cfg, "test_goals": goals.tolist(),
               "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
               "final_distance": final, "initial_goal_distance": start,
               "seed_time_s": [r["seed_time_s"] for r in runs]}
    return bench.write(args, results, report)


if __name__ == "__main__":
    main()
