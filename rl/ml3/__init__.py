"""ML3 at meta-test time: an SB3 algorithm trained by a learned loss; PPO plus a learned term."""

from rl.ml3.ml3 import ML3, LearnedLossPPO
from rl.ml3.policies import ML3MultiInputPolicy, ML3Policy, MlpPolicy, MultiInputPolicy

__all__ = ["ML3", "LearnedLossPPO", "ML3MultiInputPolicy", "ML3Policy", "MlpPolicy",
           "MultiInputPolicy"]
