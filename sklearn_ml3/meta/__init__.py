"""The meta-training engine (torch, torchopt, numpy; never scikit-learn or the estimators)."""

from .engine import MetaProblem, MetaTrainingDiverged, meta_train, update_and_task_loss
from .optim import SOLVERS, differentiable_optimizer, torch_optimizer, torch_optimizer_spec

__all__ = [
    "MetaProblem",
    "MetaTrainingDiverged",
    "SOLVERS",
    "differentiable_optimizer",
    "meta_train",
    "torch_optimizer",
    "torch_optimizer_spec",
    "update_and_task_loss",
]
