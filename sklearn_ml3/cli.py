"""The ``ml3`` command: demo, meta-train, evaluate, info."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .learned_loss import LearnedLoss


def _meta_train_sine(seed: int, n_meta_iter: int | None, verbose: int,
                     checkpoint: str | None = None) -> LearnedLoss:
    from .experiments.sine import meta_train_sine_loss

    return meta_train_sine_loss(seed, n_meta_iter=n_meta_iter, verbose=verbose,
                                checkpoint=checkpoint)


#: Tasks ``ml3 meta-train`` knows: name -> (description, trainer).
TASKS: dict[str, tuple[str, Callable[..., LearnedLoss]]] = {
    "sine": ("sine regression, paper IV-A.1 (PROTOCOLS.md section 1)", _meta_train_sine),
}


def _single_thread():
    """Commands are run as programs, so they may set their own thread count."""
    import torch

    torch.set_num_threads(1)


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
    _single_thread()
    _, trainer = TASKS[args.task]
    loss = trainer(args.seed, args.n_meta_iter, 1, checkpoint=args.checkpoint)
    path = loss.save(args.out)
    history = loss.meta_history_
    print(f"saved {loss!r} to {path}")
    print(f"task loss: first 10 iterations {history[:10].mean():.4g}, "
          f"last 10 {history[-10:].mean():.4g}")
    return 0


def cmd_evaluate(args) -> int:
    _single_thread()
    from .experiments.sine import LR, mean_test_curve, sample_test_tasks

    loss = LearnedLoss.load(args.file)
    if loss.kind != "regression" or loss.n_extra_inputs:
        raise ValueError(
            f"ml3 evaluate runs the sine-regression protocol and needs a plain regression "
            f"loss; {args.file} holds a kind={loss.kind!r} loss"
        )
    tasks = sample_test_tasks(args.seed, args.tasks)
    rows = [("learned loss", loss, LR)] + [(f"MSE, lr {lr:g}", "squared_error", lr)
                                           for lr in (LR, 1e-2)]
    print(f"test MSE on {len(tasks)} unseen sine tasks after k SGD steps")
    print(f"{'method':<20}{'k=0':>9}{'k=10':>9}{'k=50':>9}{'k=100':>9}")
    for name, which, lr in rows:
        curve = mean_test_curve(which, tasks, lr, 100, args.seed)  # inf where training diverged
        print(f"{name:<20}" + "".join(f"{curve[k]:>9.3f}" for k in (0, 10, 50, 100)))
    return 0


def cmd_info(args) -> int:
    loss = LearnedLoss.load(args.file)
    print(repr(loss))
    print(json.dumps({"config": loss.get_config(), "meta_info": loss.meta_info_,
                      "n_parameters": loss.n_parameters}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml3", description="Meta-learned loss functions (ML3).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="meta-train a sine loss, compare with MSE, write a report")
    demo.add_argument("--out", default="results/sine", help="output folder")
    demo.add_argument("--seeds", type=int, default=1)
    demo.add_argument("--tasks", type=int, default=10, help="unseen test tasks")
    demo.add_argument("--n-meta-iter", type=int, default=None)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("meta-train", help="meta-train a loss on a named task and save it")
    train.add_argument("task", choices=sorted(TASKS),
                       help="; ".join(f"{k}: {v[0]}" for k, v in TASKS.items()))
    train.add_argument("--out", required=True, help="file to write (safetensors)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-meta-iter", type=int, default=None)
    train.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="save progress here every 50 iterations and resume from it if it "
                            "exists (a killed run continues where it stopped)")
    train.set_defaults(func=cmd_meta_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved regression loss on sine tasks")
    evaluate.add_argument("file")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--tasks", type=int, default=10)
    evaluate.set_defaults(func=cmd_evaluate)

    info = sub.add_parser("info", help="print a saved loss's metadata")
    info.add_argument("file")
    info.set_defaults(func=cmd_info)
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
