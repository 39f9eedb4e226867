"""The fit loop and parameters shared by MetaLossRegressor and MetaLossClassifier."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import _check_sample_weight

from .._utils import build_seeded, check_device, seed_from
from ..learned_loss import LearnedLoss
from ..meta.optim import SOLVERS, torch_optimizer
from ..networks import ACTIVATIONS, make_mlp

#: Learning rate of ``lr="auto"`` for the hand-written losses (Adam's usual default).
DEFAULT_LR = 1e-3
#: Solver of ``solver="auto"`` for the hand-written losses and losses never meta-trained.
DEFAULT_SOLVER = "adam"
#: ``lr`` this many times larger or smaller than the meta-training lr warns.
LR_WARN_FACTOR = 10.0
#: A batch this many times larger or smaller than the meta-training batch warns.
BATCH_WARN_FACTOR = 4.0
#: Frames between a warning in this module and the caller of ``fit``:
#: _warn_outside_training / check_compatible, _train / _resolved_loss, _fit, fit, _fit_context.
_USER_STACKLEVEL = 6


class BaseMetaLoss(BaseEstimator):
    """Shared machinery; not for direct use.

    Subclasses define ``_loss_kind`` ("regression" / "classification"),
    ``_builtin_losses`` (the first is the default), ``_per_sample_loss``,
    ``_score_outputs`` (the early-stopping score) and ``_stratify``.
    """

    _loss_kind: str
    _builtin_losses: tuple[str, ...]

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "module": [callable, None],
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "solver": [StrOptions({"auto", *SOLVERS})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "shuffle": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "verbose": ["verbose"],
    }

    def __init__(self, loss, *, hidden_layer_sizes=(100,), activation="relu", module=None,
                 lr="auto", solver="auto", alpha=0.0, max_iter=200, batch_size="auto",
                 shuffle=True, tol=1e-4, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, warm_start=False, random_state=None, device="cpu",
                 verbose=0):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.module = module
        self.lr = lr
        self.solver = solver
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------ optimizee
    def _hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        if any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in sizes):
            raise InvalidParameterError(
                "hidden_layer_sizes must be a positive int or a sequence of positive ints, got "
                f"{self.hidden_layer_sizes!r}"
            )
        return tuple(int(s) for s in sizes)

    def _module_factory(self, n_features: int, n_outputs: int) -> torch.nn.Module:
        """Build the (untrained) optimizee for ``n_features`` inputs and ``n_outputs`` outputs.

        This is the contract with the meta-training engine, which builds its
        optimizees through the estimator given to ``LearnedLoss.meta_fit``.
        """
        if self.module is None:
            return make_mlp(n_features, self._hidden_sizes(), n_outputs, self.activation)
        if isinstance(self.module, torch.nn.Module) or not callable(self.module):
            raise TypeError(
                "module must be a torch.nn.Module class or a factory "
                "module(n_features, n_outputs) -> nn.Module (e.g. functools.partial), not "
                f"{type(self.module).__name__}: each fit builds a fresh network"
            )
        net = self.module(int(n_features), int(n_outputs))
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"module(n_features, n_outputs) must return a torch.nn.Module, got "
                            f"{type(net).__name__}")
        return net

    # ----------------------------------------------------------- resolution
    def _resolved_loss(self):
        """The loss parameter checked: a builtin name or a compatible LearnedLoss."""
        if isinstance(self.loss, LearnedLoss):
            self.loss.check_compatible(self._loss_kind, stacklevel=_USER_STACKLEVEL)
        return self.loss

    def _resolved_solver(self, loss) -> str:
        """``solver="auto"``: the meta-training optimizer of a learned loss, else Adam."""
        if self.solver != "auto":
            return self.solver
        if isinstance(loss, LearnedLoss):
            return loss.meta_info_.get("inner_optimizer", DEFAULT_SOLVER)
        return DEFAULT_SOLVER

    def _resolved_lr(self, loss) -> float:
        """``lr="auto"``: the meta-training lr of a learned loss, else :data:`DEFAULT_LR`."""
        if self.lr != "auto":
            return float(self.lr)
        if isinstance(loss, LearnedLoss) and "inner_lr" in loss.meta_info_:
            return float(loss.meta_info_["inner_lr"])
        return DEFAULT_LR

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size is None:
            return n_samples
        if self.batch_size == "auto":
            return min(200, n_samples)
        return min(int(self.batch_size), n_samples)

    def _warn_outside_training(self, loss, solver, lr, batch, n_samples):
        """Warn when a learned loss is used far from how it was meta-trained."""
        if not isinstance(loss, LearnedLoss) or not loss.meta_info_:
            return
        info = loss.meta_info_
        warnings_ = []
        trained_solver = info.get("inner_optimizer")
        if trained_solver and trained_solver != solver:
            warnings_.append(f"this loss was meta-trained with the {trained_solver!r} inner "
                             f"optimizer; training with solver={solver!r} may behave "
                             "differently (solver='auto' uses the meta-training optimizer)")
        trained_lr = info.get("inner_lr")
        if trained_lr and not (trained_lr / LR_WARN_FACTOR <= lr <= trained_lr * LR_WARN_FACTOR):
            warnings_.append(f"this loss was meta-trained with lr={trained_lr:g}; lr={lr:g} is "
                             f"more than {LR_WARN_FACTOR:g}x away (lr='auto' uses the "
                             "meta-training lr)")
        problem = info.get("problem", {})
        trained_batch = problem.get("inner_batch_size") or problem.get("batch_size")
        if trained_batch and not (trained_batch / BATCH_WARN_FACTOR <= batch
                                  <= trained_batch * BATCH_WARN_FACTOR):
            warnings_.append(f"this loss was meta-trained on batches of {trained_batch} samples; "
                             f"training uses batches of {batch}, more than "
                             f"{BATCH_WARN_FACTOR:g}x away (set batch_size)")
        elif (not trained_batch and problem.get("type") == "supervised"
              and batch < n_samples):
            warnings_.append(f"this loss was meta-trained full-batch; training uses mini-batches "
                             f"of {batch} of {n_samples} samples (batch_size=None trains "
                             "full-batch)")
        for message in warnings_:
            warnings.warn(message, UserWarning, stacklevel=_USER_STACKLEVEL)

    # ------------------------------------------------------------- fit loop
    def _train(self, loss, X, targets, sample_weight, n_outputs, *, incremental):
        """Train ``self.module_`` on float32 tensors; the one fit loop of both estimators.

        ``loss`` is the resolved loss parameter. ``targets`` is a float tensor
        already in the loss's space (scaled regression targets, or one-hot
        classes). ``sample_weight`` is a float tensor of shape (n_samples,).
        ``fit`` runs up to ``max_iter`` epochs with scikit-learn's stopping
        rules; ``partial_fit`` (``incremental``) runs one epoch.
        """
        device = check_device(self.device)
        solver, lr = self._resolved_solver(loss), self._resolved_lr(loss)
        fresh = not (incremental or self.warm_start) or not hasattr(self, "module_")
        if fresh:
            self._rng = check_random_state(self.random_state)
            seed = seed_from(self._rng)
            self.module_ = build_seeded(
                lambda: self._module_factory(X.shape[1], n_outputs), seed).to(device)
            self.loss_curve_ = []
            self.n_iter_ = 0
            self._optimizer = None
        early_stopping = self.early_stopping and not incremental  # as MLP*: fit only
        if not incremental or not hasattr(self, "_no_improvement_count"):
            self._reset_stopping(early_stopping)
        if early_stopping:
            train, val = train_test_split(np.arange(len(X)), test_size=self.validation_fraction,
                                          random_state=self._rng, stratify=self._stratify(targets))
            X_val, y_val, w_val = X[val], targets[val].numpy(), sample_weight[val].numpy()
            X, targets, sample_weight = X[train], targets[train], sample_weight[train]
        n = X.shape[0]
        batch = self._batch_size(n)
        if fresh:
            self._warn_outside_training(loss, solver, lr, batch, n)
        if getattr(self, "_optimizer", None) is None or not incremental:
            self._optimizer = torch_optimizer(solver, self.module_.parameters(), lr)
        loss_fn = self._frozen_loss(loss, device)
        X, targets, weights = X.to(device), targets.to(device), sample_weight.to(device)
        gen = torch.Generator().manual_seed(seed_from(self._rng))
        # scikit-learn's L2 term: weights only (no biases), 0.5 * alpha * ||W||^2 / batch
        penalised = [p for p in self.module_.parameters() if p.dim() > 1] if self.alpha else []
        # equal weights (none given, or all ones) take the plain mean: same numbers, fewer ops
        uniform = bool((weights == 1).all())
        n_epochs = 1 if incremental else int(self.max_iter)
        for _ in range(n_epochs):
            self.module_.train()
            if self.shuffle:  # one gather per epoch; the batches are then views
                order = torch.randperm(n, generator=gen).to(device)
                X_epoch, t_epoch, w_epoch = X[order], targets[order], weights[order]
            else:
                X_epoch, t_epoch, w_epoch = X, targets, weights
            total = 0.0
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                per_sample = self._per_sample_loss(self.module_(X_epoch[start:stop]),
                                                   t_epoch[start:stop], loss_fn)
                if uniform:
                    value = per_sample.mean()
                else:
                    w = w_epoch[start:stop]
                    # weighted batch mean; a batch of zero weights gives a zero loss, not NaN
                    value = (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
                if penalised:
                    value = value + 0.5 * self.alpha * sum(
                        (p * p).sum() for p in penalised) / (stop - start)
                self._optimizer.zero_grad(set_to_none=True)
                value.backward()
                self._optimizer.step()
                total += float(value.detach()) * (stop - start)
            epoch_loss = total / n
            if not np.isfinite(epoch_loss):
                raise FloatingPointError(
                    f"training diverged at iteration {self.n_iter_ + 1} (loss {epoch_loss}); "
                    "lower lr or scale the inputs"
                )
            self.loss_curve_.append(epoch_loss)
            self.n_iter_ += 1
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {epoch_loss:.6f}")
            if early_stopping:
                self._record_validation(self._validation_score(X_val, y_val, w_val))
            else:
                self._record_loss(epoch_loss)
            if not incremental and self._no_improvement_count > self.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if early_stopping else "Training loss"
                    print(f"{what} did not improve more than tol={self.tol:f} for "
                          f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                break
        else:
            if not incremental:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                    "optimization hasn't converged yet.", ConvergenceWarning,
                    stacklevel=_USER_STACKLEVEL - 1)
        if early_stopping:
            self.module_.load_state_dict(self._best_state)  # the best epoch's weights
            del self._best_state
        self.module_.eval()
        return self

    def _reset_stopping(self, early_stopping: bool) -> None:
        """The state of scikit-learn's stopping rules, as ``MLPRegressor`` names it."""
        self._no_improvement_count = 0
        self.best_loss_ = None if early_stopping else np.inf
        self.validation_scores_ = [] if early_stopping else None
        self.best_validation_score_ = -np.inf if early_stopping else None

    def _record_loss(self, epoch_loss: float) -> None:
        if epoch_loss > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        self.best_loss_ = min(self.best_loss_, epoch_loss)

    def _record_validation(self, score: float) -> None:
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_state = copy.deepcopy(self.module_.state_dict())

    def _validation_score(self, X_val, y_val, w_val) -> float:
        """The estimator's ``score`` on the held-out split, from the current network."""
        self.module_.eval()
        device = next(self.module_.parameters()).device
        with torch.no_grad():
            out = self.module_(X_val.to(device)).double().cpu().numpy()
        return float(self._score_outputs(out, y_val, w_val))

    @staticmethod
    def _frozen_loss(loss, device):
        """A private, gradient-free copy of a learned loss on ``device`` (None for builtins).

        Training never writes gradients into (or moves) the user's loss, so
        one LearnedLoss can serve many estimators and parallel fits.
        """
        if not isinstance(loss, LearnedLoss):
            return None
        frozen = copy.deepcopy(loss).to(device)
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen

    def _forward64(self, X: np.ndarray) -> np.ndarray:
        """Predict in float64 on the CPU: results do not depend on batch composition."""
        module = self.module_
        if next(module.parameters()).device.type != "cpu":
            module = copy.deepcopy(module).cpu()
        params = {k: v.detach().to(torch.float64) for k, v in module.state_dict().items()}
        with torch.no_grad():
            out = torch.func.functional_call(
                module, params, (torch.as_tensor(np.array(X, dtype=np.float64)),))
        return out.numpy()

    @staticmethod
    def _weights(sample_weight, X) -> torch.Tensor:
        """Sample weights as a float32 tensor; ones when None (one code path for both)."""
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        return torch.as_tensor(sw, dtype=torch.float32)

    @staticmethod
    def _as_float32(X) -> torch.Tensor:
        return torch.as_tensor(np.array(X, dtype=np.float32, copy=True))

    @classmethod
    def _features32(cls, X) -> torch.Tensor:
        """``X`` as the float32 tensor training runs on; values beyond float32's range
        (finite in float64, so scikit-learn's checks pass them) are refused."""
        X32 = cls._as_float32(X)
        if not torch.isfinite(X32).all():
            raise ValueError(f"X has values beyond float32's range (max |x| = "
                             f"{np.abs(X).max():.3g}); training runs in float32: scale the "
                             "features (e.g. StandardScaler)")
        return X32

    # -------------------------------------------------------------- pickling
    def __getstate__(self):
        # a copy: on Python >= 3.11 the parent hands back ``self.__dict__`` itself,
        # and pickling must leave the fitted estimator (its optimizer, its device) alone
        state = dict(super().__getstate__())
        state.pop("_optimizer", None)  # rebuilt on the next partial_fit
        if "module_" in state:
            # CPU tensors: estimators trained on a GPU load on CPU-only machines
            state["module_"] = copy.deepcopy(state["module_"]).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._optimizer = None
