"""Sine regression (paper IV-A.1, PROTOCOLS.md section 1).

Meta-trains one learned loss per seed on ``sin(x - pi)`` and trains fresh
MLPs on 10 unseen tasks per seed, comparing the learned loss at lr 1e-3 with
MSE at the same lr and at every lr of a grid (raw and standardised targets).

    python benchmarks/sine_regression.py            # 5 seeds x 10 tasks
    python benchmarks/sine_regression.py --seeds 2  # quicker
    python benchmarks/sine_regression.py --seeds 3 --inner-steps 1 --tasks-per-iter 1 \
        --n-meta-iter 2000 --out results/sine_ablation  # the one-step horizon (ablation)

Writes results/sine_regression/{results.json, curves.png, landscape.png, report.md}.
"""

import argparse

import torch

from sklearn_ml3.experiments.sine import format_table, run_protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--n-meta-iter", type=int, default=None,
                        help="meta-iterations per seed (default: the protocol's)")
    parser.add_argument("--inner-steps", type=int, default=None,
                        help="ablation: steps before optimizees are re-initialised")
    parser.add_argument("--unroll", type=int, default=None,
                        help="ablation: steps per meta-gradient")
    parser.add_argument("--tasks-per-iter", type=int, default=None, help="ablation")
    parser.add_argument("--out", default="results/sine_regression")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {k: v for k, v in (("inner_steps", args.inner_steps), ("unroll", args.unroll),
                                   ("tasks_per_iter", args.tasks_per_iter)) if v is not None}
    results = run_protocol(seeds=tuple(range(args.seeds)), n_test_tasks=args.tasks,
                           n_meta_iter=args.n_meta_iter, out_dir=args.out,
                           meta_overrides=overrides, time_budget=not overrides)
    print(format_table(results))
    meta, budget = results["meta_training"], results["authors_budget"]
    print(f"meta-training CPU: {meta['cpu_s']['mean']:.2f} ± {meta['cpu_s']['std']:.2f} s per "
          f"seed ({meta['n_meta_iter']} iterations)")
    if "cpu_s_per_seed" in budget:
        print(f"on the authors' budget {budget['cpu_s_per_seed']['mean']:.2f} s per seed, "
              f"{budget['speedup_vs_authors_cpu']:.1f}x faster than their code")
    print("verdict:", results["verdict"])


if __name__ == "__main__":
    main()
