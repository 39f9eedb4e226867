"""Reinforcement learning with meta-learned losses: goal-conditioned envs, wrappers, baselines.

Importing ``rl`` registers the ``ml3/*`` gymnasium environments (see
:mod:`rl.envs`). Note that PyPI's unrelated ``rl`` distribution (GNU Readline
bindings) uses the same import name.
"""

from rl import envs  # noqa: F401  (registers the ml3/* environments)
from rl.meta.model_based import meta_train_model_based_loss, train_policy_with_loss  # noqa: E402
from rl.meta.model_free import meta_train_policy_loss  # noqa: E402
from rl.ml3 import ML3, LearnedLossPPO, ML3Policy  # noqa: E402

__all__ = [
    "ML3", "LearnedLossPPO", "ML3Policy", "meta_train_model_based_loss", "meta_train_policy_loss",
    "train_policy_with_loss",
]
