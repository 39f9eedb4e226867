"""GridSearchCV under joblib's dask backend on a real local dask cluster.

A scheduler and 2 worker processes on localhost, started and stopped here;
the search must give the scores of ``n_jobs=1``.
"""

import logging
import os

import distributed
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor
from sklearn_ml3.datasets import load_digits_8x8

SCORE_KEYS = ("mean_test_score", "std_test_score", "rank_test_score",
              "split0_test_score", "split1_test_score", "split2_test_score")


@pytest.fixture(scope="module")
def dask_client():
    # worker processes, one torch thread each (OMP_NUM_THREADS is read when torch starts)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, env={"OMP_NUM_THREADS": "1"},
                                       silence_logs=logging.WARNING)
    with cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()
        yield client


def _search_both_ways(client, estimator, grid, X, y):
    reference = GridSearchCV(estimator, grid, cv=3, n_jobs=1).fit(X, y).cv_results_
    with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(estimator, grid, cv=3, n_jobs=-1).fit(X, y).cv_results_
    workers = {task["worker"] for task in stream.data}
    assert workers and workers <= set(client.scheduler_info()["workers"])
    for key in SCORE_KEYS:
        np.testing.assert_array_equal(on_dask[key], reference[key], err_msg=key)
    return reference


@pytest.mark.slow
def test_classifier_search_on_dask_equals_n_jobs_1(dask_client):
    X, y = load_digits_8x8()
    loss = LearnedLoss("classification", hidden_layer_sizes=(16, 16), random_state=0)
    loss.meta_fit([(X[:300], y[:300], X[300:500], y[300:500])],
                  estimator=MetaLossClassifier(hidden_layer_sizes=(16,), lr=0.1),
                  n_meta_iter=20, inner_steps=10, batch_size=64, meta_lr=1e-2, verbose=0)
    pipe = make_pipeline(StandardScaler(), MetaLossClassifier(
        loss, hidden_layer_sizes=(16,), max_iter=10, random_state=0))
    results = _search_both_ways(dask_client, pipe,
                                {"metalossclassifier__lr": [0.1, 0.3, 1.0]},
                                X[500:800], y[500:800])
    assert len(set(results["mean_test_score"])) > 1  # the grid points differ


@pytest.mark.slow
def test_regressor_search_on_dask_equals_n_jobs_1(dask_client):
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    grid = {"lr": [0.001, 0.003], "hidden_layer_sizes": [(8,), (16,)]}
    results = _search_both_ways(dask_client, MetaLossRegressor(max_iter=10, random_state=0),
                                grid, X[:240], y[:240])
    scores = results["mean_test_score"]
    assert np.isfinite(scores).all() and len(set(scores)) == 4
