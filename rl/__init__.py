"""Reinforcement learning with meta-learned losses: goal-conditioned envs, wrappers, baselines.

Importing ``rl`` registers the ``ml3/*`` gymnasium environments (see
:mod:`rl.envs`). Note that PyPI's unrelated ``rl`` distribution (GNU Readline
bindings) uses the same import name.
"""

from rl import envs  # noqa: F401  (registers the ml3/* environments)
