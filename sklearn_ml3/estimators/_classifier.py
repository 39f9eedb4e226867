"""MetaLossClassifier: a torch classifier trained by a learned (or hand-written) loss."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_softmax, softmax
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.metrics import accuracy_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..learned_loss import LearnedLoss
from ._base import BaseMetaLoss


class MetaLossClassifier(ClassifierMixin, BaseMetaLoss):
    """Neural-network classifier trained with a learned loss.

    The network has one output (logit) per class, binary problems included,
    and ``predict_proba`` is their softmax. A learned loss sees
    ``(proba, one-hot target)``; since a classification
    :class:`~sklearn_ml3.LearnedLoss` applies one shared network to every
    class's ``(p_k, y_k)`` pair, a loss meta-trained with any number of
    classes trains classifiers with any other number.

    Parameters
    ----------
    loss : LearnedLoss or "log_loss", default="log_loss"
        The training loss. A :class:`~sklearn_ml3.LearnedLoss` must have
        ``kind="classification"``; "log_loss" is the cross-entropy.
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Hidden widths of the MLP optimizee (ignored when ``module`` is given);
        an int is one hidden layer.
    activation : {"relu", "tanh", "elu", "softplus", "identity"}, default="relu"
        Hidden activation of the MLP optimizee.
    module : callable, optional
        A ``torch.nn.Module`` class or factory called as
        ``module(n_features, n_classes)``, replacing the MLP; e.g.
        :class:`~sklearn_ml3.estimators.LeNet` for flat image rows.
    lr : float or "auto", default="auto"
        Learning rate; "auto" takes the learned loss's meta-training lr
        (1e-3 for log-loss).
    solver : {"auto", "sgd", "momentum", "adam"}, default="auto"
        Optimizer of the network's weights; "auto" takes the learned loss's
        meta-training optimizer (Adam for log-loss).
    alpha : float, default=0.0
        Strength of the L2 penalty on the weights (not the biases), added to
        the loss as ``0.5 * alpha * ||W||^2 / batch_size`` like
        ``MLPClassifier``'s. Off by default: a learned loss was meta-trained
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

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    module_ : torch.nn.Module
        The trained network (outputs one logit per class).
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
        Accuracy on the held-out split after every epoch; None without
        ``early_stopping``.
    best_validation_score_ : float or None
        Best of ``validation_scores_`` (its weights are kept); None without
        ``early_stopping``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn_ml3 import MetaLossClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MetaLossClassifier(random_state=0)
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    >>> clf.predict_proba(X[:1]).shape
    (1, 3)
    """

    _loss_kind = "classification"
    _builtin_losses = ("log_loss",)
    _parameter_constraints: dict = {
        **BaseMetaLoss._parameter_constraints,
        "loss": [StrOptions(set(_builtin_losses)), LearnedLoss],
    }

    def __init__(self, loss="log_loss", *, hidden_layer_sizes=(100,), activation="relu",
                 module=None, lr="auto", solver="auto", alpha=0.0, max_iter=200,
                 batch_size="auto", shuffle=True, tol=1e-4, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, warm_start=False,
                 random_state=None, device="cpu", verbose=0):
        super().__init__(
            loss, hidden_layer_sizes=hidden_layer_sizes, activation=activation, module=module,
            lr=lr, solver=solver, alpha=alpha, max_iter=max_iter, batch_size=batch_size,
            shuffle=shuffle, tol=tol, early_stopping=early_stopping,
            validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change,
            warm_start=warm_start, random_state=random_state, device=device, verbose=verbose,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train a freshly initialised network (unless ``warm_start``) on ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,)
            Class labels (any sortable labels: ints, strings, ...).
        sample_weight : array-like of shape (n_samples,), optional
            Per-sample weights of the loss (weighted mean in each mini-batch).

        Returns
        -------
        self : MetaLossClassifier
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, classes=None, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``X, y``, continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,)
            Class labels, all in ``classes``.
        classes : array-like of shape (n_classes,), optional
            Every class of the problem; required on the first call, since
            one batch need not contain them all.
        sample_weight : array-like of shape (n_samples,), optional
            Per-sample weights.

        Returns
        -------
        self : MetaLossClassifier
            The updated estimator.
        """
        return self._fit(X, y, sample_weight, classes=classes, incremental=True)

    def _fit(self, X, y, sample_weight, classes, incremental):
        first = not (incremental and hasattr(self, "module_"))
        X, y = validate_data(self, X, y, reset=first, dtype=np.float64)
        if y.dtype == object and len({isinstance(label, str) for label in y}) > 1:
            raise ValueError("y mixes string and numeric class labels (e.g. 'a' and 1); "
                             "convert them to one type first, e.g. y.astype(str)")
        check_classification_targets(y)
        if incremental:
            if first and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            if classes is not None:
                classes = np.unique(classes)
                if not first and not np.array_equal(classes, self.classes_):
                    raise ValueError(f"classes={classes} differs from the classes of the "
                                     f"first partial_fit call, {self.classes_}")
        if first:
            classes_ = np.unique(y) if classes is None else classes
            if len(classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes; got only one "
                    f"class: {classes_}"
                )
        else:
            classes_ = self.classes_
        unknown = np.setdiff1d(y, classes_)
        if len(unknown):
            raise ValueError(f"y contains labels {unknown} not in classes {classes_}")
        loss = self._resolved_loss()
        self.classes_ = classes_
        encoded = torch.as_tensor(np.searchsorted(classes_, y))
        onehot = torch.nn.functional.one_hot(encoded, len(classes_)).float()
        return self._train(loss, self._features32(X), onehot, self._weights(sample_weight, X),
                           len(classes_), incremental=incremental)

    @staticmethod
    def _stratify(onehot):
        return onehot.argmax(1).numpy()

    @staticmethod
    def _score_outputs(logits, onehot, sample_weight) -> float:
        return accuracy_score(onehot.argmax(1), logits.argmax(1), sample_weight=sample_weight)

    @staticmethod
    def _per_sample_loss(logits, onehot, loss_fn):
        if loss_fn is None:
            return -(onehot * torch.log_softmax(logits, dim=-1)).sum(-1)
        return loss_fn.per_sample(torch.softmax(logits, dim=-1), onehot)

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._forward64(X)

    def decision_function(self, X):
        """Confidence scores (float64 logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, the log-odds of ``classes_[1]`` (positive means
            ``classes_[1]``); otherwise one logit per class.
        """
        logits = self._logits(X)
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Softmax of the logits, columns ordered as ``classes_``.
        """
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-softmax of the logits.
        """
        return log_softmax(self._logits(X), axis=1)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            The most probable class of each sample.
        """
        logits = self._logits(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]
