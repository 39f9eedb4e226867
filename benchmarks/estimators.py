"""MetaLossRegressor / MetaLossClassifier against MLPRegressor / MLPClassifier.

On scikit-learn's bundled data sets (diabetes, digits, breast cancer, wine)
and a synthetic regression family (Friedman #1), over 5 seeds (a seed
controls the train/test split, the initialisations and the learned loss):

- test score (R^2 or accuracy) and fit time of the estimators with default
  parameters (and, for regression, with ``target_scaling="standard"``), with
  a learned loss (meta-trained per seed on synthetic tasks,
  never on these data sets), and of MLPRegressor/MLPClassifier with default
  parameters and with ``learning_rate_init`` tuned on a validation split of
  the training part (the x3 grid of the protocols' baseline rule);
- fit time of the default estimator vs the MLP on the same network and the
  same number of epochs (Adam, lr 1e-3, batches of 200, no penalty, no early stop).

    python benchmarks/estimators.py --jobs 2     # 5 seeds, a few minutes
    python benchmarks/estimators.py --seeds 2    # quicker

Per seed, the train/test split (and the Friedman #1 draw), the learned losses'
meta-training, the MLP's validation split and the initialisations come from
the seed's own streams. Writes results/estimators/{results.json, report.md}.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
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

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor
from sklearn_ml3.experiments.harness import Benchmark, stats
from sklearn_ml3.meta import tune_lr

#: Epochs of the equal-work timing comparison.
TIMING_EPOCHS = 50
#: Meta-training of the learned losses (short: a default run takes a few minutes).
META = {"n_meta_iter": 150, "inner_steps": 20, "meta_lr": 1e-3, "tasks_per_iter": 4,
        "grad_clip": 10.0, "verbose": 0}
META_TEMPLATE = {"solver": "adam", "lr": 1e-2}


def datasets(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    friedman = make_friedman1(500, n_features=10, noise=1.0, random_state=seed)
    return {
        "diabetes": (*load_diabetes(return_X_y=True), "regression"),
        "friedman1": (*friedman, "regression"),
        "digits": (*load_digits(return_X_y=True), "classification"),
        "breast_cancer": (*load_breast_cancer(return_X_y=True), "classification"),
        "wine": (*load_wine(return_X_y=True), "classification"),
    }


def meta_train_losses(seed: int, n_meta_iter: int = META["n_meta_iter"]) -> dict[str, LearnedLoss]:
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
        random_state=seed, vectorize=False, **{**META, "n_meta_iter": n_meta_iter})
    clf = LearnedLoss("classification", random_state=seed).meta_fit(
        classification, estimator=MetaLossClassifier(**META_TEMPLATE), random_state=seed,
        vectorize=False, **{**META, "n_meta_iter": n_meta_iter})
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


def run_seed(seed, streams, args) -> dict:
    """Every data set with every estimator, the tuned MLP and the equal-work timing."""
    split_seed, init_seed = streams.seed_of("meta_test"), streams.seed_of("init")
    t_cpu = time.process_time()
    losses = meta_train_losses(streams.seed_of("meta_train"),
                               bench.budget(args, META["n_meta_iter"], full=META["n_meta_iter"],
                                            quick=2))
    meta_cpu = time.process_time() - t_cpu
    scores, tuning, timing = {}, {}, {}
    with threadpool_limits(1), warnings.catch_warnings():
        # defaults stop on max_iter on some data sets, for both libraries alike
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, (X, y, kind) in datasets(split_seed).items():
            stratify = y if kind == "classification" else None
            X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25,
                                                      random_state=split_seed, stratify=stratify)
            ours, mlp = ((MetaLossClassifier, MLPClassifier) if kind == "classification"
                         else (MetaLossRegressor, MLPRegressor))
            default_mlp = mlp(random_state=init_seed)
            tuned, tuning[name] = tuned_mlp(default_mlp, X_tr, y_tr,
                                            streams.seed_of("validation"))
            methods = {
                f"{ours.__name__}()": ours(random_state=init_seed),
                f"{ours.__name__}(learned loss)": ours(losses[kind], random_state=init_seed),
                **({f"{ours.__name__}(target_scaling='standard')":
                    ours(target_scaling="standard", random_state=init_seed)}
                   if kind == "regression" else {}),
                f"{mlp.__name__}()": default_mlp,
                f"{mlp.__name__}(tuned lr)": tuned,
            }
            scores[name] = {}
            for method, estimator in methods.items():
                score, fit_s = timed_score(estimator, X_tr, y_tr, X_te, y_te)
                scores[name][method] = {"score": score, "fit_s": fit_s}
            # equal work: same network, epochs, batches, optimizer and lr
            same = {"max_iter": TIMING_EPOCHS, "n_iter_no_change": TIMING_EPOCHS,
                    "random_state": init_seed}
            pair = (ours(**same), mlp(alpha=0.0, tol=0.0, **same))
            ours_s, mlp_s = (timed_score(e, X_tr, y_tr, X_te, y_te)[1] for e in pair)
            timing[name] = {"ours_s": ours_s, "mlp_s": mlp_s, "ratio": ours_s / mlp_s}
    return {"scores": scores, "mlp_tuning": tuning, "timing": timing, "meta_cpu_s": meta_cpu}


def report(results: dict, n: int) -> list[str]:
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
    return lines


bench = Benchmark("estimators", __doc__)


def main(argv=None) -> dict:
    args = bench.parse_args(argv)
    runs = bench.run(run_seed, args)
    names = list(runs[0]["scores"])
    results = {
        "scores": {name: {m: {k: stats([r["scores"][name][m][k] for r in runs])
                              for k in ("score", "fit_s")}
                          for m in runs[0]["scores"][name]} for name in names},
        "equal_work_timing": {
            "epochs": TIMING_EPOCHS,
            "per_dataset": {name: {k: stats([r["timing"][name][k] for r in runs])
                                   for k in ("ours_s", "mlp_s", "ratio")} for name in names},
        },
        "mlp_tuning": {name: [r["mlp_tuning"][name] for r in runs] for name in names},
        "baselines": [{"seed": r["seed"], "dataset": name, **r["mlp_tuning"][name]}
                      for r in runs for name in names],
        "learned_loss_meta_training": {**META, **META_TEMPLATE,
                                       "cpu_s_per_seed": stats([r["meta_cpu_s"] for r in runs]),
                                       "tasks": "16 Friedman #1 / 16 make_classification tasks"},
    }
    lines = report(results, args.seeds)
    written = bench.write(args, results, lines)
    print("\n".join(lines))
    return written


if __name__ == "__main__":
    main()
