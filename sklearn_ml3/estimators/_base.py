"""The fit loop and parameters shared by MetaLossRegressor and MetaLossClassifier."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight

from .._utils import build_seeded, seed_from
from ..learned_loss import LearnedLoss
from ..meta.optim import SOLVERS, torch_optimizer
from ..networks import make_mlp

DEFAULT_LR = 1e-3


class BaseMetaLoss(BaseEstimator):
    """Shared machinery; not for direct use.

    Subclasses define ``_loss_kind`` ("regression" / "classification"),
    ``_builtin_losses`` and ``_batch_loss``.
    """

    _loss_kind: str
    _builtin_losses: tuple[str, ...]

    def __init__(self, loss=None, *, hidden_layer_sizes=(100,), activation="relu", module=None,
                 lr="auto", solver="sgd", max_iter=200, batch_size="auto", shuffle=True,
                 warm_start=False, random_state=None, device="cpu", verbose=0):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.module = module
        self.lr = lr
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------ optimizee
    def _module_factory(self, n_features: int, n_outputs: int) -> torch.nn.Module:
        """Build the (untrained) optimizee for ``n_features`` inputs and ``n_outputs`` outputs."""
        if self.module is not None:
            return self.module(n_features, n_outputs)
        return make_mlp(n_features, tuple(self.hidden_layer_sizes), n_outputs, self.activation)

    # ----------------------------------------------------------- resolution
    def _resolved_loss(self):
        loss = self._default_loss() if self.loss is None else self.loss
        if isinstance(loss, str):
            if loss not in self._builtin_losses:
                raise ValueError(
                    f"loss must be a LearnedLoss or one of {self._builtin_losses}, got {loss!r}"
                )
            return loss
        if not isinstance(loss, LearnedLoss):
            raise TypeError(
                f"loss must be a LearnedLoss or one of {self._builtin_losses}, "
                f"got {type(loss).__name__}"
            )
        loss.check_compatible(self._loss_kind, stacklevel=4)
        return loss

    def _default_loss(self) -> str:
        return self._builtin_losses[0]

    def _resolved_lr(self, loss) -> float:
        if self.lr == "auto":
            if isinstance(loss, LearnedLoss) and "inner_lr" in loss.meta_info_:
                return float(loss.meta_info_["inner_lr"])
            return DEFAULT_LR
        lr = float(self.lr)
        if not lr > 0:
            raise ValueError(f"lr must be positive or 'auto', got {self.lr!r}")
        return lr

    def _check_params(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter!r}")
        if self.batch_size != "auto" and (self.batch_size is not None and
                                          int(self.batch_size) < 1):
            raise ValueError(f"batch_size must be 'auto', None or >= 1, got {self.batch_size!r}")

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size is None:
            return n_samples
        if self.batch_size == "auto":
            return min(200, n_samples)
        return min(int(self.batch_size), n_samples)

    # ------------------------------------------------------------- fit loop
    def _fit_torch(self, X, targets, sample_weight, n_outputs, *, incremental, n_epochs):
        """Train ``self.module_`` on float32 tensors; records ``loss_curve_`` and ``n_iter_``.

        ``targets`` is a float tensor already in the loss's space (scaled
        regression targets, or one-hot classes).
        """
        self._check_params()
        loss = self._resolved_loss()
        device = torch.device(self.device)
        fresh = not (incremental or self.warm_start) or not hasattr(self, "module_")
        if fresh:
            self._rng = check_random_state(self.random_state)
            seed = seed_from(self._rng)
            self.module_ = build_seeded(
                lambda: self._module_factory(X.shape[1], n_outputs), seed).to(device)
            self.loss_curve_ = []
            self.n_iter_ = 0
            self._optimizer = None
        lr = self._resolved_lr(loss)
        if self._optimizer is None or not incremental:
            self._optimizer = torch_optimizer(self.solver, self.module_.parameters(), lr)
        loss_fn = loss.to(device) if isinstance(loss, LearnedLoss) else None
        X = X.to(device)
        targets = targets.to(device)
        weights = None if sample_weight is None else sample_weight.to(device)
        gen = torch.Generator().manual_seed(seed_from(self._rng))
        n = X.shape[0]
        batch = self._batch_size(n)
        self.module_.train()
        for _ in range(n_epochs):
            order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start:start + batch].to(device)
                out = self.module_(X[idx])
                w = None if weights is None else weights[idx]
                value = self._batch_loss(out, targets[idx], w, loss_fn)
                self._optimizer.zero_grad(set_to_none=True)
                value.backward()
                self._optimizer.step()
                total += float(value.detach()) * len(idx)
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
        self.module_.eval()
        return self

    def _forward64(self, X: np.ndarray) -> np.ndarray:
        """Predict in float64 on the CPU: results do not depend on batch composition."""
        params = {k: v.detach().to("cpu", torch.float64)
                  for k, v in self.module_.state_dict().items()}
        module = self.module_ if next(self.module_.parameters()).device.type == "cpu" \
            else copy.deepcopy(self.module_).cpu()
        with torch.no_grad():
            out = torch.func.functional_call(module, params, (torch.as_tensor(X, dtype=torch.float64),))
        return out.numpy()

    @staticmethod
    def _weights(sample_weight, X):
        if sample_weight is None:
            return None
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return torch.as_tensor(sw, dtype=torch.float32)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_optimizer", None)  # rebuilt on the next partial_fit
        if "module_" in state:
            module = copy.deepcopy(state["module_"]).cpu()  # loads on CPU-only machines
            state["module_"] = module
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._optimizer = None

    def _warn_outside_training(self, loss):
        if not isinstance(loss, LearnedLoss) or not loss.meta_info_:
            return
        trained_solver = loss.meta_info_.get("inner_optimizer")
        if trained_solver and trained_solver != self.solver:
            warnings.warn(
                f"this loss was meta-trained with the {trained_solver!r} inner optimizer; "
                f"training with solver={self.solver!r} may behave differently",
                UserWarning, stacklevel=3,
            )
