"""The tabular regression protocol: synthetic task family, bundled datasets, measurement."""

import json
import math

import numpy as np
import pytest
import torch

from sklearn_ml3.experiments.harness import SeedStreams
from sklearn_ml3.experiments.tabular import (
    BENCHMARK,
    META,
    TabularRegressionTasks,
    measure_tabular,
    meta_train_tabular_loss,
    regression_datasets,
)

DATASETS = ("diabetes", "linnerud_weight", "linnerud_waist", "linnerud_pulse",
            "iris_petal_width", "wine_alcohol", "breast_cancer_texture")
METHODS = ("learned", "same_lr", "best_lr")


def test_sampler_varies_width_is_finite_and_reproducible():
    sampler = TabularRegressionTasks()
    rng = np.random.default_rng(0)
    tasks = [sampler.sample(rng) for _ in range(30)]
    widths = {t.X_train.shape[1] for t in tasks}
    assert len(widths) >= 4 and min(widths) >= 3 and max(widths) <= 12
    for t in tasks:
        assert t.X_train.shape[1] == t.X_val.shape[1]
        assert 100 <= len(t.X_train) <= 300 and len(t.X_val) == 200
        assert t.y_train.shape == (len(t.X_train),) and t.y_val.shape == (len(t.X_val),)
        assert all(torch.isfinite(a).all() for a in t[:4])
        # features standardised on the training rows
        assert torch.allclose(t.X_train.mean(0), torch.zeros(t.X_train.shape[1]), atol=1e-4)
    again = [sampler.sample(np.random.default_rng(0)) for _ in range(1)][0]
    for a, b in zip(tasks[0][:4], again[:4], strict=True):
        assert torch.equal(a, b)
    other = sampler.sample(np.random.default_rng(1))
    assert other.X_train.shape != tasks[0].X_train.shape or \
        not torch.equal(other.y_train, tasks[0].y_train)


def test_regression_datasets_named_with_matching_shapes():
    data = regression_datasets()
    assert set(DATASETS) <= set(data)
    for name, (X, y) in data.items():
        assert X.ndim == 2 and y.shape == (len(X),), name
        assert np.isfinite(X).all() and np.isfinite(y).all() and y.std() > 0, name
    assert data["diabetes"][0].shape == (442, 10)
    assert data["linnerud_pulse"][0].shape == (20, 3)
    assert data["iris_petal_width"][0].shape == (150, 3)
    assert data["wine_alcohol"][0].shape == (178, 12)
    assert data["breast_cancer_texture"][0].shape[0] == 569
    # the target column is not among the features
    X, y = data["wine_alcohol"]
    assert not any(np.allclose(X[:, j], y) for j in range(X.shape[1]))


@pytest.fixture(scope="module")
def tiny_loss():
    return meta_train_tabular_loss(0, n_meta_iter=3)


def test_meta_train_records_adam_and_standard_scaling(tiny_loss):
    assert tiny_loss.is_meta_trained
    assert len(tiny_loss.meta_history_) == 3
    info = tiny_loss.meta_info_
    assert info["inner_optimizer"] == "adam"
    assert info["inner_lr"] == pytest.approx(META["inner_lr"])
    assert info["problem"]["target_scaling"] == "standard"


def test_measure_tabular_keys_and_values(tiny_loss):
    result = measure_tabular(tiny_loss, 0, SeedStreams(0, BENCHMARK), n_updates=4, n_inits=1)
    json.dumps(result)  # JSON-able
    assert result["lower_is_better"] is False
    assert "R^2" in result["metric"]
    assert set(result["per_dataset"]) == set(regression_datasets())
    # the headline mean leaves out the 20-row linnerud sets, the full mean keeps them
    assert result["headline_datasets"] == ["diabetes", "iris_petal_width", "wine_alcohol",
                                           "breast_cancer_texture"]
    for key in METHODS:
        values = [v[key] for v in result["per_dataset"].values()]
        assert np.isfinite(values).all() and max(values) <= 1.0, key
        assert result["mean_over_all"][key] == pytest.approx(np.mean(values))
        assert result[key] == pytest.approx(np.mean(
            [result["per_dataset"][k][key] for k in result["headline_datasets"]]))
    assert set(result["median_over_all"]) == set(METHODS)
    assert -1.0 <= result["cosine"] <= 1.0
    assert result["norm_ratio"] > 0 and math.isfinite(result["norm_ratio"])
    assert len(result["baselines"]) == len(result["per_dataset"])
    for record in result["baselines"]:
        assert "validation split" in record["selected_on"]
        assert "test part is never used" in record["selected_on"]
        assert record["lower_is_better"] is False
        assert record["best_lr"] in record["lr_grid"]
    assert result["optimizer"] == "adam"


def test_measure_tabular_reproducible_and_seed_dependent(tiny_loss):
    def run(seed):
        return measure_tabular(tiny_loss, seed, SeedStreams(seed, BENCHMARK), n_updates=2,
                               n_inits=1, lr_grid=(1e-2, 3e-2, 1e-1))

    a, b, c = run(0), run(0), run(1)
    assert a["learned"] == b["learned"] and a["per_dataset"] == b["per_dataset"]
    assert a["per_dataset"]["diabetes"]["learned"] != c["per_dataset"]["diabetes"]["learned"]


def test_divergence_scores_minus_infinity():
    from sklearn_ml3.experiments.tabular import _final_r2, _training_task

    X, y = regression_datasets()["iris_petal_width"]
    task = [_training_task(X[:100], y[:100], X[100:], y[100:], LearnedLossStub())]

    def nan_loss(y_pred, target):
        return (y_pred * float("nan")).mean()

    assert _final_r2(nan_loss, task, [[0]], 2, lr=1e-2, optimizer="adam") == -math.inf
    assert math.isfinite(_final_r2(lambda p, t: ((p - t) ** 2).mean(), task, [[0]], 2,
                                   lr=1e-2, optimizer="adam"))


class LearnedLossStub:
    """Stands in for a loss meta-trained on standardised targets (its scaler only)."""

    def target_scaler(self, y):
        from sklearn_ml3.learned_loss import TargetScaler

        return TargetScaler.fit(y, "standard")
