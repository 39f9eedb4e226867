"""MetaLossRegressor: a torch regressor trained by a learned (or hand-written) loss."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ..learned_loss import LearnedLoss, TargetScaler
from ._base import BaseMetaLoss


class MetaLossRegressor(RegressorMixin, BaseMetaLoss):
    """Neural-network regressor trained with a learned loss.

    Parameters
    ----------
    loss : LearnedLoss or "squared_error", default="squared_error"
        The training loss. A :class:`~sklearn_ml3.LearnedLoss` must have
        ``kind="regression"``.
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Hidden widths of the MLP optimizee (ignored when ``module`` is given);
        an int is one hidden layer.
    activation : {"relu", "tanh", "elu", "softplus", "identity"}, default="relu"
        Hidden activation of the MLP optimizee.
    module : callable, optional
        A ``torch.nn.Module`` class or factory called as
        ``module(n_features, n_outputs)``, replacing the MLP.
    lr : float or "auto", default="auto"
        Learning rate; "auto" takes the learned loss's meta-training lr
        (1e-3 for the hand-written loss).
    solver : {"auto", "sgd", "momentum", "adam"}, default="auto"
        Optimizer of the network's weights; "auto" takes the learned loss's
        meta-training optimizer (Adam for the hand-written loss).
    alpha : float, default=0.0
        Strength of the L2 penalty on the weights (not the biases), added to
        the loss as ``0.5 * alpha * ||W||^2 / batch_size`` like
        ``MLPRegressor``'s. Off by default: a learned loss was meta-trained
        without one.
    max_iter : int, default=200
        Most epochs (passes over the data); with full-batch training, steps.
    batch_size : int, "auto" or None, default="auto"
        Mini-batch size; "auto" is ``min(200, n_samples)``, None full batch.
    shuffle : bool, default=True
        Reshuffle the samples every epoch.
    tol : float, default=1e-4
        Training stops when the training loss (or, with ``early_stopping``,
        the validation score) has not improved by at least ``tol`` for
        ``n_iter_no_change`` consecutive epochs.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop on its
        score (see ``tol``) and keep the weights of the best epoch. Only
        ``fit`` uses it.
    validation_fraction : float, default=0.1
        Share of the training data held out with ``early_stopping``.
    n_iter_no_change : int, default=10
        Epochs without a ``tol`` improvement before training stops.
    warm_start : bool, default=False
        Continue from the previous fit instead of re-initialising.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling and the validation split (a private
        generator; the global torch seed is untouched).
    device : str or torch.device, default="cpu"
        Torch device for training (a ValueError lists the available ones);
        prediction runs on the CPU in float64, and pickles always hold CPU
        tensors.
    verbose : int, default=0
        Print the loss after every epoch when positive.
    target_scaling : {"auto", None, "standard"}, default="auto"
        How targets are scaled before the loss sees them (predictions are
        unscaled). "auto" applies what the learned loss was meta-trained
        with (none for the hand-written loss); a learned loss only knows the
        value range it saw, so overriding its scaling warns.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of str
        Feature names seen during fit; only when X has string feature names.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Training loss per epoch (in the loss's own units, L2 term included).
    best_loss_ : float or None
        Lowest training loss reached; None with ``early_stopping``.
    validation_scores_ : list of float or None
        R^2 on the held-out split after every epoch; None without
        ``early_stopping``.
    best_validation_score_ : float or None
        Best of ``validation_scores_`` (its weights are kept); None without
        ``early_stopping``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ml3 import MetaLossRegressor
    >>> X = np.linspace(-1, 1, 50).reshape(-1, 1)
    >>> reg = MetaLossRegressor(random_state=0).fit(X, 2 * X.ravel())
    >>> reg.score(X, 2 * X.ravel()) > 0.95
    True
    """

    _loss_kind = "regression"
    _builtin_losses = ("squared_error",)
    _parameter_constraints: dict = {
        **BaseMetaLoss._parameter_constraints,
        "loss": [StrOptions(set(_builtin_losses)), LearnedLoss],
        "target_scaling": [StrOptions({"auto", "standard"}), None],
    }

    def __init__(self, loss="squared_error", *, hidden_layer_sizes=(100,), activation="relu",
                 module=None, lr="auto", solver="auto", alpha=0.0, max_iter=200,
                 batch_size="auto", shuffle=True, tol=1e-4, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, warm_start=False,
                 random_state=None, device="cpu", verbose=0, target_scaling="auto"):
        super().__init__(
            loss, hidden_layer_sizes=hidden_layer_sizes, activation=activation, module=module,
            lr=lr, solver=solver, alpha=alpha, max_iter=max_iter, batch_size=batch_size,
            shuffle=shuffle, tol=tol, early_stopping=early_stopping,
            validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change,
            warm_start=warm_start, random_state=random_state, device=device, verbose=verbose,
        )
        self.target_scaling = target_scaling

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train a freshly initialised network (unless ``warm_start``) on ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), optional
            Per-sample weights of the loss (weighted mean in each mini-batch).

        Returns
        -------
        self : MetaLossRegressor
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X, y``, continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), optional
            Per-sample weights.

        Returns
        -------
        self : MetaLossRegressor
            The updated estimator.
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit(self, X, y, sample_weight, incremental):
        first = not (incremental and hasattr(self, "module_"))
        X, y = validate_data(self, X, y, reset=first, multi_output=True, y_numeric=True,
                             dtype=np.float64)
        if y.dtype.kind not in "biuf":
            raise ValueError(
                f"{type(self).__name__} needs numeric targets, got y of dtype {y.dtype} "
                f"(e.g. {y.flat[0]!r}); convert them with y.astype(float), or use "
                "MetaLossClassifier for class labels")
        y2 = y.reshape(len(y), -1)
        loss = self._resolved_loss()
        if first:
            self._y_2d = y.ndim == 2
            self._n_outputs = y2.shape[1]
            self._y_shift, self._y_scale = self._target_scaler(loss, y2)
        elif y2.shape[1] != self._n_outputs:
            raise ValueError(f"y has {y2.shape[1]} targets; this model was fitted with "
                             f"{self._n_outputs}")
        targets = self._as_float32(TargetScaler(self._y_shift, self._y_scale).transform(y2))
        if not torch.isfinite(targets).all():
            raise ValueError(
                f"the targets (max |y| = {np.abs(y2).max():.3g}) do not fit float32 after "
                f"target_scaling={self.target_scaling!r}; use target_scaling='standard' or "
                "divide y by a constant before fitting (and multiply predictions back)")
        return self._train(loss, self._features32(X), targets, self._weights(sample_weight, X),
                           self._n_outputs, incremental=incremental)

    def _target_scaler(self, loss, y2) -> TargetScaler:
        """The scaling of the targets, following ``target_scaling``."""
        trained = None
        if isinstance(loss, LearnedLoss):
            trained = loss.meta_info_.get("problem", {}).get("target_scaling")
        scaling = trained if self.target_scaling == "auto" else self.target_scaling
        if (isinstance(loss, LearnedLoss) and loss.is_meta_trained
                and scaling != trained):
            warnings.warn(
                f"this loss was meta-trained with target_scaling={trained!r} but is used with "
                f"target_scaling={scaling!r}: it only knows the target range it saw during "
                "meta-training (use target_scaling='auto')", UserWarning, stacklevel=5,
            )
        with np.errstate(over="ignore", invalid="ignore"):
            scaler = TargetScaler.fit(y2, scaling)
        if not (np.isfinite(scaler.shift).all() and np.isfinite(scaler.scale).all()):
            raise ValueError(
                f"the targets are too large to standardise in float64 (max |y| = "
                f"{np.abs(y2).max():.3g}; their variance overflows above about 1e154); "
                "divide y by a constant before fitting (and multiply predictions back)")
        return scaler

    @staticmethod
    def _stratify(targets):
        return None

    @staticmethod
    def _score_outputs(out, targets, sample_weight) -> float:
        # R^2 is invariant to the per-target scaling, so the scaled space serves
        return r2_score(targets, out, sample_weight=sample_weight)

    @staticmethod
    def _per_sample_loss(out, target, loss_fn):
        if loss_fn is None:
            return ((out - target) ** 2).mean(-1)
        return loss_fn.per_sample(out, target)

    def predict(self, X):
        """Predict targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions, computed in float64.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self._forward64(X) * self._y_scale + self._y_shift
        return out if self._y_2d else out.ravel()
