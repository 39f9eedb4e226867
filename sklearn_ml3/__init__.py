"""sklearn-ml3: meta-learned loss functions (ML3) for scikit-learn and reinforcement learning.

The public names are imported on first use (PEP 562): ``import
sklearn_ml3.meta`` needs torch only, and scikit-learn is loaded with the
estimators.
"""

__version__ = "0.1.0"

from ._lazy import lazy_attributes  # noqa: E402

_ORIGINS = {
    "LearnedLoss": "sklearn_ml3.learned_loss",
    "MetaLossClassifier": "sklearn_ml3.estimators",
    "MetaLossRegressor": "sklearn_ml3.estimators",
    "MetaTrainingDiverged": "sklearn_ml3.meta",
    "SineTasks": "sklearn_ml3.tasks",
    "SupervisedProblem": "sklearn_ml3.tasks",
    "Task": "sklearn_ml3.tasks",
    "meta_train": "sklearn_ml3.meta",
}
__all__ = sorted(_ORIGINS)
__getattr__, __dir__ = lazy_attributes(__name__, _ORIGINS)
