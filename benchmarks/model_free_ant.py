"""Model-free ML3 on AntGoal (paper IV-A.3): an opt-in long benchmark.

Meta-trains one policy loss on AntGoal training goals (checkpointed), then,
per seed, trains fresh policies on held-out goals with :class:`rl.ML3`
(learned loss only), with the same loss network before meta-training (the
control: what ML3 does without what meta-training learned) and with
Stable-Baselines3 PPO (SB3's default hyper-parameters, normalised
observations) at its lr by the baseline rule (chosen on validation goals
from the seed's own stream, grid extended until the best is interior), on the
same sample budget, and reports the final distance of deterministic
evaluation episodes. Ant costs about 200 us per simulated step and about
1 ms per learning step on one thread, so the default is a reduced budget (3
goals x 5 seeds, 2 validation goals, 20k steps per run, 50
meta-iterations); ``--quick`` is the tiny run of the test suite and
``--full`` the paper-scale budget (hours).

Usage::

    python benchmarks/model_free_ant.py --jobs 2   # 3 goals x 5 seeds, 20k steps
    python benchmarks/model_free_ant.py --full     # 10 goals x 5 seeds, 1M steps
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rl import ML3, meta_train_policy_loss
from rl.envs import AntGoalEnv
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.experiments.harness import Benchmark, baseline_lines, fmt, stats
from sklearn_ml3.meta import tune_lr, untrained_control

ENV_ID = "ml3/AntGoal-v0"
#: PPO's starting lr grid for the baseline rule (SB3's default 3e-4 in the middle).
PPO_LR_GRID = (1e-4, 3e-4, 1e-3)
METHODS = ("ML3", "ML3-untrained", "PPO, tuned lr")
#: held-out and validation goals, budget, meta-iterations, tasks per iteration, episodes
#: per rollout, rollouts per policy, horizon; one full-batch SGD step per rollout (as on
#: ReacherGoal)
BUDGETS = {
    "quick": {"goals": 1, "validation_goals": 1, "budget": 64, "meta_iter": 2, "tasks": 1,
              "episodes": 2, "rollouts_per_policy": 1, "horizon": 10},
    # a reduced budget (Ant costs ~1 ms per learning step here); far below what PPO needs
    "default": {"goals": 3, "validation_goals": 2, "budget": 20_000, "meta_iter": 50,
                "tasks": 2, "episodes": 5, "rollouts_per_policy": 5, "horizon": 200},
    "full": {"goals": 10, "validation_goals": 3, "budget": 1_000_000, "meta_iter": 1000,
             "tasks": 4, "episodes": 10, "rollouts_per_policy": 20, "horizon": 200},
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


def train_and_measure(method, goal, cfg, sb3_seed, seed, loss=None, lr=None) -> float:
    """One run of ``method`` ("ML3" with ``loss`` or "PPO" at ``lr``): its final distance."""
    env = DummyVecEnv([lambda: gym.make(ENV_ID, goal=goal, max_episode_steps=cfg["horizon"])])
    if method == "ML3":
        with warnings.catch_warnings():  # the control is not meta-trained, on purpose
            warnings.filterwarnings("ignore", message="this LearnedLoss has not been meta")
            model = ML3("MlpPolicy", env, learned_loss=loss, seed=sb3_seed)
    else:
        n_steps = min(2048, cfg["budget"])
        model = PPO("MlpPolicy", VecNormalize(env, norm_reward=False), seed=sb3_seed,
                    n_steps=n_steps, batch_size=min(64, n_steps), learning_rate=lr)
    model.learn(total_timesteps=cfg["budget"])
    return final_distance(model, goal, cfg["horizon"], 10_000 + seed)


def run_seed(seed, streams, args) -> dict:
    """ML3, its untrained control and PPO (lr by the baseline rule) on every held-out goal."""
    cfg = budget_of(args)
    loss = LearnedLoss.load(loss_file(args))
    sb3_seed = streams.seed_of("init")
    val_goals = AntGoalEnv.sample_tasks(cfg["validation_goals"], streams.rng("validation"))
    record = tune_lr(lambda lr: float(np.mean([train_and_measure("PPO", g, cfg, sb3_seed, seed,
                                                                 lr=lr) for g in val_goals])),
                     PPO_LR_GRID, name="PPO (SB3 defaults, normalised observations)",
                     selected_on=f"{len(val_goals)} validation goals from their own seed "
                     "stream, final distance")
    losses = {"ML3": loss, "ML3-untrained": untrained_control(loss)}
    final = {m: [] for m in METHODS}
    for goal in heldout_goals(cfg["goals"]):
        for method, learned in losses.items():
            final[method].append(train_and_measure("ML3", goal, cfg, sb3_seed, seed, learned))
        final["PPO, tuned lr"].append(train_and_measure("PPO", goal, cfg, sb3_seed, seed,
                                                        lr=record["best_lr"]))
    return {"final_distance": {m: float(np.mean(v)) for m, v in final.items()},
            "final_distance_per_goal": final, "baselines": [record]}


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    cfg = budget_of(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    loss = meta_trained_loss(args)
    runs = bench.run(run_seed, args)
    final = {m: stats([r["final_distance"][m] for r in runs]) for m in METHODS}
    baselines = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
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
        "", f"Mean goal distance from the start: {start:.3f}.", "",
        "Tuned baseline (the baseline rule):", *baseline_lines(baselines),
    ]
    results = {"config": cfg, "test_goals": goals.tolist(),
               "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
               "final_distance": final, "initial_goal_distance": start,
               "baselines": baselines,
               "seed_time_s": [r["seed_time_s"] for r in runs]}
    return bench.write(args, results, report)


if __name__ == "__main__":
    main()
