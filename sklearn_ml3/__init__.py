"""sklearn-ml3: meta-learned loss functions (ML3) for scikit-learn and reinforcement learning."""

__version__ = "0.1.0"

from .estimators import MetaLossClassifier, MetaLossRegressor  # noqa: E402
from .learned_loss import LearnedLoss  # noqa: E402
from .meta import MetaTrainingDiverged, meta_train  # noqa: E402
from .tasks import SineTasks, SupervisedProblem, Task  # noqa: E402

__all__ = [
    "LearnedLoss",
    "MetaLossClassifier",
    "MetaLossRegressor",
    "MetaTrainingDiverged",
    "SineTasks",
    "SupervisedProblem",
    "Task",
    "meta_train",
]
