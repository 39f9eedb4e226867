"""The ``ml3`` command: demo, meta-train, evaluate, info, zoo."""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import __version__
from .learned_loss import LearnedLoss

KINDS = ("regression", "classification")
#: Most distinct integer target values still inferred as class labels.
MAX_INFERRED_CLASSES = 20


def _meta_train_sine(seed: int, n_meta_iter: int | None, verbose: int,
                     checkpoint: str | None = None) -> LearnedLoss:
    from .experiments.sine import meta_train_sine_loss

    return meta_train_sine_loss(seed, n_meta_iter=n_meta_iter, verbose=verbose,
                                checkpoint=checkpoint)


#: Tasks ``ml3 meta-train`` knows: name -> (description, trainer).
TASKS: dict[str, tuple[str, Callable[..., LearnedLoss]]] = {
    "sine": ("sine regression of the ML3 paper, section IV-A.1 (docs/sine_regression.md)",
             _meta_train_sine),
}


def _single_thread():
    """Commands are run as programs, so they may set their own thread count."""
    import torch

    torch.set_num_threads(1)


# ------------------------------------------------------------------ CSV tasks
def read_csv_table(path: str | os.PathLike, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Numeric feature columns and the ``target`` column (numbers or labels) of a CSV file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0]:
        raise ValueError(f"{path} is empty; it needs a header row and data rows")
    header, data = [c.strip() for c in rows[0]], [r for r in rows[1:] if r]
    if target not in header:
        raise ValueError(f"{path} has no column {target!r}; its columns are {header}")
    if len(header) < 2:
        raise ValueError(f"{path} has only the target column; it needs feature columns too")
    if len(data) < 4:
        raise ValueError(f"{path} has {len(data)} data rows; a task needs at least 4")
    t = header.index(target)
    features, labels = [], []
    for line, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: {len(row)} values for {len(header)} columns")
        try:
            features.append([float(v) for j, v in enumerate(row) if j != t])
        except ValueError:
            bad = next(h for j, (h, v) in enumerate(zip(header, row, strict=True))
                       if j != t and not _is_number(v))
            raise ValueError(f"{path}, line {line}: feature column {bad!r} is not a number "
                             "(features must be numeric)") from None
        labels.append(row[t].strip())
    X = np.asarray(features, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"{path} has missing or infinite feature values; fill or drop them")
    y = np.asarray(labels)
    if all(_is_number(v) for v in labels):
        y = y.astype(np.float64)
    return X, y


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def infer_kind(targets: list[np.ndarray]) -> str:
    """"classification" for text labels or few distinct integers, else "regression"."""
    y = np.concatenate(targets)
    if y.dtype.kind not in "fiu":
        return "classification"
    integral = np.all(np.mod(y, 1) == 0)
    return "classification" if integral and len(np.unique(y)) <= MAX_INFERRED_CLASSES \
        else "regression"


def read_csv_tasks(paths, target: str, kind: str | None) -> tuple[list, str, np.ndarray | None]:
    """``(X, y)`` per CSV file, the task kind, and the classes (None for regression)."""
    tables = [read_csv_table(p, target) for p in paths]
    kind = kind or infer_kind([y for _, y in tables])
    if kind == "regression":
        for path, (_, y) in zip(paths, tables, strict=True):
            if y.dtype.kind != "f":
                raise ValueError(f"{path}: target {target!r} holds text labels; a regression "
                                 "target must be numeric (or use --kind classification)")
        return tables, kind, None
    classes = np.unique(np.concatenate([y.astype(str) for _, y in tables]))
    encoded = [(X, np.searchsorted(classes, y.astype(str))) for X, y in tables]
    return encoded, kind, classes


def split_task(X, y, val_fraction: float, seed: int, kind: str):
    """``(X_train, y_train, X_val, y_val)`` with features standardised on the training part."""
    from sklearn.model_selection import train_test_split

    stratify = y if kind == "classification" and np.bincount(y).min() >= 2 else None
    X_tr, X_val, y_tr, y_val = train_test_split(X, y, test_size=val_fraction, random_state=seed,
                                                stratify=stratify)
    mean, std = X_tr.mean(0), np.maximum(X_tr.std(0), 1e-8)
    return ((X_tr - mean) / std).astype(np.float32), y_tr, ((X_val - mean) / std).astype(
        np.float32), y_val


def _check_output(path: str, force: bool) -> Path:
    """Refuse an output path that cannot be written, before any work starts."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'loss.ml3'}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--out {out}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {out}: the folder {parent} is not writable")
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists; pass --force to replace it")
    return out


def _engine_default(name: str):
    """The meta-training engine's own default for option ``name`` (one home for defaults)."""
    from .meta import meta_train

    return inspect.signature(meta_train).parameters[name].default


# ------------------------------------------------------------------ commands
def cmd_demo(args) -> int:
    _single_thread()
    from .experiments.sine import format_table, run_protocol

    seeds = tuple(range(args.seeds))
    print(f"Meta-training a sine-regression loss ({len(seeds)} seed(s)) and evaluating it on "
          f"{args.tasks} unseen tasks against MSE ...", flush=True)
    results = run_protocol(seeds=seeds, n_test_tasks=args.tasks, n_meta_iter=args.n_meta_iter,
                           out_dir=args.out, verbose=1)
    print()
    print(format_table(results))
    meta = results["meta_training"]
    print(f"\nmeta-training: {meta['cpu_s']['mean']:.1f} s CPU per seed "
          f"({meta['n_meta_iter']} iterations)")
    print(f"written: {', '.join(sorted(p.name for p in Path(args.out).iterdir()))} in {args.out}")
    return 0


def cmd_meta_train(args) -> int:
    if (args.task is None) == (args.csv is None):
        raise ValueError("give either a named task (e.g. `ml3 meta-train sine`) or "
                         "--csv FILE [FILE ...] with --target COLUMN")
    out = _check_output(args.out, args.force)
    if args.task is not None:
        _single_thread()
        _, trainer = TASKS[args.task]
        loss = trainer(args.seed, args.n_meta_iter, 1, checkpoint=args.checkpoint)
    else:
        loss = _meta_train_csv(args)
    path = loss.save(out)
    history = loss.meta_history_
    print(f"saved {loss!r} to {path}")
    print(f"task loss: first 10 iterations {history[:10].mean():.4g}, "
          f"last 10 {history[-10:].mean():.4g}")
    return 0


def _meta_train_csv(args) -> LearnedLoss:
    from .estimators import MetaLossClassifier, MetaLossRegressor

    if args.target is None:
        raise ValueError("--csv needs --target COLUMN, the column to predict")
    tables, kind, classes = read_csv_tasks(args.csv, args.target, args.kind)
    tasks = [split_task(X, y, args.val_fraction, args.seed + i, kind)
             for i, (X, y) in enumerate(tables)]
    template_cls = MetaLossClassifier if kind == "classification" else MetaLossRegressor
    template = template_cls(hidden_layer_sizes=tuple(args.hidden), solver=args.inner_optimizer,
                            lr=args.inner_lr)
    template._validate_params()  # bad widths or lr fail here, before any training
    template._hidden_sizes()
    options = {"n_meta_iter": args.n_meta_iter or 500, "inner_steps": args.inner_steps,
               "unroll": args.unroll, "tasks_per_iter": args.tasks_per_iter,
               "meta_lr": args.meta_lr, "grad_clip": args.grad_clip,
               "batch_size": args.batch_size, "random_state": args.seed,
               "checkpoint": args.checkpoint}
    if kind == "regression":
        options["target_scaling"] = None if args.target_scaling == "none" else "standard"
    print(f"{len(tasks)} {kind} task(s) from {', '.join(map(str, args.csv))}"
          + ("" if args.kind else " (kind inferred; override with --kind)")
          + (f", classes {[str(c) for c in classes]}" if classes is not None else ""),
          flush=True)
    _single_thread()
    loss = LearnedLoss(kind, hidden_layer_sizes=tuple(args.loss_hidden), random_state=args.seed)
    loss.meta_fit(tasks, estimator=template, **options)
    loss.meta_info_["csv"] = {"files": [Path(p).name for p in args.csv], "target": args.target,
                              "optimizee_hidden_layer_sizes": list(args.hidden)}
    return loss


def cmd_evaluate(args) -> int:
    loss = LearnedLoss.load(args.file)
    if args.csv is None:
        return _evaluate_sine(loss, args)
    if args.target is None:
        raise ValueError("--csv needs --target COLUMN, the column to predict")
    if loss.kind not in KINDS:
        raise ValueError(f"{args.file} holds a kind={loss.kind!r} loss; ml3 evaluate --csv needs "
                         "a regression or classification loss")
    tables, kind, _ = read_csv_tasks(args.csv, args.target, loss.kind)
    _single_thread()
    hidden = args.hidden or loss.meta_info_.get("csv", {}).get("optimizee_hidden_layer_sizes",
                                                                [100])
    results = evaluate_on_tables(loss, tables, args.csv, kind, seeds=range(args.seeds),
                                 max_iter=args.max_iter, test_fraction=args.test_fraction,
                                 hidden=hidden)
    metric = "test MSE" if kind == "regression" else "test accuracy"
    print(f"\n{metric} after {args.max_iter} epochs, mean ± std over {args.seeds} seed(s)")
    print(f"{'file':<24}{'method':<36}{'lr (per seed)':>14}{'score':>12}")
    for row in results:
        lrs = sorted(set(row["lr"]))
        lr = f"{lrs[0]:g}" if len(lrs) == 1 else f"{lrs[0]:g}..{lrs[-1]:g}"
        print(f"{row['file']:<24}{row['method']:<36}{lr:>14}"
              f"{row['mean']:>12.4g} ± {row['std']:.2g}")
    return 0


def evaluate_on_tables(loss, tables, paths, kind, *, seeds, max_iter, test_fraction, hidden):
    """Score ``loss`` against the hand-written loss at the same and at its tuned lr.

    Per file and seed: a test split is scored; the hand-written loss's lr is
    tuned on a validation split of the training part (never on the test
    split), then refitted on the whole training part.
    """
    from sklearn.metrics import mean_squared_error
    from tqdm.auto import tqdm

    from . import meta
    from .estimators import MetaLossClassifier, MetaLossRegressor

    cls = MetaLossClassifier if kind == "classification" else MetaLossRegressor
    higher_is_better = kind == "classification"
    builtin = "log_loss" if higher_is_better else "squared_error"
    # one fixed budget for every method: no early stopping on any of them
    common = {"hidden_layer_sizes": tuple(hidden), "max_iter": max_iter,
              "n_iter_no_change": max_iter}
    learned = cls(loss, **common)
    solver, lr = learned._resolved_solver(loss), learned._resolved_lr(loss)
    scaling = loss.meta_info_.get("problem", {}).get("target_scaling")
    handwritten = {"solver": solver, **common}
    if kind == "regression":
        handwritten["target_scaling"] = scaling

    def score(est, X_tr, y_tr, X_te, y_te, seed):
        est = est.set_params(random_state=seed)
        try:
            est.fit(X_tr, y_tr)
        except FloatingPointError:
            return np.nan
        pred = est.predict(X_te)
        return float(np.mean(pred == y_te)) if higher_is_better else float(
            mean_squared_error(y_te, pred))

    rows = []
    bar = tqdm(total=len(tables) * len(list(seeds)), desc="evaluate", dynamic_ncols=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fixed budget: ConvergenceWarning is expected
        for path, (X, y) in zip(paths, tables, strict=True):
            per_method: dict[str, list[float]] = {}
            lrs: dict[str, list[float]] = {}
            for seed in seeds:
                X_tr, y_tr, X_te, y_te = split_task(X, y, test_fraction, seed, kind)
                X_fit, y_fit, X_val, y_val = split_task(X_tr, y_tr, 0.25, seed + 1000, kind)
                record = meta.tune_lr(
                    lambda lr_, s=seed, d=(X_fit, y_fit, X_val, y_val): score(
                        cls(builtin, lr=lr_, **handwritten), *d, s),
                    (lr / 3, lr, lr * 3), name=builtin, lower_is_better=not higher_is_better,
                    selected_on="25% validation split of the training part")
                methods = {
                    "learned loss": (learned, lr),
                    f"{builtin}, same lr": (cls(builtin, lr=lr, **handwritten), lr),
                    f"{builtin}, tuned lr (validation)": (
                        cls(builtin, lr=record["best_lr"], **handwritten), record["best_lr"]),
                }
                for name, (est, lr_used) in methods.items():
                    per_method.setdefault(name, []).append(score(est, X_tr, y_tr, X_te, y_te, seed))
                    lrs.setdefault(name, []).append(lr_used)
                bar.update(1)
            for name, values in per_method.items():
                rows.append({"file": Path(path).name, "method": name,
                             "lr": lrs[name], "mean": float(np.mean(values)),
                             "std": float(np.std(values)), "per_seed": values})
    bar.close()
    return rows


def _evaluate_sine(loss, args) -> int:
    """The sine protocol of ``benchmarks/sine_regression.py`` for one seed: the learned loss
    vs MSE at the same lr and at the lr tuned on validation tasks, on raw and on
    standardised targets, and the step-size control."""
    _single_thread()
    from .experiments import sine
    from .experiments.harness import SeedStreams

    if loss.kind != "regression" or loss.n_extra_inputs:
        raise ValueError(
            f"ml3 evaluate without --csv runs the sine-regression protocol and needs a plain "
            f"regression loss; {args.file} holds a kind={loss.kind!r} loss"
        )
    from tqdm.auto import tqdm

    with tqdm(desc="evaluate", total=6, dynamic_ncols=True) as bar:
        result = sine.evaluate_loss(loss, SeedStreams(args.seed, sine.BENCHMARK),
                                    n_test_tasks=args.tasks, progress=bar)
    raw, standardised = (r["best_lr"] for r in result["baselines"])
    labels = {"learned": f"learned loss, lr {sine.LR:g}",
              "mse (same lr)": "MSE, same lr", "mse (best lr)": f"MSE, tuned lr {raw:g}",
              "mse_standardized (same lr)": "MSE, standardised targets, same lr",
              "mse_standardized (best lr)": f"MSE, standardised targets, tuned lr {standardised:g}",
              "mse_standardized (step-size control)":
                  "MSE, standardised targets, lr x norm ratio"}
    print(f"test MSE on {args.tasks} unseen sine tasks after k SGD steps (seed {args.seed}; "
          "lr tuned on validation tasks of their own seed stream)")
    print(f"{'method':<50}{'k=0':>9}{'k=10':>9}{'k=50':>9}{'k=100':>9}")
    for name, curve in result["curves"].items():
        print(f"{labels[name]:<50}" + "".join(f"{curve[k]:>9.3f}" for k in (0, 10, 50, 100)))
    return 0


def cmd_info(args) -> int:
    loss = LearnedLoss.load(args.file)
    print(repr(loss))
    print(json.dumps({"config": loss.get_config(), "meta_info": loss.meta_info_,
                      "n_parameters": loss.n_parameters}, indent=2))
    return 0


def cmd_zoo(args) -> int:
    from . import zoo

    if args.name is None:
        for name in zoo.list():
            print(zoo.card(name).one_line())
        return 0
    try:
        print(zoo.card(args.name).to_markdown(), end="")
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return 0


def _positive_fraction(value: str) -> float:
    fraction = float(value)
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return fraction


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml3", description="Meta-learned loss functions (ML3).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="meta-train a sine loss, compare with MSE, write a report")
    demo.add_argument("--out", default="results/sine", help="output folder")
    demo.add_argument("--seeds", type=int, default=1)
    demo.add_argument("--tasks", type=int, default=10, help="unseen test tasks")
    demo.add_argument("--n-meta-iter", type=int, default=None)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser(
        "meta-train", help="meta-train a loss on a named task or on your CSV files and save it",
        description="Meta-train a loss on a named task, or on your own tasks: one CSV file per "
                    "task (a header row, numeric feature columns, a target column).")
    train.add_argument("task", nargs="?", choices=sorted(TASKS),
                       help="; ".join(f"{k}: {v[0]}" for k, v in TASKS.items()))
    train.add_argument("--csv", nargs="+", metavar="FILE", help="one CSV file per task")
    train.add_argument("--target", help="the target column of the CSV files")
    train.add_argument("--kind", choices=KINDS,
                       help="task kind (default: inferred from the target column)")
    train.add_argument("--out", required=True, help="file to write (safetensors)")
    train.add_argument("--force", action="store_true", help="replace an existing --out file")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-meta-iter", type=int, default=None,
                       help="meta-iterations (default: the task's own; 500 for CSV tasks)")
    train.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="save progress here every 50 iterations and resume from it if it "
                            "exists (a killed run continues where it stopped)")
    engine = train.add_argument_group("meta-training settings (CSV tasks)")
    for flag, kind_, name, text in (
            ("--inner-steps", int, "inner_steps", "steps an optimizee trains before reset"),
            ("--unroll", int, "unroll", "inner steps differentiated through per meta-gradient"),
            ("--tasks-per-iter", int, "tasks_per_iter", "tasks per meta-gradient"),
            ("--inner-lr", float, "inner_lr", "learning rate of the optimizee"),
            ("--meta-lr", float, "meta_lr", "Adam learning rate of the loss network"),
            ("--grad-clip", float, "grad_clip", "clip the meta-gradient's norm")):
        engine.add_argument(flag, type=kind_, default=_engine_default(name),
                            help=f"{text} (default: %(default)s)")
    engine.add_argument("--inner-optimizer", choices=("sgd", "momentum", "adam"),
                        default=_engine_default("inner_optimizer"),
                        help="optimizer of the optimizee (default: %(default)s)")
    engine.add_argument("--batch-size", type=int, default=None,
                        help="inner mini-batch size (default: full batch)")
    engine.add_argument("--hidden", type=int, nargs="+", default=[100], metavar="WIDTH",
                        help="hidden widths of the MLP optimizee (default: 100)")
    engine.add_argument("--loss-hidden", type=int, nargs="+", default=[50, 50], metavar="WIDTH",
                        help="hidden widths of the loss network (default: 50 50)")
    engine.add_argument("--target-scaling", choices=("standard", "none"), default="standard",
                        help="regression targets standardised per task (default: standard)")
    engine.add_argument("--val-fraction", type=_positive_fraction, default=0.3,
                        help="share of each task scored by the task loss (default: 0.3)")
    train.set_defaults(func=cmd_meta_train)

    evaluate = sub.add_parser(
        "evaluate", help="compare a saved loss with the hand-written loss (same and tuned lr)",
        description="Without --csv: the sine protocol on unseen sine tasks. With --csv: your "
                    "data, split into training and test parts per seed; the hand-written "
                    "loss's lr is tuned on a validation split of the training part.")
    evaluate.add_argument("file")
    evaluate.add_argument("--csv", nargs="+", metavar="FILE", help="CSV files to evaluate on")
    evaluate.add_argument("--target", help="the target column of the CSV files")
    evaluate.add_argument("--seeds", type=int, default=5, help="seeds per CSV file (default: 5)")
    evaluate.add_argument("--max-iter", type=int, default=100,
                          help="training epochs of every method (default: 100)")
    evaluate.add_argument("--test-fraction", type=_positive_fraction, default=0.3)
    evaluate.add_argument("--hidden", type=int, nargs="+", default=None, metavar="WIDTH",
                          help="optimizee hidden widths (default: those of meta-training)")
    evaluate.add_argument("--seed", type=int, default=0, help="sine protocol: task draw")
    evaluate.add_argument("--tasks", type=int, default=10, help="sine protocol: test tasks")
    evaluate.set_defaults(func=cmd_evaluate)

    info = sub.add_parser("info", help="print a saved loss's metadata")
    info.add_argument("file")
    info.set_defaults(func=cmd_info)

    zoo = sub.add_parser("zoo", help="list the shipped pre-trained losses, or show one's card",
                         description="Without NAME: one line per entry with its measured "
                                     "result. With NAME: the entry's card. Load an entry in "
                                     "Python with sklearn_ml3.zoo.load(NAME).")
    zoo.add_argument("name", nargs="?", metavar="NAME", help="an entry of the zoo")
    zoo.set_defaults(func=cmd_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ml3`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"ml3 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
