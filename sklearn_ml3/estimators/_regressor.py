"""MetaLossRegressor: a torch regressor trained by a learned (or hand-written) loss."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..learned_loss import LearnedLoss
from ._base import BaseMetaLoss


class MetaLossRegressor(RegressorMixin, BaseMetaLoss):
    """Neural-network regressor trained with a learned loss.

    Parameters
    ----------
    loss : LearnedLoss or "squared_error", default="squared_error"
        The training loss. A :class:`~sklearn_ml3.LearnedLoss` must have
        ``kind="regression"``; if it was meta-trained with target scaling,
        targets are scaled the same way during fit and unscaled at predict.
    hidden_layer_sizes : tuple of int, default=(100,)
        Hidden widths of the MLP optimizee (ignored when ``module`` is given).
    activation : {"relu", "tanh", "elu", "identity"}, default="relu"
    module : callable, optional
        ``module(n_features, n_outputs) -> torch.nn.Module`` replacing the MLP.
    lr : float or "auto", default="auto"
        Learning rate; "auto" takes the learned loss's meta-training lr
        (1e-3 for hand-written losses).
    solver : {"sgd", "momentum", "adam"}, default="sgd"
    max_iter : int, default=200
        Epochs (passes over the data); with full-batch training, steps.
    batch_size : int, "auto" or None, default="auto"
        Mini-batch size; "auto" is ``min(200, n_samples)``, None full batch.
    shuffle : bool, default=True
    warm_start : bool, default=False
        Continue from the previous fit instead of re-initialising.
    random_state : int, RandomState or None
        Seeds initialisation and shuffling (a private generator; the global
        torch seed is untouched).
    device : str, default="cpu"
        Torch device for training; prediction runs on the CPU in float64.
    verbose : int, default=0

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string feature names.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Training loss per epoch (in the loss's own units).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ml3 import MetaLossRegressor
    >>> X = np.linspace(-1, 1, 50).reshape(-1, 1)
    >>> reg = MetaLossRegressor(lr=0.05, max_iter=50, random_state=0).fit(X, 2 * X.ravel())
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _loss_kind = "regression"
    _builtin_losses = ("squared_error",)

    def fit(self, X, y, sample_weight=None):
        """Train on ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X, y``, continuing from the current state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit(self, X, y, sample_weight, incremental):
        first = not (incremental and hasattr(self, "module_"))
        X, y = validate_data(self, X, y, reset=first, multi_output=True, y_numeric=True,
                             dtype=np.float64)
        loss = self._resolved_loss()
        if first:
            self._warn_outside_training(loss)
            self._y_2d = y.ndim == 2
            self._y_shift, self._y_scale = self._target_scaling(loss, y)
        y2 = y.reshape(len(y), -1)
        if not first and y2.shape[1] != self._n_outputs:
            raise ValueError(f"y has {y2.shape[1]} targets; this model was fitted with "
                             f"{self._n_outputs}")
        self._n_outputs = y2.shape[1]
        targets = torch.as_tensor((y2 - self._y_shift) / self._y_scale, dtype=torch.float32)
        return self._fit_torch(
            torch.as_tensor(X, dtype=torch.float32), targets, self._weights(sample_weight, X),
            self._n_outputs, incremental=incremental,
            n_epochs=1 if incremental else int(self.max_iter),
        )

    @staticmethod
    def _target_scaling(loss, y):
        scaling = None
        if isinstance(loss, LearnedLoss):
            scaling = loss.meta_info_.get("problem", {}).get("target_scaling")
        if scaling == "standard":
            y2 = y.reshape(len(y), -1)
            return y2.mean(axis=0), np.maximum(y2.std(axis=0), 1e-8)
        return 0.0, 1.0

    def _batch_loss(self, out, target, weight, loss_fn):
        if loss_fn is None:
            per_sample = ((out - target) ** 2).mean(-1)
            if weight is None:
                return per_sample.mean()
            return (weight * per_sample).sum() / weight.sum()
        return loss_fn(out, target, sample_weight=weight)

    def predict(self, X):
        """Predicted targets, shape (n_samples,) or (n_samples, n_targets)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self._forward64(X) * self._y_scale + self._y_shift
        return out if self._y_2d else out.ravel()
