"""Behaviours that small, plausible bugs would break silently; bad input; fuzzed fit/predict.

Each test here was checked to fail with the bug named in its docstring
planted in the library.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import r2_score

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor, SineTasks
from sklearn_ml3.meta import meta_train
from sklearn_ml3.tasks import SupervisedProblem


def tiny_mlp(n_features, n_outputs):
    return torch.nn.Sequential(torch.nn.Linear(n_features, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, n_outputs))


# ------------------------------------------------------------------ engine
def test_grad_clip_bounds_every_meta_gradient():
    """Bug: ``clip_grad_norm_`` replaced by ``pass`` (grad_clip is the RL default)."""
    clip = 1e-4
    norms = {}
    for grad_clip in (None, clip):
        loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
        seen = norms[grad_clip] = []

        def record(iteration, value, loss=loss, seen=seen):  # the gradient phi stepped with
            seen.append(float(torch.linalg.vector_norm(
                torch.cat([p.grad.flatten() for p in loss.parameters()]))))

        meta_train(loss, SupervisedProblem(SineTasks(n_points=20), tiny_mlp), n_meta_iter=5,
                   inner_lr=0.05, grad_clip=grad_clip, random_state=0, verbose=0,
                   callback=record)
    assert min(norms[None]) > 10 * clip  # the clip has something to do
    assert max(norms[clip]) <= clip * (1 + 1e-5)


class CountingProblem(SupervisedProblem):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inits = 0

    def init_params(self, task, seed):
        self.inits += 1
        return super().init_params(task, seed)


@pytest.mark.parametrize("inner_steps, unroll, n_meta_iter, resets", [
    (4, 2, 8, 4), (4, 1, 8, 2), (6, 3, 6, 3), (1, 1, 5, 5)])
def test_optimizees_reset_after_inner_steps_not_meta_iterations(inner_steps, unroll,
                                                                n_meta_iter, resets):
    """Bug: the inner-step phase advanced by 1 instead of ``unroll`` (model-free uses 2)."""
    problem = CountingProblem(SineTasks(n_points=20), tiny_mlp)
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=inner_steps, unroll=unroll,
               inner_lr=0.01, random_state=0, verbose=0)
    # each meta-iteration takes `unroll` inner steps, so theta resets every inner_steps/unroll
    assert problem.inits == resets


# ------------------------------------------------------------------ estimators
def test_predictions_are_on_the_scale_of_the_targets():
    """Bug: ``predict`` dropping ``* self._y_scale`` (targets with std 50, not rescaled)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = 50 * (X @ np.array([1.0, -0.5, 0.25])) + 100
    assert y.std() > 30
    reg = MetaLossRegressor(loss="squared_error", hidden_layer_sizes=(16,), solver="adam",
                            lr=1e-2, max_iter=200, target_scaling="standard", random_state=0)
    reg.fit(X, y)
    assert r2_score(y, reg.predict(X)) > 0.95


def test_loss_call_weights_its_samples():
    """Bug: a plain mean in ``LearnedLoss.__call__`` (``sample_weight=`` ignored)."""
    loss = LearnedLoss(hidden_layer_sizes=(8,), random_state=0)
    gen = torch.Generator().manual_seed(0)
    y_pred, y = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    w = torch.tensor([0.0, 1.0, 2.0, 0.0, 3.0, 0.5])
    per = loss.per_sample(y_pred, y)
    torch.testing.assert_close(loss(y_pred, y, sample_weight=w), (w * per).sum() / w.sum())
    # zero-weight samples do not matter, and the weights' scale does not either
    y_other = y.clone()
    y_other[w == 0] += 10.0
    torch.testing.assert_close(loss(y_pred, y_other, sample_weight=w),
                               loss(y_pred, y, sample_weight=3 * w))


def weighted_fits(cls, method, X, y, w):
    kwargs = dict(hidden_layer_sizes=(8,), solver="sgd", lr=0.05, max_iter=20,
                  batch_size=8, shuffle=False, random_state=0)
    extra = {"classes": np.unique(y)} if method == "partial_fit" and cls is MetaLossClassifier \
        else {}
    fits = []
    for weights in (w, 4 * w):
        est = cls(**kwargs)
        for _ in range(3 if method == "partial_fit" else 1):
            getattr(est, method)(X, y, sample_weight=weights, **extra)
        fits.append(est)
    plain = cls(**kwargs)
    for _ in range(3 if method == "partial_fit" else 1):
        getattr(plain, method)(X, y, **extra)
    return fits, plain


@pytest.mark.parametrize("cls", [MetaLossRegressor, MetaLossClassifier])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_sample_weights_are_normalised_per_batch_and_used(cls, method):
    """Bugs: ``/ w.sum()`` -> ``/ len(idx)``; ``partial_fit`` ignoring ``sample_weight``.

    A weighted batch mean does not depend on the weights' scale (4 w fits as
    w does), and non-uniform weights change the fit.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    y = (X[:, 0] > 0).astype(int) if cls is MetaLossClassifier else X @ [1.0, 2.0, -1.0]
    w = rng.uniform(0.1, 1.0, size=32)
    w[:8] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        (fit_w, fit_4w), plain = weighted_fits(cls, method, X, y, w)
    predict = "predict_proba" if cls is MetaLossClassifier else "predict"
    out_w, out_4w = getattr(fit_w, predict)(X), getattr(fit_4w, predict)(X)
    np.testing.assert_allclose(out_w, out_4w, rtol=1e-5, atol=1e-6)
    assert np.abs(out_w - getattr(plain, predict)(X)).max() > 1e-3


def test_string_targets_and_mixed_labels_get_clear_errors():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="needs numeric targets, got y of dtype <U1"):
        MetaLossRegressor(max_iter=1).fit(X, np.array(list("abababab" "ab")))
    mixed = np.array(["a", 1] * 5, dtype=object)
    with pytest.raises(ValueError, match="mixes string and numeric class labels"):
        MetaLossClassifier(max_iter=1).fit(X, mixed)


@pytest.mark.parametrize("scaling, magnitude, message", [
    ("standard", 1e200, "too large to standardise"),
    (None, 1e39, "do not fit float32"),
])
def test_overflowing_targets_get_an_actionable_error(scaling, magnitude, message):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 2)), rng.uniform(size=20) * magnitude
    reg = MetaLossRegressor(max_iter=1, target_scaling=scaling)
    with pytest.raises(ValueError, match=f"{message}.*divide y by a constant"):
        reg.fit(X, y)


def test_large_targets_still_standardise():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = 1e150 * (X[:, 0] + 2)
    reg = MetaLossRegressor(loss="squared_error", solver="adam", lr=1e-2, max_iter=100,
                            target_scaling="standard", random_state=0).fit(X, y)
    prediction = reg.predict(X)
    assert np.all(np.isfinite(prediction)) and r2_score(y, prediction) > 0.9


# ------------------------------------------------------------------ fuzzing
finite_or_not = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(X=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                    elements=finite_or_not),
       y=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6),
                    elements=finite_or_not),
       classify=st.booleans())
def test_fuzzed_fit_predict_gives_a_clear_error_or_a_finite_prediction(X, y, classify):
    """Any array input: a ValueError/TypeError with a message, or finite predictions."""
    cls = MetaLossClassifier if classify else MetaLossRegressor
    est = cls(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    if classify:
        y = np.round(np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=-1.0) / 1e5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prediction = est.fit(X, y).predict(X)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert np.all(np.isfinite(prediction)) if not classify else len(prediction) == len(X)


@pytest.mark.parametrize("cls", [MetaLossRegressor, MetaLossClassifier])
def test_features_beyond_float32_are_a_clear_error(cls):
    """1e300 is finite in float64 (scikit-learn's checks pass it) but not in float32."""
    X = np.array([[1e300], [0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match="beyond float32's range"):
        cls(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, [0, 1, 0, 1])
