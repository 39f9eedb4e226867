"""The :class:`LearnedLoss` artifact: a meta-loss network plus how it was meta-trained."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ._artifact import (
    CONFIG_FIELDS,
    HISTORY_KEY,
    INPUT_KINDS,
    STRUCTURE_KEYS,
    artifact_metadata,
    check_config,
    read_artifact,
)
from ._utils import atomic_write, torch_generator
from .networks import (
    ClassSharedLossNet,
    FeedbackLossNet,
    LearnedRateLossNet,
    PointwiseLossNet,
    QuadraticLossNet,
    ScoreWeightedLossNet,
)

REDUCTIONS = ("mean", "sum", "none")


class TargetScaler(NamedTuple):
    """An affine map of regression targets: ``transform(y) = (y - shift) / scale``.

    Built by :meth:`LearnedLoss.target_scaler` (the scaling a loss was
    meta-trained with) and used the same way by
    :class:`~sklearn_ml3.MetaLossRegressor`. Works on numpy arrays and torch
    tensors alike.
    """

    shift: Any
    scale: Any

    @classmethod
    def fit(cls, y, scaling: str | None) -> TargetScaler:
        """``"standard"``: per-column mean and (population) std of ``y``; None: identity."""
        if scaling not in (None, "standard"):
            raise ValueError(f"target scaling must be None or 'standard', got {scaling!r}")
        if isinstance(y, torch.Tensor):
            y2 = y.reshape(len(y), -1)
            if scaling is None:
                return cls(torch.zeros_like(y2[0]), torch.ones_like(y2[0]))
            return cls(y2.mean(0), y2.std(0, correction=0).clamp_min(1e-8))
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if scaling is None:
            return cls(np.zeros(y2.shape[1]), np.ones(y2.shape[1]))
        return cls(y2.mean(axis=0), np.maximum(y2.std(axis=0), 1e-8))

    def _like(self, y):
        """Shift and scale shaped to broadcast against ``y`` (1-D targets use column 0)."""
        shift, scale = self.shift, self.scale
        if isinstance(y, torch.Tensor):
            shift, scale = (torch.as_tensor(v, dtype=y.dtype, device=y.device)
                            for v in (shift, scale))
        return (shift[0], scale[0]) if y.ndim == 1 else (shift, scale)

    def transform(self, y):
        """Targets as the loss saw them during meta-training."""
        shift, scale = self._like(y)
        return (y - shift) / scale

    def inverse_transform(self, y_scaled):
        """Predictions made in the scaled space, back in the units of ``y``."""
        shift, scale = self._like(y_scaled)
        return y_scaled * scale + shift


def _checked_structure(structure: dict) -> dict:
    """``structure`` with an int ``score_column`` and lists of int columns, or a ValueError."""
    try:
        return {k: int(v) if k == "score_column" else [int(i) for i in v]
                for k, v in structure.items()}
    except (TypeError, ValueError):
        raise ValueError("structure columns must be an integer 'score_column' and lists of "
                         f"integer indices, got {structure!r}") from None


class LearnedLoss(torch.nn.Module):
    """A trainable loss function ``M_phi`` (ML3, Bechtle et al. 2020).

    A small network maps per-sample inputs (a prediction and its target, or
    arbitrary features) to a non-negative loss. It is meta-trained with
    :meth:`meta_fit` so that gradient steps on it train models well, and then
    used like any torch loss: ``loss(y_pred, y_true)`` returns a
    differentiable scalar, and :class:`~sklearn_ml3.MetaLossRegressor` /
    :class:`~sklearn_ml3.MetaLossClassifier` accept it as ``loss=``.

    It is a ``torch.nn.Module``: as an attribute of a model it is registered
    as a submodule (``state_dict``, ``.to()``). Its parameters are frozen
    (``requires_grad=False``) except while :func:`~sklearn_ml3.meta.meta_train`
    trains them, so ``backward()`` in a training loop leaves them alone;
    ``loss.requires_grad_(True)`` unfreezes them for hand-written meta-gradients.

    Parameters
    ----------
    kind : {"regression", "classification", "features"}, default="regression"
        What the loss reads.

        - ``"regression"``: ``loss(y_pred, y_true, *extra)``; the network
          sees ``(y_pred_j, y_true_j, *extra)`` for each output ``j``.
        - ``"classification"``: ``loss(proba, y_onehot)``; one network is
          applied to each class's ``(p_k, y_k)`` pair and summed over
          classes, so the loss serves any number of classes.
        - ``"features"``: ``loss(*tensors)``; the tensors are concatenated
          along the last axis and must give ``n_inputs`` features per row
          (used for policies: state, action, log-probability, goal).
    hidden_layer_sizes : sequence of int, default=(50, 50)
        Hidden widths of the loss network.
    activation : {"relu", "elu", "tanh", "softplus", "identity"}, default="relu"
    bias : bool, default=False
        Whether the loss network's layers have biases.
    output : {"softplus", "none"}, default="softplus"
        Final non-linearity; Softplus keeps the loss non-negative.
    n_inputs : int, optional
        Number of features for ``kind="features"``.
    n_extra_inputs : int, default=0
        Extra per-sample inputs for ``kind="regression"`` (e.g. ``x``).
    learned_lr : bool, default=False
        Whether the loss also outputs a learning rate (the paper's model-based
        meta-loss "outputs a loss and a learning rate"). A second small
        network maps the inputs to a multiplier ``alpha > 0`` (1 before
        meta-training) and ``loss(...)`` returns ``alpha * mean loss``; the
        multiplier's inputs are detached, so a gradient step on the result is
        a step of size ``lr * alpha`` along the gradient of the loss itself.
        :meth:`learning_rate` returns ``alpha`` for given inputs.
    structure : dict, optional
        Only for ``kind="features"``: ``{"score_column": i}`` makes the loss
        ``-x[i] * f(x)`` (:class:`~sklearn_ml3.networks.ScoreWeightedLossNet`);
        with the log-probability column of a policy loss, ``f`` is a learned
        advantage and every update a weighted likelihood step.
        ``"action_columns"`` and ``"state_columns"`` (lists of indices) make
        ``f`` quadratic in the action columns around a learned target of the
        state columns. The two without ``"score_column"`` make the loss
        itself ``1/2 ||x[action_columns] - t(x[state_columns])||^2``
        (:class:`~sklearn_ml3.networks.QuadraticLossNet`), a learned
        controller for deterministic policies. With ``"error_columns"``
        added, the loss is ``-x[action_columns] . G(x[state_columns])
        x[error_columns]`` (:class:`~sklearn_ml3.networks.FeedbackLossNet`),
        a learned feedback gain ``G`` on an error. ``output`` is not used
        with a structure.
    random_state : int, numpy Generator or None
        Seeds the initial network weights and, unless overridden, the
        meta-training run.
    reduction : {"mean", "sum", "none"}, default="mean"
        What ``loss(...)`` returns, as in torch's losses: the (weighted) mean
        over samples, their sum, or the per-sample losses. A usage setting,
        not stored in saved files; meta-training needs "mean".

    Attributes
    ----------
    network_ : torch.nn.Module
        The loss network (built at construction, changed by meta-training).
    meta_history_ : ndarray of shape (n_meta_iter,)
        Task loss per meta-iteration; present after :meth:`meta_fit`.
    meta_info_ : dict
        How the loss was meta-trained: input kind, inner optimizer, lr,
        inner steps, unroll, target scaling, library and torch versions.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ml3 import LearnedLoss
    >>> loss = LearnedLoss(random_state=0)
    >>> value = loss(torch.zeros(5), torch.ones(5))
    >>> value.shape
    torch.Size([])

    In a torch loop, apply the target scaling the loss was meta-trained with
    in one call (the identity for a loss meta-trained on raw targets):

    >>> y = 10 * torch.randn(20)
    >>> scaler = loss.target_scaler(y)
    >>> pred = torch.zeros(20, requires_grad=True)
    >>> loss(pred, scaler.transform(y)).backward()
    >>> y_pred = scaler.inverse_transform(pred.detach())
    """

    def __init__(
        self,
        kind: str = "regression",
        hidden_layer_sizes: Sequence[int] = (50, 50),
        activation: str = "relu",
        bias: bool = False,
        output: str = "softplus",
        n_inputs: int | None = None,
        n_extra_inputs: int = 0,
        learned_lr: bool = False,
        structure: dict | None = None,
        random_state=None,
        reduction: str = "mean",
    ):
        super().__init__()
        if kind not in INPUT_KINDS:
            raise ValueError(f"kind must be one of {INPUT_KINDS}, got {kind!r}")
        if kind == "features" and (n_inputs is None or int(n_inputs) < 1):
            raise ValueError("kind='features' needs n_inputs, the number of features per row")
        if kind != "features" and n_inputs is not None:
            raise ValueError(f"n_inputs is only used with kind='features', not kind={kind!r}")
        if kind != "regression" and n_extra_inputs:
            raise ValueError("n_extra_inputs is only used with kind='regression'")
        if structure is not None and kind != "features":
            raise ValueError("structure is only used with kind='features'")
        if structure is not None and (not isinstance(structure, dict)
                                      or set(structure) not in STRUCTURE_KEYS):
            raise ValueError("structure must be a dict with 'score_column', with "
                             "'action_columns' and 'state_columns', with those two and "
                             "'score_column' or 'error_columns', got "
                             f"{structure!r}")
        self.kind = kind
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)
        self.activation = activation
        self.bias = bool(bias)
        self.output = output
        self.n_inputs = None if n_inputs is None else int(n_inputs)
        self.n_extra_inputs = int(n_extra_inputs)
        self.learned_lr = bool(learned_lr)
        self.structure = None if structure is None else _checked_structure(structure)
        self.random_state = random_state
        self.reduction = _checked_reduction(reduction)
        self.meta_info_: dict[str, Any] = {}
        self._meta_training = False
        # an unseeded loss draws fresh entropy rather than the global torch seed
        seed_source = np.random.default_rng() if random_state is None else random_state
        self.network_ = self._build_network(torch_generator(seed_source))
        self.requires_grad_(False)

    # ------------------------------------------------------------------ network
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild an (untrained) loss of the same shape."""
        return {
            "kind": self.kind,
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "activation": self.activation,
            "bias": self.bias,
            "output": self.output,
            "n_inputs": self.n_inputs,
            "n_extra_inputs": self.n_extra_inputs,
            "learned_lr": self.learned_lr,
            "structure": self.structure,
        }

    def _build_network(self, generator: torch.Generator | None) -> torch.nn.Module:
        hidden, act = self.hidden_layer_sizes, self.activation
        with torch.random.fork_rng(devices=[]):  # torch's default init must not use the global RNG
            if self.kind == "classification":
                net = ClassSharedLossNet(hidden, act, self.bias, self.output)
            elif self.kind == "regression":
                net = PointwiseLossNet(2 + self.n_extra_inputs, hidden, act, self.bias,
                                       self.output)
            elif self.structure is not None and "error_columns" in self.structure:
                net = FeedbackLossNet(self.n_inputs, hidden_layer_sizes=hidden,
                                      activation=act, bias=self.bias, **self.structure)
            elif self.structure is not None and "score_column" not in self.structure:
                net = QuadraticLossNet(self.n_inputs, hidden_layer_sizes=hidden,
                                       activation=act, bias=self.bias, **self.structure)
            elif self.structure is not None:
                net = ScoreWeightedLossNet(self.n_inputs, hidden_layer_sizes=hidden,
                                           activation=act, bias=self.bias, **self.structure)
            else:
                net = PointwiseLossNet(self.n_inputs, hidden, act, self.bias, self.output)
            if self.learned_lr:
                width = {"classification": 2, "regression": 2 + self.n_extra_inputs}.get(
                    self.kind, self.n_inputs)
                net = LearnedRateLossNet(net, width, hidden, act)
        if generator is not None:
            with torch.no_grad():
                for module in net.modules():
                    if isinstance(module, torch.nn.Linear):
                        bound = 1.0 / module.in_features**0.5
                        module.weight.uniform_(-bound, bound, generator=generator)
                        if module.bias is not None:
                            module.bias.uniform_(-bound, bound, generator=generator)
            for module in net.modules():  # shapes that must start from a chosen point
                if hasattr(module, "finish_init"):
                    module.finish_init()
        return net

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters of the loss network."""
        return sum(p.numel() for p in self.network_.parameters())

    @property
    def is_meta_trained(self) -> bool:
        """Whether :meth:`meta_fit` has run (or a meta-trained loss was loaded)."""
        return hasattr(self, "meta_history_")

    @property
    def device(self) -> torch.device:
        return next(self.network_.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network_.parameters()).dtype

    def _set_meta_training(self, active: bool) -> None:
        """Unfreeze ``phi`` while the engine meta-trains it, freeze it afterwards.

        Meta-training feeds the loss inputs it builds itself (under
        ``torch.func`` transforms, which allow no data-dependent checks), so
        the input range check is skipped meanwhile.
        """
        if active and self.reduction != "mean":
            raise ValueError(f"meta-training needs reduction='mean', this loss has "
                             f"reduction={self.reduction!r}")
        self._meta_training = bool(active)
        self.requires_grad_(bool(active))

    def target_scaler(self, y) -> TargetScaler:
        """The target scaling this loss was meta-trained with, fitted on ``y``.

        ``scaler.transform(y)`` gives targets in the range the loss knows;
        ``scaler.inverse_transform(pred)`` maps a model's predictions back.
        The identity for a loss meta-trained on raw targets (or not at all).

        Parameters
        ----------
        y : tensor or ndarray of shape (n_samples,) or (n_samples, n_targets)
            Training targets (fit the scaler on training data only).

        Returns
        -------
        scaler : TargetScaler
        """
        if self.kind != "regression":
            raise ValueError(f"target scaling applies to regression losses, not kind={self.kind!r}")
        return TargetScaler.fit(y, self.meta_info_.get("problem", {}).get("target_scaling"))

    # --------------------------------------------------------------- evaluate
    def features(self, *inputs: torch.Tensor, from_logits: bool = False) -> torch.Tensor:
        """Arrange raw inputs into the network's per-row feature tensor."""
        dtype = self.dtype
        if self.kind == "features":
            tensors = [torch.as_tensor(t).to(dtype) for t in inputs]
            tensors = [t.unsqueeze(-1) if t.dim() == 1 else t for t in tensors]
            feats = torch.cat(tensors, dim=-1)
            if feats.shape[-1] != self.n_inputs:
                raise ValueError(
                    f"this loss reads {self.n_inputs} features per row, got {feats.shape[-1]} "
                    f"from inputs of shapes {[tuple(t.shape) for t in tensors]}"
                )
            return feats
        if self.kind == "classification":
            if len(inputs) != 2:
                raise ValueError("a classification loss is called as loss(proba, y_onehot)")
            proba, target = (torch.as_tensor(t).to(dtype) for t in inputs)
            if proba.shape != target.shape or proba.dim() < 2:
                raise ValueError(
                    "loss(proba, y_onehot) needs two arrays of shape (n_samples, n_classes), "
                    f"got {tuple(proba.shape)} and {tuple(target.shape)}"
                )
            if from_logits:
                proba = torch.softmax(proba, dim=-1)
            elif not self._meta_training:
                _check_probabilities(proba)
            return torch.stack([proba, target], dim=-1)
        if from_logits:
            raise ValueError("from_logits=True applies to classification losses only")
        # regression
        if len(inputs) != 2 + self.n_extra_inputs:
            raise ValueError(
                f"this regression loss is called as loss(y_pred, y_true"
                f"{', extra' * self.n_extra_inputs}), got {len(inputs)} arrays"
            )
        y_pred, y_true = (torch.as_tensor(t).to(dtype) for t in inputs[:2])
        if y_pred.dim() == 1:
            y_pred = y_pred.unsqueeze(-1)
        if y_true.dim() == 1:
            y_true = y_true.unsqueeze(-1)
        if y_pred.shape != y_true.shape:
            raise ValueError(
                f"y_pred and y_true must have the same shape, got {tuple(y_pred.shape)} "
                f"and {tuple(y_true.shape)}"
            )
        cols = [y_pred, y_true]
        for extra in inputs[2:]:
            extra = torch.as_tensor(extra).to(dtype)
            extra = extra.reshape(extra.shape[0], -1) if extra.dim() > 1 else extra.unsqueeze(-1)
            if extra.shape[-1] != 1:
                raise ValueError("each extra input must have one value per sample")
            cols.append(extra.expand_as(y_pred))
        return torch.stack(cols, dim=-1)

    def per_sample(self, *inputs: torch.Tensor, from_logits: bool = False) -> torch.Tensor:
        """Loss of each sample, shape ``(n_samples,)`` (without the learned rate)."""
        return self._per_sample(self.features(*inputs, from_logits=from_logits))

    def _per_sample(self, features: torch.Tensor) -> torch.Tensor:
        per_row = self.network_(features)
        if self.kind == "regression":
            per_row = per_row.mean(-1)  # average over output dimensions
        return per_row

    def forward(self, *inputs: torch.Tensor, sample_weight: torch.Tensor | None = None,
                from_logits: bool = False) -> torch.Tensor:
        """Differentiable loss of the inputs, reduced as ``reduction`` says.

        Parameters
        ----------
        *inputs : tensors
            ``(y_pred, y_true, *extra)`` for regression, ``(proba, y_onehot)``
            for classification (``proba`` in [0, 1], else a ValueError), the
            feature tensors for ``kind="features"``.
        sample_weight : tensor of shape (n_samples,), optional
            Weights: a weighted mean, a weighted sum, or weighted per-sample
            losses.
        from_logits : bool, default=False
            Classification only: the first input holds logits, and the loss
            applies the softmax the network was meta-trained behind.

        Returns
        -------
        loss : tensor
            A scalar for "mean" and "sum", shape ``(n_samples,)`` for "none".
            With ``learned_lr=True`` it is multiplied by :meth:`learning_rate`
            of the same inputs.
        """
        features = self.features(*inputs, from_logits=from_logits)
        value = self._per_sample(features)
        if sample_weight is not None:
            weight = torch.as_tensor(sample_weight, dtype=value.dtype, device=value.device)
            value = weight * value
        if self.reduction == "sum":
            value = value.sum()
        elif self.reduction == "mean":
            value = value.mean() if sample_weight is None else value.sum() / weight.sum()
        if self.learned_lr:
            value = value * torch.exp(self.network_.log_rate(features))
        return value

    def learning_rate(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The learning-rate multiplier ``alpha`` the loss outputs for these inputs.

        Always 1 for a loss built with ``learned_lr=False``. The optimizee's
        effective step size is ``lr * alpha``.
        """
        if not self.learned_lr:
            return torch.ones((), dtype=self.dtype, device=self.device)
        return torch.exp(self.network_.log_rate(self.features(*inputs)))

    # ------------------------------------------------------------ meta-train
    def meta_fit(self, tasks, estimator=None, **kwargs) -> LearnedLoss:
        """Meta-train the loss on ``tasks``.

        Parameters
        ----------
        tasks : list of arrays tuples, a task sampler, or a MetaProblem
            ``(X, y)`` or ``(X_train, y_train, X_val, y_val)`` tuples,
            :class:`~sklearn_ml3.tasks.Task` objects, an object with
            ``sample(rng) -> Task`` (e.g. :class:`~sklearn_ml3.tasks.SineTasks`),
            or any :class:`~sklearn_ml3.meta.MetaProblem` (RL tasks).
        estimator : MetaLossRegressor or MetaLossClassifier, optional
            Template of the model the loss will train: its architecture,
            ``lr`` and ``solver`` define the optimizee and inner optimizer.
        **kwargs
            Options of :func:`sklearn_ml3.meta.meta_train`: ``n_meta_iter``,
            ``inner_steps``, ``unroll``, ``tasks_per_iter``, ``meta_lr``,
            ``grad_clip``, ``vectorize``, ``checkpoint``, ``verbose``,
            ``random_state`` ...; and of the supervised problem:
            ``task_loss``, ``extra_loss``, ``beta``, ``gamma`` (shaping,
            ``L_T = beta * task_loss + gamma * extra_loss``),
            ``target_scaling``, ``batch_size``.

        Returns
        -------
        self : LearnedLoss

        Notes
        -----
        Under an initialised ``torch.distributed`` process group the tasks of
        each meta-iteration are split over the ranks, with the result of a
        single process (see :func:`~sklearn_ml3.meta.meta_train`).
        """
        from .meta import meta_train
        from .tasks import make_problem

        problem_keys = ("task_loss", "extra_loss", "beta", "gamma", "batch_size",
                        "target_scaling")
        problem_kwargs = {k: kwargs.pop(k) for k in problem_keys if k in kwargs}
        problem = make_problem(tasks, estimator=estimator, kind=self.kind, **problem_kwargs)
        if estimator is not None:
            solver = getattr(estimator, "solver", "auto")
            if solver != "auto":  # "auto" keeps the engine's default inner optimizer
                kwargs.setdefault("inner_optimizer", solver)
            lr = getattr(estimator, "lr", "auto")
            if lr != "auto":
                kwargs.setdefault("inner_lr", lr)
        kwargs.setdefault("random_state", self.random_state)
        meta_train(self, problem, **kwargs)
        return self

    def check_compatible(self, kind: str, *, stacklevel=3):
        """Raise if this loss cannot serve an estimator of ``kind``; warn on odd use.

        Parameters
        ----------
        kind : {"regression", "classification"}
            What the estimator needs.
        """
        if self.kind != kind:
            raise ValueError(
                f"this LearnedLoss was built for kind={self.kind!r} and cannot train a "
                f"{kind} model; meta-train a LearnedLoss(kind={kind!r}) instead"
            )
        if not self.is_meta_trained:
            warnings.warn(
                "this LearnedLoss has not been meta-trained (call meta_fit or load a saved "
                "loss); it is a random function", UserWarning, stacklevel=stacklevel,
            )

    # --------------------------------------------------------------- persist
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        state = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
        if self.is_meta_trained:
            state[HISTORY_KEY] = torch.as_tensor(np.asarray(self.meta_history_, dtype=np.float64))
        return state

    def save(self, path: str | os.PathLike) -> Path:
        """Write the loss to ``path`` (safetensors: tensors + JSON metadata, no code).

        The metadata holds a checksum of the tensors (names, dtypes, shapes,
        bytes) that :meth:`load` verifies. The file is written to a temporary
        name, flushed to disk with ``fsync`` and then moved into place
        (:func:`sklearn_ml3._utils.atomic_write`), so an existing file is
        never left half-written.
        """
        from safetensors.torch import save_file

        tensors = self._state_tensors()
        metadata = artifact_metadata(self.get_config(), self.meta_info_, self.dtype, tensors)
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> LearnedLoss:
        """Read a loss written by :meth:`save`. Executes no code from the file.

        The metadata is validated (allowed keys, types, sizes) against the
        file's tensor header before anything is allocated, then the tensors'
        checksum and finiteness are verified (files written before the
        checksum existed, format version 1, are verified except for the
        checksum). The loss keeps the dtype it was saved with.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is corrupt, truncated, altered, or not a sklearn-ml3
            loss; the message names the file and the field.
        """
        config, meta_info, tensors, dtype = read_artifact(path, cls._expected_shapes)
        return cls._from_parts(config, meta_info, tensors, device=device, dtype=dtype)

    @classmethod
    def _expected_shapes(cls, config) -> dict[str, tuple[int, ...]]:
        """Tensor shapes of the network ``config`` describes, computed without allocating."""
        with torch.device("meta"):
            network = cls._blank(config)._build_network(None)
        return {k: tuple(v.shape) for k, v in network.state_dict().items()}

    @classmethod
    def _blank(cls, config) -> LearnedLoss:
        """A loss with the (validated) config's attributes and no network yet."""
        config = check_config(config)
        loss = cls.__new__(cls)
        torch.nn.Module.__init__(loss)
        for key in CONFIG_FIELDS:
            setattr(loss, key, config[key])
        loss.random_state = None
        loss.reduction = "mean"  # a usage setting, not stored in files
        loss._meta_training = False
        loss.meta_info_ = {}
        return loss

    @classmethod
    def _from_parts(cls, config, meta_info, tensors, device="cpu", dtype=torch.float32):
        loss = cls._blank(config)
        loss.meta_info_ = dict(meta_info)
        loss.network_ = loss._build_network(None).to(dtype)
        tensors = dict(tensors)
        history = tensors.pop(HISTORY_KEY, None)
        try:
            loss.network_.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"stored weights do not match the stored loss shape: {exc}") from exc
        if history is not None:
            loss.meta_history_ = history.numpy()
        loss.requires_grad_(False)
        return loss.to(device)

    def __getstate__(self):
        # Plain CPU tensors: pickles load on machines without the device used to train.
        return {
            "config": self.get_config(),
            "meta_info": self.meta_info_,
            # numpy arrays pickle by content (torch tensors do not), so equal losses
            # hash equal under joblib.hash, as scikit-learn's parameter checks need
            "tensors": {k: v.numpy() for k, v in self._state_tensors().items()},
            "dtype": self.dtype,
            "random_state": self.random_state,
            "reduction": self.reduction,
        }

    def __setstate__(self, state):
        tensors = {k: torch.as_tensor(v) for k, v in state["tensors"].items()}
        loaded = self._from_parts(state["config"], state["meta_info"], tensors,
                                  dtype=state["dtype"])
        self.__dict__.update(loaded.__dict__)
        self.random_state = state["random_state"]
        self.reduction = state.get("reduction", "mean")  # pickles from before the option

    def __repr__(self) -> str:
        args = [f"kind={self.kind!r}", f"hidden_layer_sizes={self.hidden_layer_sizes}"]
        if self.activation != "relu":
            args.append(f"activation={self.activation!r}")
        if self.kind == "features":
            args.append(f"n_inputs={self.n_inputs}")
        if self.n_extra_inputs:
            args.append(f"n_extra_inputs={self.n_extra_inputs}")
        if self.learned_lr:
            args.append("learned_lr=True")
        if self.structure is not None:
            args.append(f"structure={self.structure}")
        if self.reduction != "mean":
            args.append(f"reduction={self.reduction!r}")
        if self.is_meta_trained:
            info = self.meta_info_
            args.append(
                f"meta_trained=<{len(self.meta_history_)} iters, "
                f"{info.get('inner_optimizer', '?')} lr={info.get('inner_lr', '?')}, "
                f"inner_steps={info.get('inner_steps', '?')}>"
            )
        else:
            args.append("meta_trained=False")
        return f"LearnedLoss({', '.join(args)})"


def _checked_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_probabilities(proba: torch.Tensor) -> None:
    """A classification loss reads probabilities; logits would be read silently wrong."""
    if proba.numel() and bool((proba.detach() < 0).any() or (proba.detach() > 1).any()):
        raise ValueError(
            "a classification loss reads probabilities in [0, 1], got values from "
            f"{float(proba.detach().min()):.4g} to {float(proba.detach().max()):.4g}; pass "
            "softmax(logits), or the logits with from_logits=True"
        )
