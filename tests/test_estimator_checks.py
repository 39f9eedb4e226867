"""scikit-learn's estimator checks for both estimators, hand-written and meta-trained losses."""

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor

SAMPLE_WEIGHT_REASON = (
    "float32 round-off: the check compares two single full-batch fits (15 weighted rows, "
    "27 repeated rows) whose objectives are equal, and their predictions differ by about "
    "1e-7 absolute (2e-7 regressor, 9e-8 classifier probabilities, measured), above the "
    "check's rtol=1e-7 / atol=1e-9; the estimators train in float32"
)


def _regression_tasks(rng, n_tasks=8):
    tasks = []
    for _ in range(n_tasks):
        X = rng.standard_normal((60, 4)).astype(np.float32)
        y = X @ rng.standard_normal(4) + 0.1 * rng.standard_normal(60)
        y = (y - y.mean()) / y.std()
        tasks.append((X[:40], y[:40], X[40:], y[40:]))
    return tasks


def _classification_tasks(n_tasks=8):
    tasks = []
    for i in range(n_tasks):
        X, y = make_blobs(60, n_features=4, centers=2 + i % 2, random_state=i)
        X = (X - X.mean(0)) / X.std(0)
        tasks.append((X[:40], y[:40], X[40:], y[40:]))
    return tasks


def _meta_trained_losses():
    """Small losses meta-trained in a few seconds on tiny synthetic tasks."""
    rng = np.random.default_rng(0)
    regression = LearnedLoss("regression", hidden_layer_sizes=(16, 16), random_state=0)
    regression.meta_fit(
        _regression_tasks(rng),
        estimator=MetaLossRegressor(hidden_layer_sizes=(16,), solver="adam", lr=1e-2),
        n_meta_iter=150, inner_steps=10, meta_lr=3e-2, verbose=0)
    classification = LearnedLoss("classification", hidden_layer_sizes=(16, 16), random_state=0)
    classification.meta_fit(
        _classification_tasks(),
        estimator=MetaLossClassifier(hidden_layer_sizes=(16,), solver="adam", lr=1e-2),
        n_meta_iter=60, inner_steps=10, meta_lr=1e-2, verbose=0)
    return regression, classification


REGRESSION_LOSS, CLASSIFICATION_LOSS = _meta_trained_losses()

# Default instances first: what a user's first ``fit`` gets. The learned losses
# train with solver="auto" and lr="auto", i.e. their meta-training Adam at 1e-2.
ESTIMATORS = [
    MetaLossRegressor(),
    MetaLossClassifier(),
    MetaLossRegressor(REGRESSION_LOSS, hidden_layer_sizes=(32,)),
    MetaLossClassifier(CLASSIFICATION_LOSS, hidden_layer_sizes=(32,)),
]


def _expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
