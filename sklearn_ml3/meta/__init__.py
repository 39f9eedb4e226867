"""The meta-training engine and the meta-test loop (torch, torchopt, numpy; never
scikit-learn or the estimators)."""

from .baselines import compare_paired, step_size_diagnostic, tune_lr, untrained_control
from .engine import MetaProblem, MetaTrainingDiverged, meta_train, update_and_task_loss
from .evaluate import MetaTestCurves, MetaTrainOnly, TaskObjective, blind, meta_test
from .optim import SOLVERS, differentiable_optimizer, torch_optimizer, torch_optimizer_spec

__all__ = [
    "MetaProblem",
    "MetaTestCurves",
    "MetaTrainOnly",
    "MetaTrainingDiverged",
    "SOLVERS",
    "TaskObjective",
    "blind",
    "compare_paired",
    "differentiable_optimizer",
    "meta_test",
    "meta_train",
    "step_size_diagnostic",
    "torch_optimizer",
    "torch_optimizer_spec",
    "tune_lr",
    "untrained_control",
    "update_and_task_loss",
]
