"""Model-free ML3 on AntGoal (paper IV-A.3): an opt-in long benchmark.

Meta-trains a policy loss on AntGoal training goals, then trains fresh
policies on held-out goals with :class:`rl.ML3` (learned loss only) and with
Stable-Baselines3 PPO (default hyper-parameters, normalised observations) on
the same sample budget, and reports the final distance of deterministic
evaluation episodes. Ant costs about 200 us per step on one thread, so even
the default run is long (about an hour); ``--smoke`` is the tiny run of the
test suite and ``--full`` the paper-scale budget.

Writes ``results/model_free_ant/{results.json, final_distance.png, report.md}``.
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
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from tqdm.auto import tqdm

from rl import ML3, meta_train_policy_loss
from rl.envs import AntGoalEnv
from sklearn_ml3._utils import versions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENV_ID = "ml3/AntGoal-v0"
SETTINGS = {
    # goals, seeds, budget, meta-iterations, tasks per iteration, episodes per rollout, horizon;
    # batch_size None: one full-batch SGD step per rollout (as on ReacherGoal)
    "smoke": {"goals": 1, "seeds": 1, "budget": 64, "meta_iter": 2, "tasks": 1, "episodes": 2,
              "horizon": 10, "batch_size": None},
    "default": {"goals": 3, "seeds": 2, "budget": 100_000, "meta_iter": 200, "tasks": 2,
                "episodes": 5, "horizon": 200, "batch_size": None},
    "full": {"goals": 10, "seeds": 5, "budget": 1_000_000, "meta_iter": 1000, "tasks": 4,
             "episodes": 10, "horizon": 200, "batch_size": None},
}


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smoke", action="store_true", help="tiny budget (test suite)")
    group.add_argument("--full", action="store_true", help="paper-scale budget")
    parser.add_argument("--out", type=Path, default=Path("results/model_free_ant"))
    args = parser.parse_args(argv)
    name = "smoke" if args.smoke else "full" if args.full else "default"
    cfg = SETTINGS[name]
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    train_goals = AntGoalEnv.sample_tasks(30, np.random.default_rng(1))
    test_goals = AntGoalEnv.sample_tasks(10, np.random.default_rng(2))[: cfg["goals"]]
    loss = meta_train_policy_loss(
        ENV_ID, goals=train_goals, n_meta_iter=cfg["meta_iter"], tasks_per_iter=cfg["tasks"],
        rollout_episodes=cfg["episodes"], horizon=cfg["horizon"], batch_size=cfg["batch_size"],
        rollouts_per_policy=1 if args.smoke else 20, log_std_init=-0.5, inner_optimizer="sgd",
        inner_lr=0.1,
        # the configuration this page measured: a free loss network, one SGD step per rollout
        # (Ant has no batched twin, so the ES default of ReacherGoal does not apply)
        loss_structure="free", loss_hidden_layer_sizes=(64, 64), n_epochs=1,
        meta_lr=3e-3, checkpoint=args.out / "meta.ckpt", random_state=0,
        verbose=0 if args.smoke else 1)
    loss.save(args.out / "ant.ml3")

    final: dict[str, list[float]] = {"ml3": [], "ppo": []}
    cpu: dict[str, float] = {"ml3": 0.0, "ppo": 0.0}
    jobs = [(m, g, s) for g in range(len(test_goals)) for s in range(cfg["seeds"])
            for m in ("ml3", "ppo")]
    for method, g, seed in tqdm(jobs, desc="meta-test runs", disable=args.smoke):
        goal = test_goals[g]
        env = DummyVecEnv([lambda goal=goal: gym.make(ENV_ID, goal=goal,
                                                      max_episode_steps=cfg["horizon"])])
        start = time.process_time()
        if method == "ml3":
            model = ML3("MlpPolicy", env, learned_loss=loss, seed=seed)
        else:
            n_steps = min(2048, cfg["budget"])
            model = PPO("MlpPolicy", VecNormalize(env, norm_reward=False), seed=seed,
                        n_steps=n_steps, batch_size=min(64, n_steps))
        model.learn(total_timesteps=cfg["budget"])
        cpu[method] += time.process_time() - start
        final[method].append(final_distance(model, goal, cfg["horizon"], 10_000 + seed))

    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.boxplot([final["ml3"], final["ppo"]], tick_labels=["ML3", "PPO"])
    ax.set_ylabel(f"final distance after {cfg['budget']} steps")
    fig.tight_layout()
    fig.savefig(args.out / "final_distance.png", dpi=120)
    plt.close(fig)

    results = {
        "setting": name, "config": cfg, "test_goals": test_goals.tolist(),
        "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
        "meta_test_cpu_s": cpu, "versions": versions(),
        "ml3": {"final_distance": final["ml3"]}, "ppo": {"final_distance": final["ppo"]},
        "initial_goal_distance": [float(np.linalg.norm(g)) for g in test_goals],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    report = [
        f"# Model-free ML3 on AntGoal ({name} run)", "",
        f"{cfg['goals']} held-out goals x {cfg['seeds']} seeds, {cfg['budget']} steps per run; "
        f"meta-training {cfg['meta_iter']} iterations, "
        f"{results['meta_train_time_s']['cpu']:.0f} s CPU.", "",
        "| method | final distance (mean ± std) |", "|---|---|",
        *(f"| {m.upper()} | {np.mean(v):.3f} ± {np.std(v):.3f} |" for m, v in final.items()),
        "", f"Mean goal distance from the start: "
        f"{np.mean(results['initial_goal_distance']):.3f}.", "", "![](final_distance.png)", "",
    ]
    (args.out / "report.md").write_text("\n".join(report))
    return results


if __name__ == "__main__":
    main()
