"""Sine regression (paper IV-A.1, PROTOCOLS.md section 1).

Meta-trains one learned loss per seed on sin(x - pi) and trains fresh MLPs on
10 unseen tasks per seed (the seed's meta-test stream), comparing the learned
loss at lr 1e-3 with MSE at the same lr and at its best lr by the baseline rule
(validation tasks from their own stream), on raw and on standardised targets,
plus the step-size control (MSE at lr x the gradient-norm ratio).

    python benchmarks/sine_regression.py              # 5 seeds x 10 tasks
    python benchmarks/sine_regression.py --quick      # a smoke test
    python benchmarks/sine_regression.py --seeds 3 --inner-steps 1 --tasks-per-iter 1 \
        --n-meta-iter 2000 --out results/sine_ablation  # the one-step horizon (ablation)

Writes results/sine_regression/{results.json, curves.png, landscape.png, report.md};
seeds are cached in results/sine_regression/runs/.
"""

from sklearn_ml3.experiments.harness import Benchmark
from sklearn_ml3.experiments.sine import BENCHMARK, run_seed, summarise, write_outputs

bench = Benchmark(BENCHMARK, __doc__)
bench.add_argument("--tasks", type=int, default=10, help="unseen test tasks per seed")
bench.add_argument("--n-meta-iter", type=int, default=None,
                   help="meta-iterations per seed (default: the protocol's)")
bench.add_argument("--inner-steps", type=int, default=None,
                   help="ablation: steps before optimizees are re-initialised")
bench.add_argument("--unroll", type=int, default=None, help="ablation: steps per meta-gradient")
bench.add_argument("--tasks-per-iter", type=int, default=None, help="ablation")


def overrides(args) -> dict:
    return {k: v for k, v in (("inner_steps", args.inner_steps), ("unroll", args.unroll),
                              ("tasks_per_iter", args.tasks_per_iter)) if v is not None}


def n_meta_iter(args):
    return args.n_meta_iter or bench.budget(args, None, full=None, quick=20)


def one_seed(seed, streams, args) -> dict:
    return run_seed(seed, streams, n_test_tasks=args.tasks, n_meta_iter=n_meta_iter(args),
                    meta_overrides=overrides(args), time_budget=not overrides(args),
                    n_steps=bench.budget(args, 100, full=100, quick=10),
                    loss_path=args.out / "runs" / f"loss_seed{seed}.ml3")


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    runs = bench.run(one_seed, args)
    n_steps = len(runs[0]["curves"]["learned"]) - 1
    results = summarise(runs, args.tasks, n_steps, overrides(args))
    results = write_outputs({**results, "budget": bench.budget(args, "default", full="full",
                                                               quick="quick"),
                             "settings": bench.settings(args)},
                            runs, args.out, seeds=list(range(args.seeds)))
    print((args.out / "report.md").read_text())
    return results


if __name__ == "__main__":
    main()
