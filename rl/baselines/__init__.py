"""Baselines: iLQR trajectory optimisation and iLQR experts for demonstrations."""

from rl.baselines.ilqr import ILQRInfo, ilqr
from rl.baselines.reacher_expert import ReacherILQRExpert, expert_actions_reacher

__all__ = ["ILQRInfo", "ReacherILQRExpert", "expert_actions_reacher", "ilqr"]
