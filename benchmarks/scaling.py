"""Meta-iterations per second with 1 and 2 torch.distributed processes (docs/scaling.md).

Each meta-iteration trains ``--tasks-per-iter`` optimizees of the paper's sine
protocol (MLP 1-100-10-1, 100 points, loss network 2-50-50-1) one SGD step
on the learned loss and back-propagates their task losses; with 2 processes
(gloo, localhost, one torch thread each) each trains half of the tasks and
one all-reduce sums the meta-gradient. The ``reacher-es`` path is the default
model-free meta-training of :func:`rl.meta_train_policy_loss` on ReacherGoal
(evolution strategies, 32 members scoring whole runs on the batched twin;
with 2 processes each scores 16). Runs of the two sizes alternate, so a
change in the machine's load affects both; the load average is recorded, and
so is each process's CPU time, which the load does not inflate: the 1-process
CPU time over the busiest rank's is the speedup the split gives where every
process has a core of its own (communication waits excluded).

    python benchmarks/scaling.py                       # loop and vmap, 1 and 2 processes
    python benchmarks/scaling.py --n-meta-iter 20 --repeats 2
    python benchmarks/scaling.py --paths reacher-es --n-meta-iter 10 --repeats 2

Writes results/scaling/{results.json, report.md} with the harness's writer.
It is not a seed loop on the harness: it times repeats of two process
counts in alternation, and parallel seeds would distort the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sklearn_ml3 import LearnedLoss, MetaLossRegressor, SineTasks
from sklearn_ml3.experiments.harness import write_results

#: What each path meta-trains (the sine paths take ``--tasks-per-iter``).
PROBLEMS = {
    "loop": "sine regression, MLP 1-100-10-1 optimizee, 100 points, loss 2-50-50-1; looped",
    "vmap": "sine regression, MLP 1-100-10-1 optimizee, 100 points, loss 2-50-50-1; vmap",
    "reacher-es": "model-free ReacherGoal, meta_train_policy_loss defaults (ES, 32 members, "
                  "4 goals, 2,000-step runs on the twin)",
}
TASKS = SineTasks(amplitude=(0.2, 5.0), phase=(-np.pi, np.pi), x_range=(-5.0, 5.0),
                  n_points=100)
OPTIMIZEE = MetaLossRegressor(hidden_layer_sizes=(100, 10), lr=1e-3)


def meta_fit(path: str, n_meta_iter: int, tasks_per_iter: int, seed: int) -> LearnedLoss:
    """Meta-train path ``path``'s problem for ``n_meta_iter`` iterations."""
    if path == "reacher-es":
        from rl import meta_train_policy_loss
        from rl.envs import ReacherGoalEnv

        # the model-free benchmark's 30 training goals, every other setting the default
        goals = ReacherGoalEnv.sample_tasks(30, np.random.default_rng(1))
        return meta_train_policy_loss("ml3/ReacherGoal-v0", goals=goals,
                                      n_meta_iter=n_meta_iter, random_state=seed, verbose=0)
    loss = LearnedLoss(hidden_layer_sizes=(50, 50), random_state=seed)
    return loss.meta_fit(TASKS, estimator=OPTIMIZEE, n_meta_iter=n_meta_iter, inner_steps=1,
                         tasks_per_iter=tasks_per_iter, vectorize=path == "vmap",
                         random_state=seed, verbose=0)


def _rank_main(rank, world_size, port, args, out_file):
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size)
    try:
        meta_fit(args.path, 2, args.tasks_per_iter, seed=1)  # warm-up, untimed
        if world_size > 1:
            dist.barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = meta_fit(args.path, args.n_meta_iter, args.tasks_per_iter, seed=0)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        phi = torch.cat([p.detach().reshape(-1) for p in loss.parameters()])
        Path(f"{out_file}.{rank}").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu,
                                                           "phi": phi.tolist()}))
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_run(world_size: int, args, tmp: Path) -> dict:
    out_file = tmp / f"run{world_size}.json"
    load_before = os.getloadavg()[0]
    mp.start_processes(_rank_main, args=(world_size, _free_port(), args, out_file),
                       nprocs=world_size, join=True, start_method="spawn")
    ranks = [json.loads(Path(f"{out_file}.{rank}").read_text()) for rank in range(world_size)]
    wall = max(r["wall_s"] for r in ranks)
    return {"wall_s": wall, "iter_per_s": args.n_meta_iter / wall,
            "cpu_s_per_process": [r["cpu_s"] for r in ranks],
            "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
            "phi": [r["phi"] for r in ranks]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-meta-iter", type=int, default=30)
    parser.add_argument("--tasks-per-iter", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", nargs="+", default=["loop", "vmap"],
                        choices=sorted(PROBLEMS))
    parser.add_argument("--out", type=Path, default=Path("results/scaling"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = (1, 2)
    results = {
        "problems": {path: PROBLEMS[path] for path in args.paths},
        "settings": {"n_meta_iter": args.n_meta_iter, "tasks_per_iter": args.tasks_per_iter,
                     "inner_steps": 1, "repeats": args.repeats, "backend": "gloo",
                     "torch_threads_per_process": 1},
        "machine": {"cpu_count": os.cpu_count(),
                    "note": "shared machine: other jobs ran at the same time (see load)"},
        "paths": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.paths:
            args.path = path
            runs = {n: [] for n in sizes}
            for repeat in range(args.repeats):
                for n in sizes:
                    runs[n].append(timed_run(n, args, Path(tmp)))
                    print(f"{path} repeat {repeat} processes {n}: "
                          f"{runs[n][-1]['iter_per_s']:.2f} it/s "
                          f"(load {runs[n][-1]['load_avg_1min_before']:.1f})", flush=True)
            # the split is exact: every rank of every run ends with the same weights
            max_diff = max(float(np.max(np.abs(np.subtract(phi, runs[1][0]["phi"][0]))))
                           for n in sizes for r in runs[n] for phi in r["phi"])
            median = {n: float(np.median([r["iter_per_s"] for r in runs[n]])) for n in sizes}
            busiest_cpu = {n: float(np.median([max(r["cpu_s_per_process"]) for r in runs[n]]))
                           for n in sizes}
            speedup = median[2] / median[1]
            for n in sizes:
                for r in runs[n]:
                    del r["phi"]
            results["paths"][path] = {
                "runs": {str(n): runs[n] for n in sizes},
                "median_iter_per_s": {str(n): median[n] for n in sizes},
                "speedup_2_vs_1": speedup, "parallel_efficiency": speedup / 2,
                "median_busiest_process_cpu_s": {str(n): busiest_cpu[n] for n in sizes},
                "cpu_bound_speedup_2_vs_1": busiest_cpu[1] / busiest_cpu[2],
                "max_weight_difference_between_runs": max_diff,
            }
    lines = ["# Scaling: meta-iterations per second", "",
             *[f"- {path}: {problem}" for path, problem in results["problems"].items()], "",
             f"{args.tasks_per_iter} tasks per meta-iteration (sine), "
             f"{args.n_meta_iter} meta-iterations, median of {args.repeats} runs; "
             f"{os.cpu_count()} CPU cores, shared.", "",
             "| path | 1 process (it/s) | 2 processes (it/s) | speedup | efficiency | "
             "CPU s, 1 / busiest of 2 | CPU-bound speedup | load |",
             "|---|---|---|---|---|---|---|---|"]
    for path, r in results["paths"].items():
        loads = [x["load_avg_1min_before"] for n in sizes for x in r["runs"][str(n)]]
        lines.append(f"| {path} | {r['median_iter_per_s']['1']:.2f} | "
                     f"{r['median_iter_per_s']['2']:.2f} | {r['speedup_2_vs_1']:.2f} | "
                     f"{r['parallel_efficiency']:.0%} | "
                     f"{r['median_busiest_process_cpu_s']['1']:.1f} / "
                     f"{r['median_busiest_process_cpu_s']['2']:.1f} | "
                     f"{r['cpu_bound_speedup_2_vs_1']:.2f} | {min(loads):.1f}-{max(loads):.1f} |")
    write_results(args.out, results, lines, benchmark="scaling")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
