"""Model-based ML3 on PointmassGoal and ReacherGoal (paper IV-A.2, Fig. 3).

Per seed: meta-train a loss on 10 goals in the right half-plane while a
dynamics ensemble is learned from rollouts; meta-test on 10 new goals (5 in
the right, 5 in the left half-plane) with the learned loss alone, rolled out
in the real environment; compare with SGD on the task loss (final distance)
through the learned model at the same learning rate and at its best learning
rate by the baseline rule (10 validation goals, 5 per half-plane, from their
own seed stream; the grid is extended until the best lr is interior), and
with the step-size control: the step-size diagnostic
(:func:`rl.meta.model_based.step_size_against_model`) compares the learned
loss's gradient with the model task loss's along the learned loss's own
meta-test training, and the task loss is run at lr x the norm ratio.
On ReacherGoal the learned feedback loss is also compared with its hand-written
counterpart, the identity gain (``-a . J(q_T)^T d_T``, iterative learning
control), at the same lr and at its best lr by the same rule.
Metric: real-environment final distance to the goal vs number of policy updates.
The learned loss is also scored on the validation goals: configurations of
the learned loss (``--loss-structure``, ``--features``, ...) are compared
there, never on the test goals.

Each seed is cached in ``results/model_based_<env>/runs/seed_<k>.json`` as
soon as it is done, so an interrupted run resumes.

Usage::

    python benchmarks/model_based.py --env pointmass            # 5 seeds, ~2.5 min CPU/seed
    python benchmarks/model_based.py --env reacher              # 5 seeds, ~5 min CPU/seed
    python benchmarks/model_based.py --env pointmass --full     # longer meta-training
    python benchmarks/model_based.py --env reacher --loss-structure quadratic --out DIR
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl.dynamics import DynamicsEnsemble
from rl.meta.info import PolicyLossInfo
from rl.meta.model_based import (
    FEATURE_SETS,
    LOSS_STRUCTURES,
    env_spec,
    hand_written_feedback_loss,
    learned_rates,
    meta_train_model_based_loss,
    policy_trajectory,
    step_size_against_model,
    train_policy_with_loss,
    train_policy_with_model,
)
from sklearn_ml3.experiments.harness import (
    Benchmark,
    CurvePanel,
    baseline_lines,
    fmt,
    stats,
    step_size_lines,
)
from sklearn_ml3.meta import tune_lr

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
CONFIGS = {
    "pointmass": {
        "env_id": "ml3/PointmassGoal-v0",
        # goal-frame loss features; each policy is trained for the 40 updates
        # it gets at meta-test, phi updated after every one of them
        "meta": {"n_meta_iter": 400, "inner_steps": 40, "tasks_per_iter": 4,
                 "inner_lr": 0.1, "meta_lr": 3e-3, "features": "goal_frame",
                 "loss_structure": "free", "learned_lr": True},
        "full_meta": {"n_meta_iter": 1200},
        "n_updates": 40, "eval_every": 5, "lr_grid": LR_GRID,
    },
    "reacher": {
        "env_id": "ml3/ReacherGoal-v0",
        # the fingertip's goal direction seen from the joints (J(q)^T d frame)
        # and where the rollout ended; a learned gain on that miss (feedback).
        # The free loss and learned controllers of the joint frame alone did
        # not carry over to the left half-plane (docs/rl_model_based.md)
        "meta": {"n_meta_iter": 600, "inner_steps": 40, "tasks_per_iter": 4,
                 "inner_lr": 0.1, "meta_lr": 3e-3, "features": "joint_frame_outcome",
                 "loss_structure": "feedback", "learned_lr": True},
        "full_meta": {"n_meta_iter": 1200},
        "n_updates": 40, "eval_every": 5, "lr_grid": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
        # the hand-written feedback loss -a . J(q_T)^T d_T (arms only)
        "feedback_lr_grid": (0.03, 0.1, 0.3, 1.0, 3.0),
    },
}
DEFAULT_OUT = Path("results") / "model_based"

bench = Benchmark("model_based", __doc__)
bench.parser.set_defaults(out=DEFAULT_OUT)
bench.add_argument("--env", choices=sorted(CONFIGS), default="pointmass")
bench.add_argument("--inner-lr", type=float, default=None,
                   help="policy SGD step size (default: the env's CONFIGS entry)")
bench.add_argument("--features", default=None, choices=FEATURE_SETS,
                   help="loss features (default: the env's CONFIGS entry)")
bench.add_argument("--loss-structure", default=None, choices=LOSS_STRUCTURES,
                   help="the loss's shape (default: the env's CONFIGS entry)")
bench.add_argument("--unroll", type=int, default=None,
                   help="policy updates per meta-gradient (default 1)")
bench.add_argument("--meta-iter", type=int, default=None,
                   help="meta-iterations (default: the env's CONFIGS entry)")
bench.add_argument("--no-learned-lr", action="store_true",
                   help="a loss without the learned learning-rate output")


def meta_options(args) -> dict:
    cfg = CONFIGS[args.env]
    meta = dict(cfg["meta"], **(cfg["full_meta"] if args.full else {}))
    for key, value in (("inner_lr", args.inner_lr), ("features", args.features),
                       ("loss_structure", args.loss_structure),
                       ("unroll", args.unroll), ("n_meta_iter", args.meta_iter)):
        if value is not None:
            meta[key] = value
    if args.no_learned_lr:
        meta["learned_lr"] = False
    if args.quick:
        meta.update(n_meta_iter=4, inner_steps=2)
    return meta


def test_and_validation_goals(spec, streams) -> tuple[np.ndarray, np.ndarray]:
    """A seed's 10 test and 10 validation goals, each 5 in the right and 5 in the left
    half-plane (the one meta-training never sees), from their own streams."""

    def both_halves(rng):
        return np.concatenate([spec.sample_goals(5, rng, "right"),
                               spec.sample_goals(5, rng, "left")])

    return both_halves(streams.rng("meta_test")), both_halves(streams.rng("validation"))


def run_seed(seed, streams, args) -> dict:
    cfg = CONFIGS[args.env]
    env_id = cfg["env_id"]
    spec = env_spec(env_id)
    meta = meta_options(args)
    train_goals = spec.sample_goals(10, streams.rng("meta_train"), "right")
    test_goals, val_goals = test_and_validation_goals(spec, streams)
    dynamics = DynamicsEnsemble(spec.state_dim, spec.action_dim,
                                random_state=streams.seed_of("init"))
    loss = meta_train_model_based_loss(env_id, train_goals, dynamics=dynamics,
                                       random_state=streams.seed_of("meta_train"), verbose=0,
                                       **meta)
    n_updates, every = (2, 1) if args.quick else (cfg["n_updates"], cfg["eval_every"])
    lr = meta["inner_lr"]
    test_init, val_init = streams.ints("init", 2)
    params_ml3, ml3 = train_policy_with_loss(loss, env_id, test_goals, n_updates,
                                             eval_every=every, random_state=test_init)
    # the learned loss on the validation goals, where configurations are compared
    ml3_validation = train_policy_with_loss(loss, env_id, val_goals, n_updates,
                                            eval_every=n_updates, random_state=val_init)[1]
    # the learning-rate multiplier the loss outputs along the way (1 without learned_lr)
    rates = {}
    for k in sorted({0, min(5, n_updates), n_updates}):
        params_k = params_ml3 if k == n_updates else train_policy_with_loss(
            loss, env_id, test_goals, k, eval_every=max(k, 1), random_state=test_init)[0]
        rates[k] = learned_rates(loss, params_k, env_id, test_goals).tolist()

    def model_curves(goals, model_lr, init):
        return train_policy_with_model(dynamics, env_id, goals, n_updates, lr=model_lr,
                                       eval_every=every, random_state=init)[1]

    selected_on = ("10 validation goals (5 per half-plane) from their own seed stream, "
                   "real-environment final distance after the last update")
    record = tune_lr(lambda g: model_curves(val_goals, g, val_init)[:, -1].mean(),
                     cfg["lr_grid"], name=MODEL_BASELINE, selected_on=selected_on)
    curves = {"ml3": ml3, "model_same_lr": model_curves(test_goals, lr, test_init),
              "model_best_lr": model_curves(test_goals, record["best_lr"], test_init)}
    baselines = [record]
    if "feedback_lr_grid" in cfg:  # the learned feedback gain against the identity gain
        feedback = hand_written_feedback_loss(env_id)

        def feedback_curves(goals, feedback_lr, init):
            return train_policy_with_loss(feedback, env_id, goals, n_updates, lr=feedback_lr,
                                          eval_every=every, random_state=init)[1]

        baselines.append(tune_lr(lambda g: feedback_curves(val_goals, g, val_init)[:, -1].mean(),
                                 cfg["feedback_lr_grid"], name=FEEDBACK_BASELINE,
                                 selected_on=selected_on))
        curves["feedback_same_lr"] = feedback_curves(test_goals, lr, test_init)
        curves["feedback_best_lr"] = feedback_curves(test_goals, baselines[-1]["best_lr"],
                                                     test_init)
    step_size = step_size_against_model(loss, dynamics, env_id, test_goals, n_updates,
                                        random_state=test_init)
    hidden = PolicyLossInfo.of(loss, required=True).hidden_sizes
    params_train, _ = train_policy_with_loss(loss, env_id, train_goals[:5], n_updates,
                                             eval_every=n_updates, random_state=test_init)

    def paths(params, goals):
        return [policy_trajectory({k: v[i] for k, v in params.items()}, env_id, g, hidden)
                for i, g in enumerate(goals)]

    steps = list(range(0, n_updates + 1, every))
    if steps[-1] != n_updates:
        steps.append(n_updates)
    return {
        "env_id": env_id, "meta_options": meta, "steps": steps, "lr": lr,
        "train_goals": train_goals, "test_goals": test_goals,
        "curves": {**curves, "model_step_size_control": model_curves(
            test_goals, lr * step_size["control_lr_factor"], test_init)},
        "validation": {"ml3_final": ml3_validation[:, -1]},
        "learned_rates": {str(k): v for k, v in rates.items()}, "baselines": baselines,
        "step_size": step_size,
        "meta_history": loss.meta_history_,
        "meta_train_time_s": loss.meta_info_["meta_train_time_s"],
        "dynamics": dynamics.describe(),
        "trajectories": {"train": paths(params_train, train_goals[:5]),
                         "test": paths(params_ml3, test_goals)},
    }


MODEL_BASELINE = "task loss through the learned model (SGD)"
FEEDBACK_BASELINE = "hand-written feedback loss -a . J(q_T)^T d_T (SGD)"
METHODS = {"ml3": "ML3 learned loss (real env, no model)",
           "model_same_lr": "task loss through learned model, same lr",
           "model_best_lr": "task loss through learned model, best lr (baseline rule)",
           "feedback_same_lr": "hand-written feedback loss (real env), same lr",
           "feedback_best_lr": "hand-written feedback loss (real env), best lr (baseline rule)",
           "model_step_size_control": "task loss through learned model, lr x norm ratio "
                                      "(step-size control)"}
REGIONS = {"all": slice(None), "right": slice(0, 5), "left": slice(5, 10)}


def plot_trajectories(run: dict, path: Path) -> None:
    """Fig. 3a: the learned loss's policies on meta-train (blue) and meta-test goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for kind, goals, color in (("train", run["train_goals"][:5], "tab:blue"),
                               ("test", run["test_goals"], "tab:orange")):
        for trajectory, goal in zip(run["trajectories"][kind], goals, strict=True):
            trajectory = np.asarray(trajectory)
            ax.plot(trajectory[:, 0], trajectory[:, 1], color=color, alpha=0.8)
            ax.scatter(*goal, color=color, marker="x")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_aspect("equal")
    ax.set_title(f"ML3 policies after {run['steps'][-1]} updates\n"
                 "blue: meta-train goals, orange: meta-test goals")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_out(args) -> Path:
    """``results/model_based_<env>``, plus the variant's flags: a variant run without
    ``--out`` must not replace the default run's results."""
    parts = [f"model_based_{args.env}"]
    for flag in ("inner_lr", "features", "loss_structure", "unroll", "meta_iter"):
        if getattr(args, flag) is not None:
            parts.append(f"{flag.replace('_', '-')}-{getattr(args, flag)}")
    parts += [name for name, on in (("no-learned-lr", args.no_learned_lr), ("full", args.full),
                                    ("quick", args.quick)) if on]
    return Path("results") / "_".join(parts)


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    if args.out == DEFAULT_OUT:
        args.out = default_out(args)
    runs = bench.run(run_seed, args)
    steps = runs[0]["steps"]
    methods = {m: label for m, label in METHODS.items() if m in runs[0]["curves"]}
    summary = {m: {region: {"mean": np.mean([np.asarray(r["curves"][m])[sl].mean(0)
                                             for r in runs], 0),
                            "std": np.std([np.asarray(r["curves"][m])[sl].mean(0)
                                           for r in runs], 0)}
                   for region, sl in REGIONS.items()} for m in methods}
    baselines = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
    cols = sorted({i for i in (1, 2, len(steps) // 2, len(steps) - 1) if 0 < i < len(steps)})
    meta_cpu = stats([r["meta_train_time_s"]["cpu"] for r in runs])
    report = [f"# Model-based ML3 on {runs[0]['env_id']}", "",
              f"{args.seeds} seeds; meta-training options: {runs[0]['meta_options']}; "
              f"meta-training CPU {fmt(meta_cpu, 1)} s per seed (one thread).", "",
              "Real-environment final distance to the goal (mean ± std over seeds of the "
              "10-goal mean; right/left: the 5 goals of each half-plane):", "",
              "| method | " + " | ".join(f"{steps[i]} updates" for i in cols)
              + " | right, final | left, final |", "|---|" + "---|" * (len(cols) + 2)]
    for m, label in methods.items():
        s = summary[m]
        cells = [f"{s['all']['mean'][i]:.3f} ± {s['all']['std'][i]:.3f}" for i in cols]
        cells += [f"{s[r]['mean'][-1]:.3f} ± {s[r]['std'][-1]:.3f}" for r in ("right", "left")]
        report.append(f"| {label} | " + " | ".join(cells) + " |")
    validation = np.array([r["validation"]["ml3_final"] for r in runs])  # (seeds, goals)
    def tuned_validation(name):
        return [b["scores"][f"{b['best_lr']:g}"] for b in baselines if b["name"] == name]

    report += ["", "On the 10 validation goals of each seed (where configurations are "
               "compared; never the test goals), final distance after the last update: "
               f"learned loss {fmt(stats(validation.mean(1)))} (right "
               f"{validation[:, :5].mean():.3f}, left {validation[:, 5:].mean():.3f}), "
               f"tuned baseline at its chosen lr {fmt(stats(tuned_validation(MODEL_BASELINE)))}"
               + (f", hand-written feedback loss at its chosen lr "
                  f"{fmt(stats(tuned_validation(FEEDBACK_BASELINE)))}"
                  if "feedback_best_lr" in methods else "") + "."]
    keys = list(runs[0]["learned_rates"])
    rates = np.array([[np.mean(r["learned_rates"][k]) for k in keys] for r in runs])
    report += ["", "Learning-rate multiplier alpha output by the loss (step = lr * alpha; "
               "mean ± std over seeds of the 10-goal mean): "
               + ", ".join(f"after {k} updates: {m:.3g} ± {sd:.2g}" for k, m, sd in
                           zip(keys, rates.mean(0), rates.std(0), strict=True)) + ".",
               "", "Tuned baseline (the baseline rule):", *baseline_lines(baselines)]
    step_size = {"cosine": stats([r["step_size"]["cosine"]["mean"] for r in runs]),
                 "norm_ratio": stats([r["step_size"]["norm_ratio"]["mean"] for r in runs]),
                 "n_points": sum(r["step_size"]["n_points"] for r in runs)}
    last = len(steps) - 1

    def at(m, i):
        return stats([np.asarray(r["curves"][m]).mean(0)[i] for r in runs])

    report += ["", "Step-size diagnostic (the learned loss's gradient vs the task loss's "
               "through the learned model, along the learned loss's meta-test training):",
               *step_size_lines("ml3", step_size, at("model_step_size_control", last),
                                at("ml3", last), f"distance after {steps[last]} updates")]
    if cols[0] != last:  # the early column of the headline, compared the same way
        report += step_size_lines("ml3", step_size, at("model_step_size_control", cols[0]),
                                  at("ml3", cols[0]),
                                  f"distance after {steps[cols[0]]} updates")[1:]
    figures = {"distance_vs_updates.png": [
        CurvePanel(f"{runs[0]['env_id']}: test goals ({region})", "policy updates",
                   "final distance to goal (real env)", steps,
                   {label: [np.asarray(r["curves"][m])[sl].mean(0) for r in runs]
                    for m, label in methods.items() if m != "model_step_size_control"})
        for region, sl in REGIONS.items()]}
    early = cols[0]
    results = {"env_id": runs[0]["env_id"], "steps": steps, "summary": summary,
               "baselines": baselines, "step_size": step_size,
               "validation": {"ml3_final": stats(validation.mean(1)),
                              "tuned_final": stats(tuned_validation(MODEL_BASELINE)),
                              **({"feedback_final": stats(tuned_validation(FEEDBACK_BASELINE))}
                                 if "feedback_best_lr" in methods else {})},
               "meta_options": runs[0]["meta_options"],
               "meta_train_time_s": meta_cpu, "runs": runs,
               "headline": [{
                   "experiment": f"{runs[0]['env_id']} model-based, distance after "
                                 f"{steps[early]} updates",
                   "note": f"after {steps[last]} updates: " + ", ".join(
                       f"{label} {at(m, last)['mean']:.3g}" for m, label in (
                           ("ml3", "learned"), ("model_same_lr", "same lr"),
                           ("model_best_lr", "tuned"),
                           ("model_step_size_control", "control")))
                   + f"; left half-plane: learned {summary['ml3']['left']['mean'][last]:.3g}, "
                     f"tuned {summary['model_best_lr']['left']['mean'][last]:.3g}"
                   + ("; hand-written feedback loss, tuned lr: "
                      f"{at('feedback_best_lr', early)['mean']:.3g} after {steps[early]}, "
                      f"{at('feedback_best_lr', last)['mean']:.3g} after {steps[last]}"
                      if "feedback_best_lr" in methods else ""),
                   "metric": "final distance", "lower_is_better": True,
                   "learned": at("ml3", early), "same_lr": at("model_same_lr", early),
                   "best_lr": at("model_best_lr", early),
                   "step_size_control": at("model_step_size_control", early),
                   "cosine": step_size["cosine"],
                   "final": {m: at(m, last) for m in methods}}]}
    written = bench.write(args, results, report + ["", "![trajectories](trajectories.png)"],
                          figures)
    plot_trajectories(runs[0], args.out / "trajectories.png")
    print((args.out / "report.md").read_text())
    return written


if __name__ == "__main__":
    main()
