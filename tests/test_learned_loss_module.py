"""LearnedLoss as a torch loss: a frozen nn.Module with reduction, logits and target scaling."""

import copy
import pickle

import numpy as np
import pytest
import torch

from sklearn_ml3 import LearnedLoss, MetaLossRegressor
from sklearn_ml3.learned_loss import TargetScaler


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
        self.criterion = LearnedLoss(hidden_layer_sizes=(4,), random_state=0)


def test_registers_as_a_submodule_and_moves_with_its_model():
    model = Model()
    assert any(k.startswith("criterion.network_.") for k in model.state_dict())
    model.to(torch.float64)
    assert model.criterion.dtype == torch.float64
    clone = Model()
    clone.load_state_dict(model.to(torch.float32).state_dict())
    x = torch.randn(6, 3)
    torch.testing.assert_close(clone.criterion(x[:, 0], x[:, 1]), model.criterion(x[:, 0], x[:, 1]))


def test_frozen_outside_meta_training():
    loss = LearnedLoss(hidden_layer_sizes=(4,), random_state=0)
    assert not any(p.requires_grad for p in loss.parameters())
    pred = torch.randn(8, requires_grad=True)
    loss(pred, torch.randn(8)).backward()
    assert pred.grad is not None and all(p.grad is None for p in loss.parameters())
    X = np.random.default_rng(0).standard_normal((30, 2))
    loss.meta_fit([(X, X[:, 0])], estimator=MetaLossRegressor(hidden_layer_sizes=(4,)),
                  n_meta_iter=3, verbose=0)
    assert np.ptp(loss.meta_history_) > 0  # meta-training did train phi ...
    assert not any(p.requires_grad for p in loss.parameters())  # ... and froze it again
    for other in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert not any(p.requires_grad for p in other.parameters())


def test_reduction_like_torch_losses():
    pred, target = torch.randn(10), torch.randn(10)
    weight = torch.rand(10)
    losses = {r: LearnedLoss(hidden_layer_sizes=(4,), random_state=0, reduction=r)
              for r in ("mean", "sum", "none")}
    per_sample = losses["none"](pred, target)
    assert per_sample.shape == (10,)
    torch.testing.assert_close(per_sample, losses["mean"].per_sample(pred, target))
    torch.testing.assert_close(losses["sum"](pred, target), per_sample.sum())
    torch.testing.assert_close(losses["mean"](pred, target), per_sample.mean())
    torch.testing.assert_close(losses["none"](pred, target, sample_weight=weight),
                               weight * per_sample)
    torch.testing.assert_close(losses["mean"](pred, target, sample_weight=weight),
                               (weight * per_sample).sum() / weight.sum())
    assert "reduction='sum'" in repr(losses["sum"])
    assert pickle.loads(pickle.dumps(losses["sum"])).reduction == "sum"
    with pytest.raises(ValueError, match="reduction must be one of"):
        LearnedLoss(reduction="avg")
    with pytest.raises(ValueError, match="needs reduction='mean'"):
        losses["sum"].meta_fit([(np.zeros((5, 1)), np.zeros(5))], n_meta_iter=1, verbose=0)


def test_classification_refuses_logits_unless_told():
    loss = LearnedLoss("classification", hidden_layer_sizes=(4,), random_state=0)
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]])
    onehot = torch.eye(3)[[0, 1]]
    with pytest.raises(ValueError, match="from_logits=True"):
        loss(logits, onehot)
    torch.testing.assert_close(loss(logits, onehot, from_logits=True),
                               loss(torch.softmax(logits, -1), onehot))
    with pytest.raises(ValueError, match="classification losses only"):
        LearnedLoss(random_state=0)(torch.zeros(3), torch.zeros(3), from_logits=True)


def test_target_scaler_applies_the_meta_training_scaling():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    y = 50 + 10 * X[:, 0]
    loss = LearnedLoss(hidden_layer_sizes=(4,), random_state=0)
    np.testing.assert_array_equal(loss.target_scaler(y).transform(y), y)  # raw targets
    loss.meta_fit([(X, y)], n_meta_iter=1, verbose=0, target_scaling="standard")
    y_t = torch.as_tensor(y, dtype=torch.float32)
    scaler = loss.target_scaler(y_t)
    scaled = scaler.transform(y_t)
    assert abs(float(scaled.mean())) < 1e-5 and float(scaled.std(correction=0)) == pytest.approx(1)
    torch.testing.assert_close(scaler.inverse_transform(scaled), y_t)
    # the estimator applies the same scaling (one rule for both)
    reg = MetaLossRegressor(loss, max_iter=1, n_iter_no_change=1).fit(X, y)
    shift, scale = TargetScaler.fit(y.reshape(-1, 1), "standard")
    np.testing.assert_allclose(reg._y_shift, shift)
    np.testing.assert_allclose(reg._y_scale, scale)
    np.testing.assert_allclose(float(scaler.shift[0]), shift[0], rtol=1e-6)
    with pytest.raises(ValueError, match="regression"):
        LearnedLoss("classification").target_scaler(y)


def test_torch_loop_example_in_the_docs_runs():
    import doctest
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "learned_loss.md"
    result = doctest.testfile(str(page), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
