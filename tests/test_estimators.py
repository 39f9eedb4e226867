"""Behaviour of MetaLossRegressor and MetaLossClassifier beyond scikit-learn's checks."""

import doctest
import os
import pickle
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor
from sklearn_ml3.datasets import digit_pair, load_digits_8x8
from sklearn_ml3.estimators import LeNet

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(120, n_features=4, centers=3, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def digits_loss():
    """A classification loss meta-trained (briefly) on all 10 classes of the 8x8 digits."""
    X, y = load_digits_8x8()
    loss = LearnedLoss("classification", hidden_layer_sizes=(16, 16), random_state=0)
    loss.meta_fit([(X[:600], y[:600], X[600:900], y[600:900])],
                  estimator=MetaLossClassifier(hidden_layer_sizes=(32,), lr=0.1),
                  n_meta_iter=40, inner_steps=10, batch_size=64, meta_lr=1e-2, verbose=0)
    return loss


def fast(cls, **params):
    return cls(**{"hidden_layer_sizes": (16,), "solver": "adam", "lr": 1e-2, "max_iter": 50,
                  "random_state": 0, **params})


# ------------------------------------------------------------------ classifier
def test_classifier_multiclass_outputs_agree(blobs):
    X, y = blobs
    clf = fast(MetaLossClassifier).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), atol=1e-10)
    np.testing.assert_array_equal(clf.predict(X), clf.decision_function(X).argmax(1))
    assert clf.score(X, y) > 0.9
    assert clf.n_iter_ == 50 and len(clf.loss_curve_) == 50
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_classifier_binary_string_labels(blobs):
    X, y = blobs
    mask = y < 2
    labels = np.where(y[mask] == 0, "cat", "dog")
    clf = fast(MetaLossClassifier).fit(X[mask], labels)
    np.testing.assert_array_equal(clf.classes_, ["cat", "dog"])
    scores = clf.decision_function(X[mask])
    assert scores.shape == (mask.sum(),)
    np.testing.assert_array_equal(clf.predict(X[mask]), np.where(scores > 0, "dog", "cat"))
    assert clf.score(X[mask], labels) > 0.9


def test_classifier_partial_fit_needs_classes_first(blobs):
    X, y = blobs
    clf = fast(MetaLossClassifier)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:10], y[:10], classes=[0, 1, 2])
    clf.partial_fit(X[10:], y[10:])
    assert clf.n_iter_ == 2 and list(clf.classes_) == [0, 1, 2]
    with pytest.raises(ValueError, match="differs"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X[:3], [0, 1, 7])


def test_sample_weight_ones_equals_none_and_zero_weights_matter(blobs):
    X, y = blobs
    base = fast(MetaLossClassifier).fit(X, y).predict_proba(X)
    ones = fast(MetaLossClassifier).fit(X, y, sample_weight=np.ones(len(y))).predict_proba(X)
    np.testing.assert_array_equal(base, ones)
    weights = (y != 2).astype(float)  # class 2 ignored
    clf = fast(MetaLossClassifier).fit(X, y, sample_weight=weights)
    assert (clf.predict(X) == 2).mean() < 0.1


def test_lenet_on_digit_images():
    X, y = load_digits_8x8()
    X, y = digit_pair(X, y, 4, 7)
    clf = MetaLossClassifier(module=LeNet, solver="adam", lr=3e-3, max_iter=10, batch_size=32,
                             random_state=0).fit(X, y)
    assert isinstance(clf.module_, LeNet) and clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="square"):
        MetaLossClassifier(module=LeNet, max_iter=1).fit(X[:, :60], y)
    wide = partial(LeNet, image_shape=(4, 16))
    assert MetaLossClassifier(module=wide, max_iter=1).fit(X, y).module_.image_shape == (1, 4, 16)


def test_module_instance_is_rejected(blobs):
    X, y = blobs
    with pytest.raises(TypeError, match="class or a factory"):
        MetaLossClassifier(module=torch.nn.Linear(4, 3)).fit(X, y)


def test_loss_meta_trained_on_ten_classes_trains_three_and_two(digits_loss):
    X, y = load_digits_8x8()
    for classes in ([0, 1, 2], [3, 8]):
        mask = np.isin(y, classes)
        clf = MetaLossClassifier(digits_loss, hidden_layer_sizes=(32,), max_iter=20,
                                 random_state=0).fit(X[mask], y[mask])
        assert clf.predict_proba(X[mask]).shape == (mask.sum(), len(classes))
        assert clf.score(X[mask], y[mask]) > 0.8


def test_meta_fit_with_classifier_template_and_lenet():
    X, y = load_digits_8x8()
    X, y = digit_pair(X, y, 2, 8)
    loss = LearnedLoss("classification", hidden_layer_sizes=(8,), random_state=0)
    loss.meta_fit([(X[:100], y[:100], X[100:], y[100:])],
                  estimator=MetaLossClassifier(module=LeNet, lr=1e-3), n_meta_iter=3,
                  inner_steps=3, batch_size=16, verbose=0)
    assert loss.meta_info_["inner_lr"] == 1e-3 and len(loss.meta_history_) == 3
    clf = MetaLossClassifier(loss, module=LeNet, max_iter=2, random_state=0).fit(X, y)
    assert clf._resolved_lr(loss) == 1e-3  # lr="auto" takes the meta-training lr


# ------------------------------------------------------------------- regressor
def test_regressor_single_and_multi_output():
    X, y = make_regression(100, 3, n_targets=2, random_state=0)
    y = y / y.std(0)
    reg = fast(MetaLossRegressor, target_scaling="standard").fit(X, y)
    assert reg.predict(X).shape == (100, 2) and reg.score(X, y) > 0.8
    reg1 = fast(MetaLossRegressor).fit(X, y[:, 0])
    assert reg1.predict(X).shape == (100,)


def test_regressor_partial_and_warm_start():
    X, y = make_regression(60, 2, random_state=0)
    reg = fast(MetaLossRegressor, warm_start=True).fit(X, y)
    reg.fit(X, y)
    assert reg.n_iter_ == 100
    reg.partial_fit(X, y)
    assert reg.n_iter_ == 101
    with pytest.raises(ValueError, match="targets"):
        reg.partial_fit(X, np.c_[y, y])


# ---------------------------------------------------------- learned-loss misuse
def test_wrong_kind_of_learned_loss_is_an_error(blobs, digits_loss):
    X, y = blobs
    with pytest.raises(ValueError, match="kind='classification'"):
        MetaLossRegressor(digits_loss).fit(X, y.astype(float))
    regression = LearnedLoss("regression", random_state=0)
    with pytest.raises(ValueError, match="kind='regression'"):
        MetaLossClassifier(regression).fit(X, y)
    with pytest.raises(TypeError, match="LearnedLoss"):
        MetaLossClassifier(loss=torch.nn.MSELoss()).fit(X, y)
    with pytest.raises(ValueError, match="log_loss"):
        MetaLossClassifier(loss="hinge").fit(X, y)


def test_learned_loss_outside_its_training_warns(blobs, digits_loss):
    X, y = blobs
    with pytest.warns(UserWarning, match="inner optimizer"):
        MetaLossClassifier(digits_loss, solver="adam", max_iter=1).fit(X, y)
    with pytest.warns(UserWarning, match="lr=0.1"):
        MetaLossClassifier(digits_loss, lr=1e-4, max_iter=1).fit(X, y)
    with pytest.warns(UserWarning, match="not been meta-trained"):
        MetaLossClassifier(LearnedLoss("classification"), max_iter=1).fit(X, y)


def test_target_scaling_the_loss_never_saw_warns():
    X, y = make_regression(40, 2, random_state=0)
    loss = LearnedLoss("regression", hidden_layer_sizes=(8,), random_state=0)
    loss.meta_fit([(X, y / y.std())], n_meta_iter=2, verbose=0, target_scaling="standard")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)  # 2 epochs do not converge
        reg = MetaLossRegressor(loss, max_iter=2, random_state=0).fit(X, y)  # "auto"
    np.testing.assert_allclose(reg._y_shift, [y.mean()])
    with pytest.warns(UserWarning, match="target_scaling='standard'"):
        MetaLossRegressor(loss, target_scaling=None, max_iter=1).fit(X, y)


def test_fit_leaves_the_learned_loss_untouched(blobs, digits_loss):
    X, y = blobs
    before = {k: v.clone() for k, v in digits_loss.network_.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in digits_loss.parameters()]
    MetaLossClassifier(digits_loss, max_iter=2).fit(X, y)
    for k, v in digits_loss.network_.state_dict().items():
        assert torch.equal(v, before[k])
    for p, g in zip(digits_loss.parameters(), grads, strict=True):  # no gradient written
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


# -------------------------------------------------- clone, search, persistence
def test_clone_keeps_learned_loss_weights(digits_loss):
    clf = MetaLossClassifier(digits_loss)
    copied = clone(clf).loss
    assert copied is not digits_loss and copied.is_meta_trained
    for (k, a), b in zip(digits_loss.network_.state_dict().items(),
                         copied.network_.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert copied.meta_info_ == digits_loss.meta_info_


def test_grid_search_in_pipeline_same_results_with_two_jobs(digits_loss):
    X, y = load_digits_8x8()
    X, y = X[:300], y[:300]
    pipe = make_pipeline(StandardScaler(), MetaLossClassifier(
        digits_loss, hidden_layer_sizes=(16,), max_iter=5, random_state=0))
    grid = {"metalossclassifier__lr": [0.05, 0.1]}
    results = [GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs).fit(X, y).cv_results_
               for n_jobs in (1, 2)]
    for key in ("mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"):
        np.testing.assert_array_equal(results[0][key], results[1][key])


def test_joblib_round_trip_predicts_identically(tmp_path, blobs, digits_loss):
    X, y = blobs
    clf = MetaLossClassifier(digits_loss, hidden_layer_sizes=(16,), max_iter=5,
                             random_state=0).fit(X, y)
    joblib.dump(clf, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    loaded.partial_fit(X, y)  # optimizer state is rebuilt after loading
    assert loaded.n_iter_ == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_trained_pickle_loads_on_cpu_only_machine(tmp_path, blobs):
    X, y = blobs
    clf = fast(MetaLossClassifier, device="cuda").fit(X, y)
    path = tmp_path / "gpu.pkl"
    path.write_bytes(pickle.dumps(clf))
    code = ("import pickle, sys, numpy as np; clf = pickle.loads(open(sys.argv[1], 'rb').read());"
            "print(next(clf.module_.parameters()).device)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.stdout.strip() == "cpu"
    assert next(clf.module_.parameters()).device.type == "cuda"  # the original stays put


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [MetaLossRegressor, MetaLossClassifier])
def test_cuda_fit_matches_cpu_fit(cls, blobs, digits_loss):
    X, y = blobs
    if cls is MetaLossRegressor:
        X, y = make_regression(120, n_features=4, noise=1.0, random_state=0)
        y = y / y.std()
        loss = "squared_error"
    else:
        loss = digits_loss
    cpu = fast(cls, loss=loss).fit(X, y)
    gpu = fast(cls, loss=loss, device="cuda").fit(X, y)
    assert next(gpu.module_.parameters()).device.type == "cuda"
    assert gpu.loss_curve_[-1] < gpu.loss_curve_[0]
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-3, atol=1e-5)
    out = gpu.predict(X)
    assert isinstance(out, np.ndarray)
    assert gpu.score(X, y) == pytest.approx(cpu.score(X, y), abs=1e-3)


def test_pickling_leaves_the_fitted_estimator_untouched(blobs):
    X, y = blobs
    kw = {"solver": "momentum", "lr": 0.05}
    clf = fast(MetaLossClassifier, max_iter=5, **kw).fit(X, y)
    twin = fast(MetaLossClassifier, max_iter=5, **kw).fit(X, y)
    module, optimizer = clf.module_, clf._optimizer
    pickle.dumps(clf)
    assert clf.module_ is module and clf._optimizer is optimizer
    # the momentum buffers survive, so training continues exactly as without the pickle
    clf.partial_fit(X, y)
    twin.partial_fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


def test_pickle_holds_cpu_tensors_only(blobs):
    X, y = blobs
    clf = fast(MetaLossClassifier).fit(X, y)
    state = clf.__getstate__()
    assert "_optimizer" not in state
    assert all(p.device.type == "cpu" for p in state["module_"].parameters())


def test_feature_names_are_checked(blobs):
    pd = pytest.importorskip("pandas")
    X, y = blobs
    frame = pd.DataFrame(X, columns=list("abcd"))
    clf = fast(MetaLossClassifier).fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, list("abcd"))
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :3])


# ------------------------------------------------------------------------ docs
def test_user_guide_examples_run():
    result = doctest.testfile(str(DOCS / "estimators.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
