"""MetaLossRegressor / MetaLossClassifier against MLPRegressor / MLPClassifier.

On scikit-learn's bundled data sets (diabetes, digits, breast cancer, wine)
and a synthetic regression family (Friedman #1), over 5 seeds (a seed
controls the train/test split, the initialisations and the learned loss):

- test score (R^2 or accuracy) and fit time of the estimators with default
  parameters, with a learned loss (meta-trained per seed on synthetic tasks,
  never on these data sets), and of MLPRegressor/MLPClassifier with default
  parameters and with ``learning_rate_init`` tuned on a validation split of
  the training part (the x3 grid of the protocols' baseline rule);
- fit time of the default estimator vs the MLP on the same network and the
  same number of epochs (Adam, lr 1e-3, batches of 200, no penalty, no early stop).

    nice -n 10 python benchmarks/estimators.py            # 5 seeds, a few minutes
    nice -n 10 python benchmarks/estimators.py --seeds 2  # quicker

Writes results/estimators/{results.json, report.md}.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone, is_classifier
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_wine,
    make_classification,
    make_friedman1,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor
from sklearn_ml3._utils import versions
from sklearn_ml3.meta import tune_lr

#: Epochs of the equal-work timing comparison.
TIMING_EPOCHS = 50
#: Meta-training of the learned losses (short: a default run takes a few minutes).
META = {"n_meta_iter": 150, "inner_steps": 20, "meta_lr": 1e-3, "tasks_per_iter": 4,
        "grad_clip": 10.0, "verbose": 0}
META_TEMPLATE = {"solver": "adam", "lr": 1e-2}


def datasets(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    friedman = make_friedman1(500, n_features=10, noise=1.0, random_state=1000 + seed)
    return {
        "diabetes": (*load_diabetes(return_X_y=True), "regression"),
        "friedman1": (*friedman, "regression"),
        "digits": (*load_digits(return_X_y=True), "classification"),
        "breast_cancer": (*load_breast_cancer(return_X_y=True), "classification"),
        "wine": (*load_wine(return_X_y=True), "classification"),
    }


def meta_train_losses(seed: int) -> dict[str, LearnedLoss]:
    """One regression and one classification loss, meta-trained on synthetic tasks only."""
    rng = np.random.default_rng(seed)
    regression, classification = [], []
    for _ in range(16):
        X, y = make_friedman1(200, n_features=int(rng.integers(5, 15)), noise=1.0,
                              random_state=int(rng.integers(2**31 - 1)))
        X = StandardScaler().fit_transform(X)
        regression.append((X[:100], y[:100], X[100:], y[100:]))
        X, y = make_classification(200, n_features=20, n_informative=8,
                                   n_classes=int(rng.integers(2, 6)), n_clusters_per_class=1,
                                   random_state=int(rng.integers(2**31 - 1)))
        X = StandardScaler().fit_transform(X)
        classification.append((X[:100], y[:100], X[100:], y[100:]))
    reg = LearnedLoss("regression", random_state=seed).meta_fit(
        regression, estimator=MetaLossRegressor(**META_TEMPLATE), target_scaling="standard",
        random_state=seed, vectorize=False, **META)
    clf = LearnedLoss("classification", random_state=seed).meta_fit(
        classification, estimator=MetaLossClassifier(**META_TEMPLATE), random_state=seed,
        vectorize=False, **META)
    return {"regression": reg, "classification": clf}


def timed_score(estimator, X_tr, y_tr, X_te, y_te) -> tuple[float, float]:
    model = make_pipeline(StandardScaler(), clone(estimator))
    start = time.perf_counter()
    model.fit(X_tr, y_tr)
    fit_s = time.perf_counter() - start
    return float(model.score(X_te, y_te)), fit_s


def tuned_mlp(mlp, X_tr, y_tr, seed: int) -> tuple[object, dict]:
    """The MLP at the learning_rate_init best on a validation split of the training part."""
    stratify = y_tr if is_classifier(mlp) else None
    X_fit, X_val, y_fit, y_val = train_test_split(X_tr, y_tr, test_size=0.25,
                                                  random_state=seed, stratify=stratify)
    # a clone per lr: set_params on ``mlp`` itself would change the default MLP it also is
    record = tune_lr(lambda lr: timed_score(clone(mlp).set_params(learning_rate_init=lr),
                                            X_fit, y_fit, X_val, y_val)[0],
                     (3e-4, 1e-3, 3e-3), lower_is_better=False, name=type(mlp).__name__,
                     selected_on="25% validation split of the training part")
    return clone(mlp).set_params(learning_rate_init=record["best_lr"]), record


def run(seeds, out_dir: Path) -> dict:
    rows: dict[str, dict[str, dict[str, list]]] = {}
    tuning: dict[str, list] = {}
    timing: dict[str, list] = {}
    meta_cpu = []
    for seed in tqdm(seeds, desc="seeds"):
        t_cpu = time.process_time()
        losses = meta_train_losses(seed)
        meta_cpu.append(time.process_time() - t_cpu)
        for name, (X, y, kind) in datasets(seed).items():
            stratify = y if kind == "classification" else None
            X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=seed,
                                                      stratify=stratify)
            ours, mlp = ((MetaLossClassifier, MLPClassifier) if kind == "classification"
                         else (MetaLossRegressor, MLPRegressor))
            default_mlp = mlp(random_state=seed)
            tuned, record = tuned_mlp(default_mlp, X_tr, y_tr, seed)
            tuning.setdefault(name, []).append(record)
            methods = {
                f"{ours.__name__}()": ours(random_state=seed),
                f"{ours.__name__}(learned loss)": ours(losses[kind], random_state=seed),
                f"{mlp.__name__}()": default_mlp,
                f"{mlp.__name__}(tuned lr)": tuned,
            }
            for method, estimator in methods.items():
                score, fit_s = timed_score(estimator, X_tr, y_tr, X_te, y_te)
                cell = rows.setdefault(name, {}).setdefault(method, {"score": [], "fit_s": []})
                cell["score"].append(score)
                cell["fit_s"].append(fit_s)
            # equal work: same network, epochs, batches, optimizer and lr
            same = {"max_iter": TIMING_EPOCHS, "n_iter_no_change": TIMING_EPOCHS,
                    "random_state": seed}
            pair = (ours(**same), mlp(alpha=0.0, tol=0.0, **same))
            times = [timed_score(e, X_tr, y_tr, X_te, y_te)[1] for e in pair]
            timing.setdefault(name, []).append({"ours_s": times[0], "mlp_s": times[1],
                                                "ratio": times[0] / times[1]})
    results = {
        "seeds": list(seeds),
        "scores": {name: {m: {k: _stats(v) for k, v in cell.items()}
                          for m, cell in methods.items()} for name, methods in rows.items()},
        "equal_work_timing": {
            "epochs": TIMING_EPOCHS,
            "per_dataset": {name: {k: _stats([t[k] for t in ts]) for k in ts[0]}
                            for name, ts in timing.items()},
        },
        "mlp_tuning": tuning,
        "learned_loss_meta_training": {**META, **META_TEMPLATE,
                                       "cpu_s_per_seed": _stats(meta_cpu),
                                       "tasks": "16 Friedman #1 / 16 make_classification tasks"},
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "report.md").write_text(report(results))
    return results


def _stats(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std()),
            "per_seed": [float(v) for v in values]}


def report(results: dict) -> str:
    n = len(results["seeds"])
    lines = [f"# Estimators vs scikit-learn's MLPs ({n} seeds)", "",
             "Test R^2 (diabetes, friedman1) or accuracy, and fit time (s), mean ± std.", ""]
    for name, methods in results["scores"].items():
        lines += [f"## {name}", "", "| estimator | score | fit time (s) |", "|---|---|---|"]
        for method, cell in methods.items():
            s, t = cell["score"], cell["fit_s"]
            lines.append(f"| {method} | {s['mean']:.3f} ± {s['std']:.3f} | "
                         f"{t['mean']:.2f} ± {t['std']:.2f} |")
        best = [r["best_lr"] for r in results["mlp_tuning"][name]]
        lines += ["", f"MLP tuned learning_rate_init per seed: {best}", ""]
    timing = results["equal_work_timing"]
    lines += [f"## Fit time on equal work ({timing['epochs']} epochs, same network)", "",
              "| data set | default estimator (s) | MLP (s) | ratio |", "|---|---|---|---|"]
    for name, t in timing["per_dataset"].items():
        lines.append(f"| {name} | {t['ours_s']['mean']:.2f} | {t['mlp_s']['mean']:.2f} | "
                     f"{t['ratio']['mean']:.2f} ± {t['ratio']['std']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="results/estimators")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with threadpool_limits(1), warnings.catch_warnings():
        # defaults stop on max_iter on some data sets, for both libraries alike
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = run(range(args.seeds), Path(args.out))
    print(report(results))


if __name__ == "__main__":
    main()
