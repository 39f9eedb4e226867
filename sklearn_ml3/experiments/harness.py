"""The benchmark harness: common flags, named seed streams, per-seed caching, one writer.

Every script in ``benchmarks/`` is a short protocol on top of :class:`Benchmark`::

    bench = Benchmark("sine_regression", __doc__)
    bench.add_argument("--tasks", type=int, default=10)        # protocol-specific flags
    args = bench.parse_args()

    def run_seed(seed: int, streams: SeedStreams, args) -> dict:
        tasks = sample(streams.rng("meta_test"))               # never a hand-picked offset
        ...
        return {"curves": {...}, "baselines": [tune_lr(...)], "step_size": {...}}

    runs = bench.run(run_seed, args)                           # cached per seed, resumable
    bench.write(args, results, report_lines, figures)          # results.json, report.md, PNGs

What it provides:

- **Flags** every benchmark has: ``--seeds N`` (seeds ``0..N-1``, default 5),
  ``--full`` (paper-scale budget), ``--quick`` (a smoke-test budget; never
  reported), ``--jobs`` (seeds run in parallel processes), ``--out``
  (default ``results/<name>``) and ``--fresh`` (ignore cached seeds).
- **Seed streams** (:class:`SeedStreams`): one independent random stream per
  purpose and seed, ``meta_train``, ``meta_test``, ``validation`` and
  ``init``; the validation tasks of the baseline rule come from their own
  stream, so they are drawn apart from the meta-test tasks.
- **Caching**: :meth:`Benchmark.run` stores each seed's result in
  ``<out>/runs/seed_<k>.json`` with the settings that produced it; a rerun
  with the same settings loads it, so an interrupted benchmark resumes, and
  changed settings recompute.
- **One writer** (:meth:`Benchmark.write`): ``results.json`` (with versions,
  settings, seeds and threads), ``report.md`` and figures of mean curves with
  a band of one standard deviation over seeds (:class:`CurvePanel`).
  ``results["headline"]`` rows are what ``benchmarks/summary.py`` puts in the
  README table.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, versions

#: The purposes a benchmark draws random numbers for; each gets its own stream.
STREAMS = ("meta_train", "meta_test", "validation", "init")
#: Flags that change where or how fast a run goes, not what it computes.
_NOT_SETTINGS = ("seeds", "jobs", "out", "fresh")


class SeedStreams:
    """Independent random streams of one benchmark seed, one per purpose.

    Parameters
    ----------
    seed : int
        The benchmark seed.
    benchmark : str
        Name of the benchmark (streams of different benchmarks differ).

    Examples
    --------
    >>> streams = SeedStreams(0, "demo")
    >>> a = streams.rng("meta_test").uniform()
    >>> b = SeedStreams(0, "demo").rng("validation").uniform()
    >>> a != b
    True
    """

    def __init__(self, seed: int, benchmark: str = ""):
        self.seed = int(seed)
        self.benchmark = benchmark
        self._key = zlib.crc32(benchmark.encode())

    def rng(self, stream: str) -> np.random.Generator:
        """A fresh generator of ``stream`` (the same numbers every call)."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        return np.random.default_rng([self._key, STREAMS.index(stream), self.seed])

    def ints(self, stream: str, n: int) -> list[int]:
        """``n`` integer seeds from ``stream`` (e.g. optimizee initialisations)."""
        return [int(v) for v in self.rng(stream).integers(0, 2**31 - 1, size=int(n))]

    def seed_of(self, stream: str) -> int:
        """One integer seed from ``stream`` (e.g. a ``random_state``)."""
        return self.ints(stream, 1)[0]


def stats(values) -> dict[str, Any]:
    """``{"mean", "std", "per_seed"}`` of per-seed values (NaN-aware)."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values)),
            "per_seed": values.tolist()}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON with :func:`~sklearn_ml3._utils.atomic_write` (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(data), indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@dataclass
class CurvePanel:
    """One panel of a figure: curves per method, each ``(n_seeds, n_points)``.

    Attributes
    ----------
    title, xlabel, ylabel : str
    x : sequence of float
        Shared x values (e.g. the evaluation steps).
    curves : dict of str to array-like of shape (n_seeds, n_points)
    logy : bool
    """

    title: str
    xlabel: str
    ylabel: str
    x: Sequence[float]
    curves: dict[str, Any] = field(default_factory=dict)
    logy: bool = False


def plot_panels(path: Path, panels: Sequence[CurvePanel]) -> None:
    """Mean curves with a band of one standard deviation over seeds, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        x = np.asarray(panel.x, dtype=float)
        for label, runs in panel.curves.items():
            runs = np.atleast_2d(np.asarray(runs, dtype=float))
            mean, std = runs.mean(0), runs.std(0)
            ax.plot(x, mean, label=label)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        if panel.logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run_one(run_seed, seed: int, benchmark: str, args) -> dict:
    import torch

    torch.set_num_threads(1)  # benchmarks run one torch thread (also in joblib workers)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    result = run_seed(seed, SeedStreams(seed, benchmark), args)
    result = dict(result)
    result.setdefault("seed", seed)
    result["seed_time_s"] = {"wall": time.perf_counter() - t_wall,
                             "cpu": time.process_time() - t_cpu}
    return _jsonable(result)


class Benchmark:
    """A benchmark script's command line, seed loop, cache and outputs.

    Parameters
    ----------
    name : str
        Results go to ``results/<name>`` by default.
    description : str
        The script's docstring (its first line is the ``--help`` summary).
    default_seeds : int, default=5
    """

    def __init__(self, name: str, description: str | None = None, *, default_seeds: int = 5):
        self.name = name
        doc = (description or name).strip()
        self.parser = argparse.ArgumentParser(
            description=doc.splitlines()[0], epilog="\n".join(doc.splitlines()[1:]),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        common = self.parser.add_argument_group("common benchmark flags")
        common.add_argument("--seeds", type=int, default=default_seeds,
                            help=f"number of seeds, run as 0..N-1 (default {default_seeds})")
        budget = common.add_mutually_exclusive_group()
        budget.add_argument("--full", action="store_true", help="the paper-scale budget")
        budget.add_argument("--quick", action="store_true",
                            help="a tiny budget to check that the script runs (not a result)")
        common.add_argument("--jobs", type=int, default=1,
                            help="seeds run in parallel processes (default 1)")
        common.add_argument("--out", type=Path, default=Path("results") / name,
                            help=f"output folder (default results/{name})")
        common.add_argument("--fresh", action="store_true",
                            help="recompute seeds even if cached results exist")

    def add_argument(self, *args, **kwargs):
        """Add a protocol-specific flag (as ``argparse``)."""
        return self.parser.add_argument(*args, **kwargs)

    def parse_args(self, argv=None) -> argparse.Namespace:
        args = self.parser.parse_args(argv)
        if args.seeds < 1 or args.jobs < 1:
            self.parser.error("--seeds and --jobs must be at least 1")
        return args

    @staticmethod
    def budget(args, default, *, full, quick):
        """``default``, or the ``--full`` / ``--quick`` value."""
        return full if args.full else quick if args.quick else default

    @staticmethod
    def settings(args) -> dict[str, Any]:
        """The flags that determine what a seed computes (the cache key)."""
        return _jsonable({k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS})

    def run(self, run_seed: Callable[[int, SeedStreams, argparse.Namespace], dict],
            args: argparse.Namespace) -> list[dict]:
        """Run ``run_seed(seed, streams, args)`` for seeds ``0..args.seeds-1``, with a cache.

        ``run_seed`` must be a module-level function (picklable for ``--jobs``)
        returning a JSON-able dict. Each result is saved to
        ``<out>/runs/seed_<k>.json`` as soon as it exists; cached seeds whose
        settings match are loaded instead of recomputed.

        Returns
        -------
        list of dict
            One result per seed, in seed order, each with ``seed`` and
            ``seed_time_s``.
        """
        from joblib import Parallel, delayed
        from tqdm.auto import tqdm

        settings = self.settings(args)
        runs_dir = Path(args.out) / "runs"
        results: dict[int, dict] = {}
        todo = []
        for seed in range(args.seeds):
            path = runs_dir / f"seed_{seed}.json"
            if path.exists() and not args.fresh:
                cached = json.loads(path.read_text())
                if cached.get("settings") == settings:
                    results[seed] = cached["result"]
                    continue
            todo.append(seed)
        if results:
            print(f"{self.name}: seeds {sorted(results)} loaded from {runs_dir}")

        def save(seed, result):
            write_json_atomic(runs_dir / f"seed_{seed}.json",
                              {"settings": settings, "result": result})
            results[seed] = result

        if args.jobs > 1 and len(todo) > 1:
            outputs = Parallel(n_jobs=args.jobs, return_as="generator")(
                delayed(_run_one)(run_seed, s, self.name, args) for s in todo)
            for seed, result in zip(todo, tqdm(outputs, total=len(todo), desc=self.name),
                                    strict=True):
                save(seed, result)
        else:
            for seed in tqdm(todo, desc=self.name, disable=not todo):
                save(seed, _run_one(run_seed, seed, self.name, args))
        return [results[s] for s in range(args.seeds)]

    def write(self, args, results: dict, report: Sequence[str],
              figures: dict[str, Sequence[CurvePanel]] | None = None) -> dict:
        """Write ``results.json``, ``report.md`` and figures under ``args.out``.

        Parameters
        ----------
        results : dict
            The benchmark's summary; the harness adds ``benchmark``,
            ``settings``, ``seeds``, ``budget``, ``torch_threads`` and
            ``versions``. Conventional keys: ``baselines`` (records of
            :func:`~sklearn_ml3.meta.tune_lr`), ``step_size`` (from
            :func:`~sklearn_ml3.meta.step_size_diagnostic`) and ``headline``
            (rows of the README table, see ``benchmarks/summary.py``).
        report : sequence of str
            Markdown lines; figure links are appended.
        figures : dict of file name to panels, optional

        Returns
        -------
        dict
            What was written to ``results.json``.
        """
        budget = "full" if args.full else "quick" if args.quick else "default"
        header = {"budget": budget, "seeds": list(range(args.seeds)),
                  "settings": self.settings(args)}
        return write_results(Path(args.out), {**header, **results}, report, figures,
                             benchmark=self.name)


def write_results(out: Path, results: dict, report: Sequence[str],
                  figures: dict[str, Sequence[CurvePanel]] | None = None, *,
                  benchmark: str) -> dict:
    """The one writer: ``results.json`` (plus versions and threads), ``report.md``, figures.

    :meth:`Benchmark.write` calls it; protocols run outside the harness's
    command line (``ml3 demo``) call it directly.
    """
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    full = {"benchmark": benchmark, **results, "torch_threads": torch.get_num_threads(),
            "versions": versions()}
    write_json_atomic(out / "results.json", full)
    lines = list(report)
    for name, panels in (figures or {}).items():
        plot_panels(out / name, panels)
        lines += ["", f"![{Path(name).stem}]({name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return _jsonable(full)


# ------------------------------------------------------------ report helpers
def fmt(summary: dict, digits: int = 3) -> str:
    """``mean ± std`` of a :func:`stats` dict."""
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def baseline_lines(records: Sequence[dict]) -> list[str]:
    """Markdown lines describing tuned baselines (one per record)."""
    lines = []
    for r in records:
        scores = ", ".join(f"{lr}: {v:.4g}" for lr, v in r["scores"].items())
        where = f"seed {r['seed']}, " if "seed" in r else ""
        edge = f"; edge: {r['edge_reason']}" if r.get("edge_reason") else ""
        lines.append(f"- {r['name']} ({where}selected on {r['selected_on']}): best lr "
                     f"{r['best_lr']:g}{edge}; grid scores {scores}")
    return lines


def step_size_lines(name: str, diagnostic: dict, control: dict | None = None,
                    learned: dict | None = None, metric: str = "") -> list[str]:
    """Markdown lines of a step-size diagnostic and its control run."""
    cos, ratio = diagnostic["cosine"], diagnostic["norm_ratio"]
    lines = [f"- {name}: cosine with the hand-written gradient {fmt(cos)}; norm ratio "
             f"{ratio['mean']:.3g} ± {ratio['std']:.2g} ({diagnostic['n_points']} meta-test "
             "batches)."]
    if control is not None and learned is not None:
        from ..meta.baselines import compare_paired

        outcome = compare_paired(learned["per_seed"], control["per_seed"],
                                 lower_is_better=diagnostic.get("lower_is_better", True))
        verdict = {"better": "the learned loss is better, paired over runs: more than a step size",
                   "tie": "a tie within two standard errors: no advantage beyond a step size "
                          "is shown",
                   "worse": "the control beats it: no advantage beyond a step size"}[outcome]
        lines.append(f"  Control, the hand-written loss at lr x each seed's norm ratio: {metric} "
                     f"{fmt(control)} vs learned {fmt(learned)}; {verdict}.")
    return lines


__all__ = [
    "STREAMS",
    "Benchmark",
    "CurvePanel",
    "SeedStreams",
    "baseline_lines",
    "fmt",
    "plot_panels",
    "stats",
    "step_size_lines",
    "write_json_atomic",
    "write_results",
]
