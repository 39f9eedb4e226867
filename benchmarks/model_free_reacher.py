"""Model-free ML3 on ReacherGoal (paper III-B.2, IV-A.3, Fig. 4): learned loss vs tuned PPO.

1. Meta-train a policy loss ``M(s, a, log pi(a|s), g)`` with
   :func:`rl.meta_train_policy_loss` on the protocol's training goals, once
   for all seeds (resumable checkpoint in the output folder).
2. Per seed, on the protocol's held-out goals (separate draws, never seen in
   meta-training) train fresh policies with :class:`rl.ML3` (learned loss
   only, no rewards), with ML3 and the same loss network before meta-training
   (a control), and with Stable-Baselines3 PPO with the settings of
   PROTOCOLS.md section 4 (n_steps 512, batch 32, 5 epochs, gamma 0.9,
   normalised observations) at three learning rates: ML3's own Adam lr (the
   hand-written objective at the same lr), its best lr by the baseline rule
   (chosen on validation goals from the seed's own stream, by the mean
   distance over the evaluation curve, grid extended until the best is
   interior) and SB3's 3e-4 (the protocol's setting). Deterministic
   evaluations every ``--eval-every`` steps give the final distance and the
   return against environment steps.
3. Samples to reach 80% of the task performance: the first evaluation at
   which a method's mean curve closes 80% of the gap between the initial
   distance and the best final distance of any method.
4. The same loss trains policies of 4 architectures (paper Fig. 4c).

The default run is the protocol's 10 held-out goals x 5 seeds at a reduced
budget of 8k steps per run, with one meta-trained loss for all seeds;
``--full`` raises the budget to 50k steps, meta-training to 1,000
iterations and the architecture experiment to 10 goals. Seeds are cached one by one in
``runs/`` and meta-training is checkpointed, so an interrupted run resumes.

Usage::

    python benchmarks/model_free_reacher.py --jobs 2     # 10 goals x 5 seeds, 8k steps
    python benchmarks/model_free_reacher.py --full       # 50k steps
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rl import ML3, meta_train_policy_loss
from rl.envs import ReacherGoalEnv
from rl.meta.info import PolicyLossInfo
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.experiments.harness import Benchmark, CurvePanel, baseline_lines, stats
from sklearn_ml3.meta import tune_lr, untrained_control

ENV_ID = "ml3/ReacherGoal-v0"
PPO_TUNED = {"n_steps": 512, "batch_size": 32, "n_epochs": 5, "gamma": 0.9}
#: SB3's default PPO lr (the protocol's setting).
SB3_LR = 3e-4
#: PPO's starting lr grid for the baseline rule (SB3's default in the middle).
PPO_LR_GRID = (1e-4, SB3_LR, 1e-3)
#: Goals of PPO's lr selection per seed (drawn from the seed's validation stream).
VALIDATION_GOALS = 3
#: Where the selection rule of :func:`choose_config` reads a configuration's speed: the
#: paper's claim is about samples early in training (5x fewer than PPO).
EARLY_STEPS = 1_000
#: Meta-training configurations. "default" is what ``meta_train_policy_loss`` does with
#: no arguments (quadratic learned advantage, ES over whole 2,000-step runs on the batched
#: twin, 32 members, 100 iterations, policy log-std -1); "classic" is an earlier default
#: (free loss network, one-step backprop through one full-batch SGD step per 500-step
#: MuJoCo rollout), kept as the ablation's baseline row; "1k-runs" the default before
#: (1,000-step scored runs, 200 iterations, log-std -0.5) and "400-iter" the one before
#: that (16 members, 400 iterations). The rows that vary one setting of an earlier default
#: pin all of its settings, so they keep their meaning when the library's defaults change.
#: ``--select`` scores them on the validation goals.
ES_32_200 = {"log_std_init": -0.5, "rollouts_per_policy": 20, "es_population": 32,
             "n_meta_iter": 200}
ES_16_400 = {**ES_32_200, "es_population": 16, "n_meta_iter": 400}
CONFIGS = {
    "default": {},
    "classic": {"inner_optimizer": "sgd", "inner_lr": 0.1, "batch_size": None, "n_epochs": 1,
                "rollout_episodes": 10, "rollouts_per_policy": 16, "meta_lr": 3e-3,
                "loss_hidden_layer_sizes": (64, 64), "loss_structure": "free",
                "simulator": "env", "meta_gradient": "backprop", "features": "plain",
                "es_population": 32, "es_sigma": 0.05, "n_meta_iter": 300,
                "log_std_init": -0.5},
    # "1k-runs" with the one-step backprop meta-gradient (SGD at inner lr 0.1 diverged
    # within 4 iterations): only the meta-gradient and its meta lr differ, and the
    # iterations, which give it about that configuration's meta-training CPU
    "quadratic-backprop": {**ES_32_200, "meta_gradient": "backprop", "task_loss_episodes": 32,
                           "meta_lr": 3e-3, "n_meta_iter": 2400},
    "1k-runs": ES_32_200,
    "400-iter": ES_16_400,
    "population-16": {**ES_32_200, "es_population": 16},
    "population-64": {**ES_32_200, "es_population": 64},
    "advantage-es": {**ES_16_400, "loss_structure": "advantage",
                     "loss_hidden_layer_sizes": (8,)},
    "two-episode": {**ES_16_400, "rollout_episodes": 2, "rollouts_per_policy": 10},
    "lr2e-3": {**ES_16_400, "inner_lr": 2e-3},
    "lr3e-3": {**ES_16_400, "inner_lr": 3e-3},
    "lr1.5e-3": {**ES_32_200, "inner_lr": 1.5e-3},
    "epochs-8": {**ES_32_200, "n_epochs": 8},
    "log-std-0.75": {**ES_32_200, "log_std_init": -0.75},
    "log-std-1": {**ES_32_200, "log_std_init": -1.0},
    # the default meta-trained from another seed: how much of a result is that one loss
    "meta-seed-1": {"random_state": 1},
}
#: Seeds of the protocol's goal draws, the same for every benchmark seed: meta-training
#: goals and held-out goals (separate draws).
TRAIN_GOALS_SEED, HELDOUT_GOALS_SEED = 1, 2


def training_goals() -> np.ndarray:
    """The 30 meta-training goals."""
    return ReacherGoalEnv.sample_tasks(30, np.random.default_rng(TRAIN_GOALS_SEED))


def heldout_goals(n: int = 10) -> np.ndarray:
    """The protocol's held-out goals (never seen in meta-training), the first ``n``."""
    return ReacherGoalEnv.sample_tasks(10, np.random.default_rng(HELDOUT_GOALS_SEED))[:n]


ARCHITECTURES = {"64-64 (meta-train)": [64, 64], "32": [32], "128-128": [128, 128],
                 "256-256-256": [256, 256, 256]}


def evaluate(predict, goal, n_episodes: int, seed: int) -> tuple[float, float]:
    """Mean final distance and mean return of deterministic episodes on ``goal``."""
    env = gym.make(ENV_ID, goal=goal)
    dists, returns = [], []
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(predict(obs))
            total += reward
            done = terminated or truncated
        dists.append(info["distance"])
        returns.append(total)
    env.close()
    return float(np.mean(dists)), float(np.mean(returns))


class EvalCurve(BaseCallback):
    """Evaluate the deterministic policy every ``every`` environment steps."""

    def __init__(self, goal, every: int, n_episodes: int, seed: int):
        super().__init__()
        self.goal, self.every, self.n_episodes, self.seed = goal, every, n_episodes, seed
        self.steps: list[int] = []
        self.distance: list[float] = []
        self.returns: list[float] = []

    def _predict(self, obs):
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            obs = vec_normalize.normalize_obs(obs)
        return self.model.predict(obs, deterministic=True)[0]

    def record(self) -> None:
        dist, ret = evaluate(self._predict, self.goal, self.n_episodes, self.seed)
        self.steps.append(int(self.num_timesteps))
        self.distance.append(dist)
        self.returns.append(ret)

    def _on_training_start(self) -> None:
        self.record()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.record()
        return True


def loss_file(args) -> Path:
    """Where the meta-trained loss of these settings is saved."""
    return Path(args.out) / f"reacher_{args.config}_{args.meta_iter}.ml3"


def meta_trained_loss(args) -> LearnedLoss:
    """The loss of ``--config`` after ``--meta-iter`` iterations (trained once, then loaded)."""
    path = loss_file(args)
    if path.exists() and LearnedLoss.load(path).meta_info_.get("n_meta_iter_done") \
            == args.meta_iter:
        return LearnedLoss.load(path)
    loss = meta_train_policy_loss(ENV_ID, goals=training_goals(),
                                  checkpoint=Path(args.out) / f"meta_{args.config}.ckpt",
                                  **{"random_state": 0, **CONFIGS[args.config],
                                     "n_meta_iter": args.meta_iter})
    loss.save(path)
    return loss


def train_run(method, goal, seed, budget, args, loss, net_arch, ppo_overrides=None) -> dict:
    """One run with its evaluation curve; ``args`` gives ``eval_every`` and
    ``eval_episodes``; ``ppo_overrides`` replaces entries of :data:`PPO_TUNED`."""
    env = DummyVecEnv([lambda: gym.make(ENV_ID, goal=goal)])
    env.seed(seed)
    start = time.process_time()
    if method.startswith("ML3"):
        kwargs = {} if net_arch is None else {"policy_kwargs": {"net_arch": net_arch}}
        with warnings.catch_warnings():  # the control is not meta-trained, on purpose
            warnings.filterwarnings("ignore", message="this LearnedLoss has not been meta")
            model = ML3("MlpPolicy", env, learned_loss=loss, seed=seed, **kwargs)
    else:
        env = VecNormalize(env, norm_obs=True, norm_reward=False, gamma=PPO_TUNED["gamma"])
        model = PPO("MlpPolicy", env, seed=seed, **{**PPO_TUNED, **(ppo_overrides or {})})
    curve = EvalCurve(goal, args.eval_every, args.eval_episodes, seed=10_000 + seed)
    model.learn(total_timesteps=budget, callback=curve)
    return {"steps": curve.steps, "distance": curve.distance, "return": curve.returns,
            "cpu_s": time.process_time() - start}


def validation_goals(streams, n: int) -> np.ndarray:
    """The goals of PPO's lr selection: the seed's own validation stream."""
    return ReacherGoalEnv.sample_tasks(n, streams.rng("validation"))


def curve_score(runs) -> float:
    """The validation score of PPO's lr and of ML3's configuration: the runs' mean
    distance over the evaluation curve."""
    return float(np.mean([r["distance"] for r in runs]))


def tune_ppo_lr(sb3_seed: int, goals, budget: int, schedule) -> dict:
    """PPO's lr by the baseline rule on validation ``goals`` (:func:`curve_score`)."""
    def score(lr):
        return curve_score([train_run("PPO", g, sb3_seed, budget, schedule, None, None,
                                      {"learning_rate": lr}) for g in goals])

    return tune_lr(score, PPO_LR_GRID, name="PPO (SB3), the protocol's settings",
                   selected_on=f"{len(goals)} validation goals from their own seed stream, "
                   "mean distance over the evaluation curve")


def run_seed(seed, streams, args) -> dict:
    """Every held-out goal with every method, PPO's lr by the baseline rule, architectures."""
    loss = LearnedLoss.load(loss_file(args))
    control = untrained_control(loss)
    ml3_lr = float(loss.meta_info_["inner_lr"])
    sb3_seed = streams.seed_of("init")  # SB3's seed for every run of this benchmark seed
    test_goals = heldout_goals(args.goals)
    val_goals = validation_goals(streams, args.validation_goals)

    def ppo(lr, goals):
        return [train_run("PPO", g, sb3_seed, args.budget, args, None, None,
                          {"learning_rate": lr}) for g in goals]

    def ml3(learned_loss, goals, net_arch=None):
        return [train_run("ML3", g, sb3_seed, args.budget, args, learned_loss, net_arch)
                for g in goals]

    record = tune_ppo_lr(sb3_seed, val_goals, args.budget, args)
    # one set of runs per distinct lr (the tuned lr often equals one of the others)
    ppo_runs = {lr: ppo(lr, test_goals) for lr in {ml3_lr, record["best_lr"], SB3_LR}}
    runs = {"ML3": ml3(loss, test_goals), "ML3-untrained": ml3(control, test_goals),
            "PPO, same lr": ppo_runs[ml3_lr], "PPO, tuned lr": ppo_runs[record["best_lr"]],
            "PPO, SB3 lr 3e-4": ppo_runs[SB3_LR]}
    architectures = {name: ml3(loss, test_goals[:args.arch_goals], arch)
                     for name, arch in ARCHITECTURES.items()}
    return {"runs": runs, "architectures": architectures, "baselines": [record],
            "ml3_lr": ml3_lr}


def _validation_runs(name: str, seed: int, args) -> list[dict]:
    """ML3 with configuration ``name``'s loss on seed ``seed``'s validation goals."""
    from sklearn_ml3.experiments.harness import SeedStreams

    torch.set_num_threads(1)
    loss = LearnedLoss.load(loss_file(config_args(name, args)))
    streams = SeedStreams(seed, bench.name)
    sb3_seed = streams.seed_of("init")
    return [train_run("ML3", g, sb3_seed, args.budget, args, loss, None)
            for g in validation_goals(streams, args.validation_goals)]


def config_args(name: str, args):
    """``args`` for configuration ``name`` (its own meta-iteration default)."""
    budget = ["--quick"] if args.quick else ["--full"] if args.full else []
    return resolve(bench.parse_args(["--config", name, "--out", str(args.out), *budget]))


def choose_config(scores: dict) -> str:
    """The configuration the selection rule picks from ``scores`` (name -> entry).

    The lowest mean distance over the curve, with a one-standard-error rule:
    the configurations whose runs score, paired run for run (same goals and
    SB3 seeds), less than one standard error of the difference above the
    lowest tie with it. Among tied configurations the rule looks at the two
    targets of the protocol: it keeps those whose final distance ties (the
    same paired test) with the closest-ending tied one, and takes the lowest
    distance at the first evaluation from :data:`EARLY_STEPS` on of them (speed:
    samples to 80%).
    Entries without per-run curves compete by their score alone.
    """
    def tied_with(best, names, value):
        reference = value(best)
        if reference is None or len(reference) < 2:  # no standard error to tie within
            return [best]
        out = [best]
        for name in names:
            runs = value(name)
            if name == best or runs is None:
                continue
            diff = runs - reference
            if diff.mean() < diff.std(ddof=1) / np.sqrt(len(diff)):
                out.append(name)
        return out

    def runs(name, column=None):
        curves = scores[name].get("run_curves")
        if curves is None:
            return None
        curves = np.asarray(curves)
        return curves.mean(1) if column is None else curves[:, column]

    lowest = min(scores, key=lambda n: scores[n]["score"])
    tied = tied_with(lowest, scores, runs)
    closest = min(tied, key=lambda n: scores[n]["final_distance"])
    tied = tied_with(closest, tied, lambda n: runs(n, -1))
    steps = scores[lowest]["steps"]
    early = next((i for i, step in enumerate(steps) if step >= EARLY_STEPS), len(steps) - 1)
    return min(tied, key=lambda n: scores[n]["distance_mean"][early])


def select_config(args) -> dict:
    """Score each configuration of ``--select`` on every seed's validation goals.

    The same goals, SB3 seeds and score as PPO's lr selection
    (:func:`tune_ppo_lr`): ML3 with each configuration's meta-trained loss, the
    mean distance over the evaluation curve, and :func:`choose_config`'s
    rule. The held-out goals are never run.
    Writes ``<out>/config_selection.json``, keeping the configurations an earlier
    call scored under the same protocol.
    """
    from joblib import Parallel, delayed

    from sklearn_ml3.experiments.harness import write_json_atomic

    losses = {name: meta_trained_loss(config_args(name, args)) for name in args.select}
    jobs = [(name, seed) for name in args.select for seed in range(args.seeds)]
    outputs = Parallel(n_jobs=args.jobs)(delayed(_validation_runs)(name, seed, args)
                                         for name, seed in jobs)
    scores = {}
    for name in args.select:
        runs = [r for (n, _), out in zip(jobs, outputs, strict=True) if n == name for r in out]
        curves = np.array([r["distance"] for r in runs])
        scores[name] = {"score": curve_score(runs), "steps": runs[0]["steps"],
                        "distance_mean": curves.mean(0).tolist(),
                        "final_distance": float(curves[:, -1].mean()),
                        # per run, in the order of (seed, validation goal): paired across
                        # configurations, which share goals and SB3 seeds
                        "run_curves": curves.tolist(),
                        "meta_train_time_s": losses[name].meta_info_["meta_train_time_s"]}
        spread = (f" (+- {curves.mean(1).std(ddof=1) / np.sqrt(len(curves)):.4f} s.e.)"
                  if len(curves) > 1 else "")
        print(f"{name}: mean distance over the curve {curves.mean():.4f}{spread}, final "
              f"{curves[:, -1].mean():.4f}; curve "
              + " ".join(f"{v:.3f}" for v in curves.mean(0)))
    path = Path(args.out) / "config_selection.json"
    protocol = {"validation_goals_per_seed": args.validation_goals, "seeds": args.seeds,
                "budget": args.budget, "eval_every": args.eval_every,
                "eval_episodes": args.eval_episodes}
    previous = json.loads(path.read_text()) if path.exists() else {}
    if previous.get("protocol") == protocol:  # configurations scored by earlier calls stay
        scores = {**previous["configs"], **scores}
    best = choose_config(scores)
    print(f"selected on the validation goals: {best}")
    result = {"selected": best, "protocol": protocol, "configs": scores}
    write_json_atomic(path, result)
    return result


def rollout_throughput(goals, repeats: int = 3) -> dict:
    """Environment steps per second of one policy's rollouts: MuJoCo envs one by one, the
    batched twin, and the twin scoring a whole ES population at once (one thread)."""
    from rl.meta.model_free import ModelFreeProblem, policy_loss_structure
    from sklearn_ml3.meta import differentiable_optimizer

    rng = np.random.default_rng(0)
    out = {}
    for name in ("env", "twin"):
        problem = ModelFreeProblem(ENV_ID, goals, rollout_episodes=10, batch_size=50,
                                   simulator=name, normalize_inputs=False)
        params = problem.init_params(None, 0)
        start = time.perf_counter()
        for _ in range(repeats):
            problem.rollout(params, goals[0], rng)
        out[f"{name}, 10 episodes"] = 10 * 50 * repeats / (time.perf_counter() - start)
    # the default's ES scoring: one population's scored runs, every setting the library's
    default = {name: p.default for name, p in
               inspect.signature(meta_train_policy_loss).parameters.items()}
    problem = ModelFreeProblem(ENV_ID, goals, rollout_episodes=default["rollout_episodes"],
                               batch_size=default["batch_size"], n_epochs=default["n_epochs"],
                               log_std_init=default["log_std_init"], features="joint_frame",
                               simulator="twin")
    loss = LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs,
                       hidden_layer_sizes=default["loss_hidden_layer_sizes"], random_state=0,
                       structure=policy_loss_structure(
                           default["loss_structure"], problem.obs_dim, problem.act_dim,
                           problem.goal_dim, problem.features))
    members, tasks = default["es_population"], default["tasks_per_iter"]
    updates = default["rollouts_per_policy"]
    phis = torch.nn.utils.parameters_to_vector(loss.parameters()).detach().repeat(members, 1)
    start = time.perf_counter()
    problem.population_task_loss(
        loss, phis, problem.sample_tasks(tasks, rng), rng,
        optimizer=differentiable_optimizer(default["inner_optimizer"], default["inner_lr"]),
        inner_steps=problem.steps_per_rollout * updates)
    # every member and goal: a rollout before each update and one after the last
    steps = members * tasks * (updates + 1) * problem.rollout_episodes * problem.horizon
    out["twin, ES population (with updates)"] = steps / (time.perf_counter() - start)
    return out


def samples_to_threshold(steps, curve, target) -> int | None:
    """First step at which ``curve`` (a distance) is at or below ``target``."""
    for step, value in zip(steps, curve, strict=True):
        if value <= target:
            return int(step)
    return None


def summarise(runs: dict[str, list[dict]], seeds: list[int]) -> dict:
    """Mean/std curves per method over all runs, samples to 80% of the task performance
    (pooled mean curves, and each seed's mean curve over goals against the same target)."""
    out = {}
    for method, items in runs.items():
        dist = np.array([r["distance"] for r in items])
        ret = np.array([r["return"] for r in items])
        out[method] = {"steps": items[0]["steps"],
                       "distance_mean": dist.mean(0).tolist(), "distance_std": dist.std(0).tolist(),
                       "return_mean": ret.mean(0).tolist(), "return_std": ret.std(0).tolist(),
                       "final_distance": [float(d[-1]) for d in dist],
                       "final_return": [float(r[-1]) for r in ret]}
    start = np.mean([out[m]["distance_mean"][0] for m in out])
    best = min(out[m]["distance_mean"][-1] for m in out)
    target = start - 0.8 * (start - best)
    for method, item in out.items():
        item["samples_to_80pct"] = samples_to_threshold(item["steps"], item["distance_mean"],
                                                        target)
        dist = np.array([r["distance"] for r in runs[method]])
        per_seed = dist.reshape(len(seeds), -1, dist.shape[-1]).mean(1)
        item["seed_curves"] = per_seed.tolist()
        item["samples_to_80pct_per_seed"] = [samples_to_threshold(item["steps"], c, target)
                                             for c in per_seed]
        item["final_distance_per_seed"] = stats(per_seed[:, -1])
    return {"methods": out, "initial_distance": float(start), "best_final_distance": float(best),
            "target_distance_80pct": float(target)}


def fmt(values) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


bench = Benchmark("model_free_reacher", __doc__)
bench.add_argument("--goals", type=int, default=10, help="held-out goals (default 10)")
bench.add_argument("--budget", type=int, default=None,
                   help="env steps per run (default 8,000; --full 50,000)")
bench.add_argument("--meta-iter", type=int, default=None,
                   help="meta-iterations (default: the configuration's own, else the "
                        "library's)")
bench.add_argument("--config", default="default", choices=sorted(CONFIGS),
                   help="meta-training configuration (see CONFIGS)")
bench.add_argument("--arch-goals", type=int, default=None,
                   help="goals of the architecture experiment (default 5; --full 10)")
bench.add_argument("--validation-goals", type=int, default=VALIDATION_GOALS,
                   help="goals of PPO's lr selection (from the validation stream)")
bench.add_argument("--eval-every", type=int, default=None,
                   help="evaluation interval in env steps (default 500; --full 2,500)")
bench.add_argument("--eval-episodes", type=int, default=3)
bench.add_argument("--select", nargs="+", choices=sorted(CONFIGS), default=None,
                   help="only score these configurations on the validation goals (ML3 "
                        "alone, the score of PPO's lr selection) and write "
                        "config_selection.json")


def resolve(args):
    """Fill the budget-dependent defaults (they are part of each seed's cache key)."""
    args.budget = args.budget or bench.budget(args, 8_000, full=50_000, quick=1_000)
    args.arch_goals = args.arch_goals or bench.budget(args, 5, full=10, quick=1)
    args.eval_every = args.eval_every or bench.budget(args, 500, full=2_500, quick=500)
    default_iter = CONFIGS[args.config].get(
        "n_meta_iter", inspect.signature(meta_train_policy_loss).parameters["n_meta_iter"].default)
    args.meta_iter = args.meta_iter or bench.budget(args, default_iter, full=1_000, quick=2)
    if args.quick:
        args.goals = min(args.goals, 2)
    return args


def results_folder(args) -> Path:
    """``--out``; for another configuration's held-out run without ``--out``,
    ``results/model_free_reacher_<config>``, so that it never replaces the default run's."""
    default_out = bench.parser.get_default("out")
    if args.config != "default" and not args.select and Path(args.out) == default_out:
        return default_out.with_name(f"{default_out.name}_{args.config}")
    return Path(args.out)


def main(argv=None) -> dict:
    args = resolve(bench.parse_args(argv))
    args.out = results_folder(args)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.select:
        return select_config(args)
    loss = meta_trained_loss(args)
    seeds = list(range(args.seeds))
    per_seed = bench.run(run_seed, args)
    runs = {m: [r for s in per_seed for r in s["runs"][m]] for m in per_seed[0]["runs"]}
    arch_runs = {m: [r for s in per_seed for r in s["architectures"][m]]
                 for m in per_seed[0]["architectures"]}
    summary, arch_summary = summarise(runs, seeds), summarise(arch_runs, seeds)
    baselines = [{"seed": s["seed"], **b} for s in per_seed for b in s["baselines"]]
    steps = summary["methods"]["ML3"]["steps"]
    figures = {
        "ml3_vs_ppo.png": [
            CurvePanel(f"ReacherGoal, {args.goals} held-out goals x {args.seeds} seeds",
                       "environment steps", "final distance to goal", steps,
                       {m: item["seed_curves"] for m, item in summary["methods"].items()}),
            CurvePanel("episode return", "environment steps", "episode return", steps,
                       {m: np.reshape([r["return"] for r in runs[m]],
                                      (args.seeds, -1, len(steps))).mean(1)
                        for m in runs})],
        "architectures.png": [
            CurvePanel("One learned loss, four policy architectures", "environment steps",
                       "final distance to goal", steps,
                       {m: item["seed_curves"] for m, item in arch_summary["methods"].items()})],
    }
    history = loss.meta_info_.get("rollout_stats", [])
    if history:
        figures["meta_training.png"] = [CurvePanel(
            "meta-training", "meta-iteration", "final distance (task-loss rollouts)",
            np.arange(len(history)), {"ML3": [[h["final_distance"] for h in history]]})]
    methods = summary["methods"]
    results = {
        "rollout_throughput_steps_per_s": rollout_throughput(training_goals()),
        "protocol": {"goals": args.goals, "seeds": args.seeds, "budget": args.budget,
                     "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
                     "ppo": {**PPO_TUNED, "normalize_obs": True}, "full": args.full,
                     "meta_training": {**CONFIGS[args.config], "n_meta_iter": args.meta_iter,
                                       **PolicyLossInfo.of(loss, required=True).to_dict()},
                     "test_goals": heldout_goals(args.goals).tolist()},
        "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
        "ml3_vs_ppo": summary,
        "architectures": arch_summary,
        "baselines": baselines,
        "meta_test_cpu_s": {m: float(sum(r["cpu_s"] for r in runs[m])) for m in runs},
        "headline": [{
            "experiment": f"ReacherGoal model-free, final distance after {args.budget} steps "
                          f"({args.goals} goals; samples to 80%: ML3 "
                          f"{methods['ML3']['samples_to_80pct']}, tuned PPO "
                          f"{methods['PPO, tuned lr']['samples_to_80pct']})",
            "metric": "final distance", "lower_is_better": True,
            "learned": methods["ML3"]["final_distance_per_seed"],
            "same_lr": methods["PPO, same lr"]["final_distance_per_seed"],
            "best_lr": methods["PPO, tuned lr"]["final_distance_per_seed"],
            "note": "untrained control "
                    f"{methods['ML3-untrained']['final_distance_per_seed']['mean']:.3g}"}],
    }
    return bench.write(args, results, report_lines(results, args), figures)


def report_lines(results: dict, args) -> list[str]:
    p, s = results["protocol"], results["ml3_vs_ppo"]
    lines = [
        "# Model-free ML3 on ReacherGoal",
        "",
        f"{p['goals']} held-out goals x {p['seeds']} seeds, {p['budget']} environment steps per "
        f"run, deterministic evaluation ({p['eval_episodes']} episodes) every {p['eval_every']} "
        f"steps. Meta-training: {p['meta_training']['n_meta_iter']} meta-iterations, "
        f"{results['meta_train_time_s']['wall']:.0f} s wall / "
        f"{results['meta_train_time_s']['cpu']:.0f} s CPU. Mean ± std over all runs; samples "
        "to 80% on the pooled mean curve, and per seed (each seed's mean curve over goals).",
        "",
        "| method | final distance | final return | samples to 80% | per seed |",
        "|---|---|---|---|---|",
    ]
    def samples(value):
        return "never" if value is None else f"{value:,}"  # 0 is a value: at the start

    for method, item in s["methods"].items():
        per_seed = ", ".join(samples(v) for v in item["samples_to_80pct_per_seed"])
        lines.append(f"| {method} | {fmt(item['final_distance'])} | {fmt(item['final_return'])} "
                     f"| {samples(item['samples_to_80pct'])} | {per_seed} |")
    lines += ["", f"Initial distance {s['initial_distance']:.4f}; 80% target distance "
              f"{s['target_distance_80pct']:.4f}.", "", "Rollout throughput (env steps/s): "
              + ", ".join(f"{k}: {v:,.0f}" for k, v in
                          results["rollout_throughput_steps_per_s"].items()) + ".",
              "", "Tuned baseline (the baseline rule):", *baseline_lines(results["baselines"]),
              "", "## Architectures (ML3, same loss)", "",
              "| actor | distance at step 0 | final distance |", "|---|---|---|"]
    for name, item in results["architectures"]["methods"].items():
        lines.append(f"| {name} | {item['distance_mean'][0]:.4f} | "
                     f"{fmt(item['final_distance'])} |")
    return lines


if __name__ == "__main__":
    main()
