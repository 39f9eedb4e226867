"""Reinforcement learning with meta-learned losses: goal-conditioned envs, wrappers, baselines.

Importing ``rl`` registers the ``ml3/*`` gymnasium environments (see
:mod:`rl.envs`), so ``gym.register_envs(rl)`` and ``gym.make("rl:ml3/...")``
work. The algorithms and meta-training entry points are imported on first use
(PEP 562): an env user does not load Stable-Baselines3 or scikit-learn.
Note that PyPI's unrelated ``rl`` distribution (GNU Readline bindings) uses the
same import name.
"""

from rl import envs  # noqa: F401  (registers the ml3/* environments)
from sklearn_ml3._lazy import lazy_attributes

_ORIGINS = {
    "ML3": "rl.ml3",
    "LearnedLossPPO": "rl.ml3",
    "ML3Policy": "rl.ml3",
    "meta_train_model_based_loss": "rl.meta.model_based",
    "train_policy_with_loss": "rl.meta.model_based",
    "meta_train_policy_loss": "rl.meta.model_free",
}
__all__ = sorted(_ORIGINS)
__getattr__, __dir__ = lazy_attributes(__name__, _ORIGINS)
