"""Meta-training of policy losses with the one engine of :mod:`sklearn_ml3.meta`.

- :mod:`rl.meta.model_free`: REINFORCE task loss on fresh rollouts (paper III-B.2);
- :mod:`rl.meta.model_based`: task loss through a learned dynamics model (III-B.1);
- :mod:`rl.meta.shaping`: meta-train-only information for policies (intermediate
  goals on MountainCar, expert demonstrations on ReacherGoal; III-C);
- :mod:`rl.meta.inverse_dynamics`: inertia-network optimizee with a mass-matrix prior.
- :mod:`rl.meta.policies`: the MLP builder, functional forward and seeded
  initialiser their optimizees share;
- :mod:`rl.meta.info`: :class:`~rl.meta.info.PolicyLossInfo`, what a policy loss
  was meta-trained with (``loss.meta_info_["policy"]``).
"""

from rl.meta.info import PolicyLossInfo  # noqa: F401
from rl.meta.inverse_dynamics import InverseDynamicsProblem  # noqa: F401
from rl.meta.model_based import ModelBasedProblem, meta_train_model_based_loss  # noqa: F401
from rl.meta.model_free import ModelFreeProblem, meta_train_policy_loss  # noqa: F401
from rl.meta.shaping import MountainCarShapingProblem, ReacherExpertProblem  # noqa: F401

__all__ = [
    "InverseDynamicsProblem", "ModelBasedProblem", "ModelFreeProblem",
    "MountainCarShapingProblem", "PolicyLossInfo", "ReacherExpertProblem",
    "meta_train_model_based_loss", "meta_train_policy_loss",
]
