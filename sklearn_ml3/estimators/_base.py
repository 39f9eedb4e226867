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
from ..networks import ACTIVATIONS, make_mlp

#: Learning rate of ``lr="auto"`` for the hand-written losses.
DEFAULT_LR = 1e-3
#: ``lr`` this many times larger or smaller than the meta-training lr warns.
LR_WARN_FACTOR = 10.0


class BaseMetaLoss(BaseEstimator):
    """Shared machinery; not for direct use.

    Subclasses define ``_loss_kind`` ("regression" / "classification"),
    ``_builtin_losses`` (the first is the default) and ``_per_sample_loss``.
    """

    _loss_kind: str
    _builtin_losses: tuple[str, ...]

    def __init__(self, loss, *, hidden_layer_sizes=(100,), activation="relu", module=None,
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
        """Build the (untrained) optimizee for ``n_features`` inputs and ``n_outputs`` outputs.

        This is the contract with the meta-training engine, which builds its
        optimizees through the estimator given to ``LearnedLoss.meta_fit``.
        """
        if self.module is None:
            if self.activation not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, "
                                 f"got {self.activation!r}")
            return make_mlp(n_features, tuple(int(h) for h in self.hidden_layer_sizes),
                            n_outputs, self.activation)
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
        loss = self.loss
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
        loss.check_compatible(self._loss_kind, stacklevel=5)
        return loss

    def _resolved_lr(self, loss) -> float:
        if isinstance(self.lr, str):
            if self.lr != "auto":
                raise ValueError(f"lr must be a positive float or 'auto', got {self.lr!r}")
            if isinstance(loss, LearnedLoss) and "inner_lr" in loss.meta_info_:
                return float(loss.meta_info_["inner_lr"])
            return DEFAULT_LR
        lr = float(self.lr)
        if not lr > 0:
            raise ValueError(f"lr must be a positive float or 'auto', got {self.lr!r}")
        return lr

    def _check_params(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter!r}")
        if self.batch_size not in ("auto", None) and int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be 'auto', None or >= 1, got {self.batch_size!r}")

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size is None:
            return n_samples
        if self.batch_size == "auto":
            return min(200, n_samples)
        return min(int(self.batch_size), n_samples)

    def _warn_outside_training(self, loss, lr):
        """Warn when a learned loss is used far from how it was meta-trained."""
        if not isinstance(loss, LearnedLoss) or not loss.meta_info_:
            return
        info = loss.meta_info_
        trained_solver = info.get("inner_optimizer")
        if trained_solver and trained_solver != self.solver:
            warnings.warn(
                f"this loss was meta-trained with the {trained_solver!r} inner optimizer; "
                f"training with solver={self.solver!r} may behave differently",
                UserWarning, stacklevel=4,
            )
        trained_lr = info.get("inner_lr")
        if trained_lr and not (trained_lr / LR_WARN_FACTOR <= lr <= trained_lr * LR_WARN_FACTOR):
            warnings.warn(
                f"this loss was meta-trained with lr={trained_lr:g}; lr={lr:g} is more than "
                f"{LR_WARN_FACTOR:g}x away (lr='auto' uses the meta-training lr)",
                UserWarning, stacklevel=4,
            )

    # ------------------------------------------------------------- fit loop
    def _fit_torch(self, X, targets, sample_weight, n_outputs, *, incremental, n_epochs):
        """Train ``self.module_`` on float32 tensors; records ``loss_curve_`` and ``n_iter_``.

        ``targets`` is a float tensor already in the loss's space (scaled
        regression targets, or one-hot classes). ``sample_weight`` is a
        float tensor of shape (n_samples,).
        """
        self._check_params()
        loss = self._resolved_loss()
        lr = self._resolved_lr(loss)
        device = torch.device(self.device)
        fresh = not (incremental or self.warm_start) or not hasattr(self, "module_")
        if fresh:
            self._warn_outside_training(loss, lr)
            self._rng = check_random_state(self.random_state)
            seed = seed_from(self._rng)
            self.module_ = build_seeded(
                lambda: self._module_factory(X.shape[1], n_outputs), seed).to(device)
            self.loss_curve_ = []
            self.n_iter_ = 0
            self._optimizer = None
        if getattr(self, "_optimizer", None) is None or not incremental:
            self._optimizer = torch_optimizer(self.solver, self.module_.parameters(), lr)
        loss_fn = self._frozen_loss(loss, device)
        X, targets, weights = X.to(device), targets.to(device), sample_weight.to(device)
        gen = torch.Generator().manual_seed(seed_from(self._rng))
        n = X.shape[0]
        batch = self._batch_size(n)
        self.module_.train()
        for _ in range(n_epochs):
            order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
            total = 0.0
            for start in range(0, n, batch):
                idx = order[start:start + batch].to(device)
                per_sample = self._per_sample_loss(self.module_(X[idx]), targets[idx], loss_fn)
                w = weights[idx]
                # weighted batch mean; a batch of zero weights gives a zero loss, not NaN
                value = (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
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
