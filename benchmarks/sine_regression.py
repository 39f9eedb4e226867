"""Sine regression (paper IV-A.1, PROTOCOLS.md section 1).

Meta-trains one learned loss per seed on ``sin(x - pi)`` and trains fresh
MLPs on 10 unseen tasks per seed, comparing the learned loss at lr 1e-3 with
MSE at the same lr and at every lr of a grid (raw and standardised targets).

    python benchmarks/sine_regression.py            # 5 seeds x 10 tasks
    python benchmarks/sine_regression.py --seeds 2  # quicker

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
    parser.add_argument("--out", default="results/sine_regression")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = run_protocol(seeds=tuple(range(args.seeds)), n_test_tasks=args.tasks,
                           n_meta_iter=args.n_meta_iter, out_dir=args.out)
    print(format_table(results))
    meta, budget = results["meta_training"], results["authors_budget"]
    print(f"meta-training CPU: {meta['cpu_s']['mean']:.2f} ± {meta['cpu_s']['std']:.2f} s per "
          f"seed ({meta['n_meta_iter']} iterations); on the authors' budget "
          f"{budget['cpu_s_per_seed']['mean']:.2f} s per seed, "
          f"{budget['speedup_vs_authors_cpu']:.1f}x faster than their code")
    print("verdict:", results["verdict"])


if __name__ == "__main__":
    main()
