"""A general-purpose learned loss for tabular regression, measured on bundled datasets.

Meta-training sees only a synthetic task family (:class:`TabularRegressionTasks`):
random widths, random smooth nonlinear targets, random noise levels, heavy-tailed
noise or outliers in some tasks. The optimizee is an MLP trained by Adam (a
scale-invariant inner optimizer: a learned loss cannot win by only scaling its
gradient) on standardised targets.

Evaluation (:func:`measure_tabular`) trains fresh MLPs on the real regression
data shipped inside scikit-learn (:func:`regression_datasets`, no network) and
reports test R^2 in the targets' own units, through the one meta-test loop,
:func:`sklearn_ml3.meta.meta_test`. Nothing of the synthetic family is fitted to
these datasets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..learned_loss import LearnedLoss
from ..meta import meta_test, step_size_diagnostic, tune_lr
from ..meta.baselines import mse_loss
from ..networks import make_mlp
from ..tasks import SupervisedProblem, Task
from .harness import SeedStreams

BENCHMARK = "tabular_regression"
#: The optimizee, at meta-train and meta-test time.
HIDDEN = (64,)
#: Adam's learning rate of the inner steps (meta-train) and of the learned loss (meta-test).
#: Chosen on 30 synthetic validation tasks (validation stream of seed 0, one init each;
#: R^2 after 100 steps), never on the real datasets: lr 1e-2 gave learned 0.409 (8000
#: iterations), 0.428 (16000), 0.429 (32000) against MSE 0.248 at 1e-2 and 0.506 at its
#: best lr 1e-3; lr 3e-3 gave learned 0.528 (8000 and 16000) against MSE 0.460 at 3e-3.
LR = 3e-3
#: Starting grid of the MSE baseline's lr search (x3 steps; extended by tune_lr).
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Meta-training settings: the paper's practical scheme (phi updated after every
#: inner step, optimizees re-initialised every ``inner_steps`` steps), Adam inner
#: steps, targets standardised with each task's training mean and std (the same at
#: meta-test). Tasks of one iteration differ in width, so they are not vmapped.
META = {"n_meta_iter": 16000, "inner_steps": 50, "tasks_per_iter": 4, "meta_lr": 1e-3,
        "inner_optimizer": "adam", "inner_lr": LR, "target_scaling": "standard",
        "grad_clip": 10.0, "vectorize": False}
#: Share of each dataset held out for the test R^2, and of its training part
#: held out as the baseline's validation split.
TEST_FRACTION = 0.25
VALIDATION_FRACTION = 0.25
#: The four methods of :func:`measure_tabular`.
#: Under Adam a loss's scale does not set the step, so the step-size control (the
#: hand-written loss at lr x the gradient-norm ratio) does not apply: the
#: diagnostic's cosine and norm ratio are reported, no control run.
METHODS = ("learned", "same_lr", "best_lr")
#: Datasets with fewer rows (linnerud: 20 rows, 5 test rows, an lr "tuned" on 4
#: validation rows) are reported per dataset but left out of the headline mean.
HEADLINE_MIN_ROWS = 100


class TabularRegressionTasks:
    """Synthetic tabular regression tasks of random width, shape and noise.

    Each task draws ``d`` features (correlated Gaussians, some columns made
    skewed by an exponential, all standardised with the training rows'
    statistics) and a target that is a random smooth function of them: a
    linear part, a few random sinusoids of projections, a few pairwise
    products and, in half of the tasks, a small random tanh teacher MLP. The
    signal is scaled to unit variance and Gaussian noise of a random
    relative level is added. In ``heavy_tail_fraction`` of the tasks the noise
    is Student-t (2 to 5 degrees of freedom) instead, and in
    ``outlier_fraction`` of the tasks 5-15% of the training targets are gross
    outliers (validation targets keep the ordinary noise: the task loss
    rewards fitting the function, not the outliers).

    Parameters
    ----------
    n_features : (low, high)
        Range of the number of features (inclusive).
    n_train : (low, high)
        Range of the number of training rows (inclusive).
    n_val : int
        Validation rows of each task (the task loss).
    noise : (low, high)
        Range of the noise standard deviation relative to the signal's.
    heavy_tail_fraction, outlier_fraction : float
        Probabilities that a task has Student-t noise / training outliers.

    Examples
    --------
    >>> import numpy as np
    >>> task = TabularRegressionTasks().sample(np.random.default_rng(0))
    >>> task.X_train.shape[1] == task.X_val.shape[1]
    True
    """

    def __init__(self, n_features=(3, 12), n_train=(100, 300), n_val=200, noise=(0.05, 1.0),
                 heavy_tail_fraction=0.2, outlier_fraction=0.2):
        self.n_features = tuple(int(v) for v in n_features)
        self.n_train = tuple(int(v) for v in n_train)
        self.n_val = int(n_val)
        self.noise = tuple(float(v) for v in noise)
        self.heavy_tail_fraction = float(heavy_tail_fraction)
        self.outlier_fraction = float(outlier_fraction)

    def _target_function(self, rng: np.random.Generator, d: int):
        w = rng.normal(size=d) * rng.uniform(0.0, 1.0)
        n_sin = int(rng.integers(0, 4))
        sin_dirs = rng.normal(size=(d, n_sin)) / np.sqrt(d)
        sin_freq, sin_phase = rng.uniform(0.5, 3.0, n_sin), rng.uniform(-np.pi, np.pi, n_sin)
        sin_amp = rng.normal(size=n_sin)
        n_prod = int(rng.integers(0, 3))
        pairs = rng.integers(0, d, size=(n_prod, 2))
        prod_amp = rng.normal(size=n_prod) * 0.5
        teacher = None
        if rng.uniform() < 0.5:
            width = int(rng.integers(4, 17))
            teacher = (rng.normal(size=(d, width)) / np.sqrt(d), rng.normal(size=width) * 0.5,
                       rng.normal(size=width) / np.sqrt(width))

        def f(X):
            y = X @ w
            if n_sin:
                y = y + np.sin((X @ sin_dirs) * sin_freq + sin_phase) @ sin_amp
            if n_prod:
                y = y + (X[:, pairs[:, 0]] * X[:, pairs[:, 1]]) @ prod_amp
            if teacher is not None:
                W1, b1, w2 = teacher
                y = y + np.tanh(X @ W1 + b1) @ w2 * 2.0
            return y

        return f

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw one task (targets in arbitrary units: the problem standardises them)."""
        d = int(rng.integers(self.n_features[0], self.n_features[1] + 1))
        n_train = int(rng.integers(self.n_train[0], self.n_train[1] + 1))
        n = n_train + self.n_val
        mixing = rng.normal(size=(d, d)) * rng.uniform(0.0, 0.7) + np.eye(d)
        X = rng.normal(size=(n, d)) @ mixing
        skewed = rng.uniform(size=d) < 0.3
        X[:, skewed] = np.exp(X[:, skewed] / np.maximum(X[:, skewed].std(0), 1e-8))
        f = self._target_function(rng, d)
        signal = f((X - X.mean(0)) / np.maximum(X.std(0), 1e-8))
        signal = (signal - signal.mean()) / max(signal.std(), 1e-8)
        level = rng.uniform(*self.noise)
        if rng.uniform() < self.heavy_tail_fraction:
            df = rng.uniform(2.0, 5.0)
            noise = rng.standard_t(df, size=n) * np.sqrt((df - 2.0 + 1e-3) / df)
        else:
            noise = rng.normal(size=n)
        y = signal + level * noise
        if rng.uniform() < self.outlier_fraction:
            bad = rng.uniform(size=n_train) < rng.uniform(0.05, 0.15)
            y[:n_train][bad] += rng.choice([-1.0, 1.0], bad.sum()) * rng.uniform(3, 10, bad.sum())
        # features standardised with the training rows' statistics, as at meta-test
        mean, std = X[:n_train].mean(0), np.maximum(X[:n_train].std(0), 1e-8)
        X = ((X - mean) / std).astype(np.float32)
        y = (y * rng.uniform(0.1, 100.0) + rng.normal() * 10).astype(np.float32)
        t = torch.from_numpy
        return Task(t(X[:n_train]), t(y[:n_train]), t(X[n_train:]), t(y[n_train:]), {})

    def __repr__(self):
        return (f"TabularRegressionTasks(n_features={self.n_features}, n_train={self.n_train}, "
                f"n_val={self.n_val}, noise={self.noise}, "
                f"heavy_tail_fraction={self.heavy_tail_fraction}, "
                f"outlier_fraction={self.outlier_fraction})")


def meta_train_tabular_loss(seed: int, n_meta_iter: int | None = None,
                            verbose: int = 0) -> LearnedLoss:
    """Meta-train a regression loss on :class:`TabularRegressionTasks` (settings: :data:`META`).

    Parameters
    ----------
    seed : int
        Seeds the loss's initialisation, task draws and optimizee inits.
    n_meta_iter : int, optional
        Replaces ``META["n_meta_iter"]`` (e.g. a few iterations in tests).
    verbose : int, default=0

    Returns
    -------
    LearnedLoss
        Meta-trained for an MLP with hidden layers :data:`HIDDEN`, trained by
        Adam at lr :data:`LR` on standardised targets.
    """
    from ..estimators import MetaLossRegressor

    options = dict(META)
    if n_meta_iter is not None:
        options["n_meta_iter"] = int(n_meta_iter)
    template = MetaLossRegressor(hidden_layer_sizes=HIDDEN, lr=options.pop("inner_lr"),
                                 solver=options.pop("inner_optimizer"), batch_size=None)
    loss = LearnedLoss(kind="regression", hidden_layer_sizes=(50, 50), activation="relu",
                       bias=False, output="softplus", random_state=seed)
    return loss.meta_fit(TabularRegressionTasks(), estimator=template, random_state=seed,
                         verbose=verbose, **options)


def regression_datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real regression tasks from the data shipped inside scikit-learn (no download).

    - ``diabetes``: :func:`~sklearn.datasets.load_diabetes`, disease progression
      after one year from 10 baseline variables (442 rows).
    - ``linnerud_weight``, ``linnerud_waist``, ``linnerud_pulse``:
      :func:`~sklearn.datasets.load_linnerud`, each physiological target from
      the 3 exercise variables (chins, situps, jumps); 20 rows, tiny.
    - ``iris_petal_width``: :func:`~sklearn.datasets.load_iris`, petal width
      from sepal length, sepal width and petal length (150 rows).
    - ``wine_alcohol``: :func:`~sklearn.datasets.load_wine`, alcohol from the
      other 12 chemical measurements (178 rows).
    - ``breast_cancer_texture``: :func:`~sklearn.datasets.load_breast_cancer`,
      mean texture from the 27 columns that are not a texture statistic (the
      texture error and worst texture columns would give it away; 569 rows).

    Returns
    -------
    dict of str to (X, y)
        ``X`` float64 of shape (n_samples, n_features), ``y`` float64 of shape
        (n_samples,), both unscaled.
    """
    from sklearn import datasets

    out = {}
    diabetes = datasets.load_diabetes()
    out["diabetes"] = (diabetes.data, diabetes.target)
    linnerud = datasets.load_linnerud()
    for j, name in enumerate(linnerud.target_names):
        out[f"linnerud_{name.lower()}"] = (linnerud.data, linnerud.target[:, j])
    iris = datasets.load_iris().data
    out["iris_petal_width"] = (iris[:, :3], iris[:, 3])
    wine = datasets.load_wine()
    alcohol = list(wine.feature_names).index("alcohol")
    out["wine_alcohol"] = (np.delete(wine.data, alcohol, axis=1), wine.data[:, alcohol])
    cancer = datasets.load_breast_cancer()
    names = list(cancer.feature_names)
    others = [j for j, n in enumerate(names) if "texture" not in n]
    out["breast_cancer_texture"] = (cancer.data[:, others],
                                    cancer.data[:, names.index("mean texture")])
    return {k: (np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
            for k, (X, y) in out.items()}


#: The optimizee as a problem for the meta-test loop (tasks are prepared by
#: :func:`_training_task`; the sampler only names the family).
OPTIMIZEE = SupervisedProblem(TabularRegressionTasks(),
                              lambda n_in, n_out: make_mlp(n_in, HIDDEN, n_out))


def _training_task(X_train, y_train, X_eval, y_eval, loss: LearnedLoss) -> Task:
    """Features standardised on the training rows; training targets scaled as ``loss``
    was meta-trained (kept, for the metric only, in ``extra``); evaluation targets
    stay in their own units."""
    mean, std = X_train.mean(0), X_train.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    scaler = loss.target_scaler(y_train)
    shift, scale = float(np.ravel(scaler.shift)[0]), float(np.ravel(scaler.scale)[0])

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    return Task(t((X_train - mean) / std), t((y_train - shift) / scale),
                t((X_eval - mean) / std), t(y_eval),
                {"shift": torch.tensor(shift), "scale": torch.tensor(scale)})


def heldout_r2(params, task: Task) -> torch.Tensor:
    """R^2 on the task's evaluation rows, predictions mapped back to the targets' units."""
    pred = OPTIMIZEE.predict(params, task, task.X_val) * task.extra["scale"] + task.extra["shift"]
    residual = ((pred - task.y_val) ** 2).sum()
    total = ((task.y_val - task.y_val.mean()) ** 2).sum().clamp_min(1e-12)
    return 1.0 - residual / total


def _final_r2(loss, tasks, init_seeds, n_updates, lr=None, optimizer=None) -> float:
    """Mean final R^2 over ``init_seeds`` runs of each task; -inf where training diverged."""
    result = meta_test(OPTIMIZEE, loss, tasks, n_updates=n_updates, metric=heldout_r2,
                       init_seeds=init_seeds, lr=lr, optimizer=optimizer,
                       eval_every=max(int(n_updates), 1))
    final = result.final().astype(float)
    final = np.where(np.isfinite(final), final, -np.inf)
    return float(final.mean())


def measure_tabular(loss: LearnedLoss, seed: int, streams: SeedStreams,
                    n_updates: int = 100, n_inits: int = 3,
                    lr_grid=LR_GRID) -> dict[str, Any]:
    """One evaluation seed of ``loss`` on :func:`regression_datasets`: test R^2.

    For each dataset, the rows are split into train and test (``TEST_FRACTION``,
    the split seeded from the seed's ``meta_test`` stream); features are
    standardised on the train part and the training targets scaled as the loss
    was meta-trained (predictions are mapped back for the metric). Fresh MLPs
    (``n_inits`` initialisations from the ``init`` stream, shared by all
    methods) are trained full batch for ``n_updates`` steps with:

    - ``learned``: the learned loss at its meta-trained optimizer and lr;
    - ``same_lr``: MSE at the same optimizer and lr;
    - ``best_lr``: MSE at the lr of :func:`~sklearn_ml3.meta.tune_lr`, chosen
      per dataset on a validation split carved from the train part
      (``VALIDATION_FRACTION``; the test part is never used to choose);
    and :func:`~sklearn_ml3.meta.step_size_diagnostic` compares the learned
    loss's gradient with MSE's on the same batches (no control run, see
    :data:`METHODS`). All MSE runs see the same standardised targets as the
    learned loss.

    Parameters
    ----------
    loss : LearnedLoss
        Meta-trained regression loss (e.g. of :func:`meta_train_tabular_loss`).
    seed : int
        The evaluation seed (recorded).
    streams : SeedStreams
        Streams of ``seed``: ``meta_test`` (the splits) and ``init``.
    n_updates : int, default=100
    n_inits : int, default=3
        Optimizee initialisations per dataset and method.
    lr_grid : sequence of float
        Starting grid of the baseline's lr search.

    Returns
    -------
    dict
        JSON-able: ``metric``, ``lower_is_better`` (False), ``learned``,
        ``same_lr`` and ``best_lr`` (means over the datasets of at least
        :data:`HEADLINE_MIN_ROWS` rows, named in ``headline_datasets``), the
        diagnostic's means ``cosine`` and ``norm_ratio``, ``baselines`` (one
        tune_lr record per dataset), ``per_dataset`` (the methods, the
        diagnostic and the chosen lr of each dataset), ``mean_over_all`` and
        ``median_over_all`` (the methods over every dataset), ``n_updates``,
        ``lr``, ``optimizer`` and ``seed``. A run that diverged scores ``-inf``.
    """
    from sklearn.model_selection import train_test_split

    data = regression_datasets()
    split_rng = streams.rng("meta_test")
    split_seeds = split_rng.integers(0, 2**31 - 1, size=(len(data), 2))
    init = np.asarray(streams.ints("init", 2 * n_inits)).reshape(2, n_inits)
    test_init, val_init = init[0], init[1]
    optimizer = loss.meta_info_.get("inner_optimizer")
    lr = loss.meta_info_.get("inner_lr")
    per_dataset, baselines = {}, []
    for (name, (X, y)), (s_test, s_val) in zip(data.items(), split_seeds, strict=True):
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=TEST_FRACTION,
                                                  random_state=int(s_test))
        X_fit, X_val, y_fit, y_val = train_test_split(X_tr, y_tr, test_size=VALIDATION_FRACTION,
                                                      random_state=int(s_val))
        test_task = [_training_task(X_tr, y_tr, X_te, y_te, loss)]
        val_task = [_training_task(X_fit, y_fit, X_val, y_val, loss)]
        seeds_test, seeds_val = test_init[:, None], val_init[:, None]

        def run(which, task, seeds, lr_=None, opt=None):
            return _final_r2(which, task, seeds, n_updates, lr=lr_, optimizer=opt)

        selected_on = (f"validation split ({VALIDATION_FRACTION:g} of the training part) of "
                       f"{name}, R^2 after {n_updates} {optimizer} steps; the test part is "
                       "never used")
        try:
            record = tune_lr(
                lambda lr_, t=val_task, s=seeds_val: run(mse_loss, t, s, lr_, optimizer),
                lr_grid, name=f"mse ({name})", lower_is_better=False, selected_on=selected_on)
        except ValueError as error:  # every lr diverged: keep the loss's lr, say so
            record = {"name": f"mse ({name})", "lr_grid": sorted(lr_grid), "scores": {},
                      "best_lr": lr, "selected_on": selected_on, "lower_is_better": False,
                      "edge_reason": str(error)}
        baselines.append(record)
        step = step_size_diagnostic(OPTIMIZEE, loss, mse_loss, test_task, n_updates=n_updates,
                                    init_seeds=seeds_test)
        per_dataset[name] = {
            "learned": run(loss, test_task, seeds_test),
            "same_lr": run(mse_loss, test_task, seeds_test, lr, optimizer),
            "best_lr": run(mse_loss, test_task, seeds_test, record["best_lr"], optimizer),
            "cosine": step["cosine"]["mean"], "norm_ratio": step["norm_ratio"]["mean"],
            "best_lr_value": record["best_lr"], "n_train": len(X_tr), "n_test": len(X_te),
        }

    headline = [k for k, (X, _) in data.items() if len(X) >= HEADLINE_MIN_ROWS]

    def mean(key, names=headline):
        return float(np.mean([per_dataset[k][key] for k in names]))

    return {
        "metric": f"mean test R^2 over {len(headline)} bundled scikit-learn datasets",
        "headline_datasets": headline,
        "lower_is_better": False,
        "seed": int(seed),
        "n_updates": int(n_updates),
        "optimizer": optimizer,
        "lr": lr,
        **{key: mean(key) for key in (*METHODS, "cosine")},
        "norm_ratio": float(np.exp(np.mean([np.log(v["norm_ratio"])
                                            for v in per_dataset.values()]))),
        "mean_over_all": {key: mean(key, list(per_dataset)) for key in METHODS},
        "median_over_all": {key: float(np.median([v[key] for v in per_dataset.values()]))
                            for key in METHODS},
        "baselines": baselines,
        "per_dataset": per_dataset,
    }


__all__ = ["META", "TabularRegressionTasks", "measure_tabular", "meta_train_tabular_loss",
           "regression_datasets"]
