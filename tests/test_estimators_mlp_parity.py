"""The estimators' MLPRegressor/MLPClassifier-style parameters: defaults, stopping, validation."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor
from sklearn_ml3._utils import build_seeded, seed_from


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(150, 4, noise=5.0, random_state=0)
    return StandardScaler().fit_transform(X), y / y.std()


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(150, n_features=4, centers=3, cluster_std=3.0, random_state=0)
    return StandardScaler().fit_transform(X), y


def test_default_solver_is_adam_for_handwritten_losses(regression):
    X, y = regression
    reg = MetaLossRegressor(random_state=0)
    assert reg.solver == "auto" and reg._resolved_solver("squared_error") == "adam"
    reg.fit(X, y)
    assert isinstance(reg._optimizer, torch.optim.Adam)
    assert reg.score(X, y) > 0.9


def test_auto_solver_and_lr_follow_the_meta_training(regression):
    X, y = regression
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    loss.meta_fit([(X, y)], estimator=MetaLossRegressor(hidden_layer_sizes=(8,), solver="momentum",
                                                        lr=0.02), n_meta_iter=2, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "outside its training" warning with the defaults
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MetaLossRegressor(loss, hidden_layer_sizes=(8,), max_iter=2).fit(X, y)
    assert type(reg._optimizer) is torch.optim.SGD
    assert reg._optimizer.defaults["momentum"] == 0.9 and reg._optimizer.defaults["lr"] == 0.02
    # a template with solver="auto" meta-trains with the engine's default optimizer, as before
    plain = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    plain.meta_fit([(X, y)], estimator=MetaLossRegressor(hidden_layer_sizes=(8,)), n_meta_iter=1,
                   verbose=0)
    assert plain.meta_info_["inner_optimizer"] == "sgd"


def test_int_hidden_layer_sizes_is_one_layer(regression):
    X, y = regression
    reg = MetaLossRegressor(hidden_layer_sizes=7, max_iter=3, random_state=0)
    with pytest.warns(ConvergenceWarning):
        reg.fit(X, y)
    widths = [m.out_features for m in reg.module_ if isinstance(m, torch.nn.Linear)]
    assert widths == [7, 1]


@pytest.mark.parametrize("params, message", [
    ({"hidden_layer_sizes": (-5,)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": (2.5,)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": 0}, "hidden_layer_sizes"),
    ({"max_iter": 2.9}, "max_iter"),
    ({"max_iter": 0}, "max_iter"),
    ({"lr": 0.0}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"solver": "lbfgs"}, "solver"),
    ({"alpha": -1.0}, "alpha"),
    ({"tol": -1e-3}, "tol"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"),
    ({"batch_size": 0}, "batch_size"),
    ({"activation": "sigmoid"}, "activation"),
    ({"early_stopping": "yes"}, "early_stopping"),
])
@pytest.mark.parametrize("cls", [MetaLossRegressor, MetaLossClassifier])
def test_invalid_parameters_are_refused_before_training(cls, params, message, blobs):
    X, y = blobs
    with pytest.raises(InvalidParameterError, match=message):
        cls(**params).fit(X, y)


@pytest.mark.parametrize("device", ["bogus", "cuda:99", "mps:3"])
def test_unavailable_devices_list_the_available_ones(device, blobs):
    X, y = blobs
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ValueError, match="available here: cpu"):
        MetaLossClassifier(device=device, max_iter=1).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_on_a_cpu_only_torch_is_a_clear_error(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="'cuda' is not available"):
        MetaLossClassifier(device="cuda", max_iter=1).fit(X, y)
    MetaLossClassifier(device=torch.device("cpu"), max_iter=1, random_state=0).partial_fit(
        X, y, classes=[0, 1, 2])


def test_training_loss_plateau_stops_training(regression):
    X, y = regression
    reg = MetaLossRegressor(tol=10.0, n_iter_no_change=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg.fit(X, y)
    # the first epoch improves on inf; then n_iter_no_change + 1 epochs without a tol gain
    assert reg.n_iter_ == 1 + 3 + 1
    assert reg.best_loss_ == min(reg.loss_curve_)
    assert reg.validation_scores_ is None and reg.best_validation_score_ is None


def test_max_iter_reached_warns_convergence(blobs):
    X, y = blobs
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\)"):
        MetaLossClassifier(max_iter=3, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # partial_fit never warns
        MetaLossClassifier(random_state=0).partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("cls", [MetaLossRegressor, MetaLossClassifier])
def test_early_stopping_keeps_the_best_validation_weights(cls, regression, blobs):
    X, y = regression if cls is MetaLossRegressor else blobs
    est = cls(early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, lr=0.05,
              max_iter=300, random_state=0).fit(X, y)
    scores = est.validation_scores_
    assert est.best_loss_ is None and len(scores) == est.n_iter_ < 300
    assert est.best_validation_score_ == max(scores)
    best_epoch = int(np.argmax(scores))
    # stopped n_iter_no_change + 1 epochs after the last improvement by tol (or sooner after
    # the best epoch, when that one improved by less than tol)
    assert best_epoch + 1 < est.n_iter_ <= best_epoch + 1 + 5 + 1
    # the kept network is the best epoch's: its score on the same held-out split matches
    train, val = train_test_split(np.arange(len(X)), test_size=0.2,
                                  random_state=_split_state(est),
                                  stratify=y if cls is MetaLossClassifier else None)
    assert est.score(X[val], y[val]) == pytest.approx(est.best_validation_score_, abs=1e-5)
    again = cls(early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, lr=0.05,
                max_iter=300, random_state=0).fit(X, y)
    assert again.validation_scores_ == scores  # random_state also fixes the split


def _split_state(est):
    """The RandomState the split drew from: after the network's initialisation seed."""
    rng = np.random.RandomState(est.random_state)
    rng.randint(2**31 - 1)
    return rng


def test_alpha_is_scikit_learns_l2_term_on_the_weights(regression):
    """One full-batch SGD step: the penalty adds lr * alpha * W / n to the weights' step."""
    X, y = regression
    alpha, lr, n = 3.0, 0.1, len(X)
    fitted = {}
    for a in (0.0, alpha):
        reg = MetaLossRegressor(alpha=a, solver="sgd", lr=lr, batch_size=None, max_iter=1,
                                random_state=0)
        with pytest.warns(ConvergenceWarning):
            reg.fit(X, y)
        fitted[a] = dict(reg.module_.named_parameters())
    init = MetaLossRegressor(random_state=0)._module_factory  # same seed, same initial weights
    start = dict(build_seeded(lambda: init(X.shape[1], 1),
                              seed_from(check_random_state(0))).named_parameters())
    for name, p in fitted[alpha].items():
        expected = fitted[0.0][name] - (lr * alpha * start[name] / n if p.dim() > 1 else 0)
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-6)


def test_learned_loss_warnings_come_once_per_fit(blobs):
    X, y = blobs
    fresh = LearnedLoss("classification", hidden_layer_sizes=(4,), random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MetaLossClassifier(fresh, max_iter=2).fit(X, y)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert sum("not been meta-trained" in m for m in messages) == 1, messages
    assert caught[0].filename == __file__  # points at the caller's fit


def test_batch_size_far_from_meta_training_warns(blobs):
    X, y = blobs
    loss = LearnedLoss("classification", hidden_layer_sizes=(4,), random_state=0)
    loss.meta_fit([(X[:100], y[:100], X[100:], y[100:])], n_meta_iter=2, verbose=0)
    assert loss.meta_info_["problem"]["inner_batch_size"] == 100  # full batch of 100
    with pytest.warns(UserWarning, match="batches of 100 samples; training uses batches of 8"):
        MetaLossClassifier(loss, batch_size=8, max_iter=1).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        MetaLossClassifier(loss, max_iter=1).fit(X, y)  # 150 samples, one batch of 150
    # files written before the batch size was recorded: full-batch vs mini-batches
    del loss.meta_info_["problem"]["inner_batch_size"]
    with pytest.warns(UserWarning, match="meta-trained full-batch"):
        MetaLossClassifier(loss, batch_size=20, max_iter=1).fit(X, y)
