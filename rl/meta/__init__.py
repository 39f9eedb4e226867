"""Meta-training of policy losses with the one engine of :mod:`sklearn_ml3.meta`."""

from rl.meta.model_based import ModelBasedProblem, meta_train_model_based_loss  # noqa: F401
from rl.meta.model_free import ModelFreeProblem, meta_train_policy_loss  # noqa: F401
