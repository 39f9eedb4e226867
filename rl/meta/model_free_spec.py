"""Policy and loss features of model-free ML3 (:mod:`rl.meta.model_free`).

The Gaussian MLP policy the meta-training problem trains (evaluated
functionally, :func:`policy_mean`, :func:`policy_log_prob`) and the rows the
learned loss reads (:func:`loss_features`, :func:`policy_loss_structure`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rl.envs.reacher_batched import BatchedReacherGoal
from rl.meta._arm import joint_frame
from rl.meta.policies import build_mlp, mlp_forward

Params = dict[str, torch.Tensor]


def _sb3_init(linear: nn.Linear, is_output: bool) -> None:
    # SB3's ortho_init: gain sqrt(2) for hidden layers, 0.01 for the action head
    nn.init.orthogonal_(linear.weight, gain=0.01 if is_output else math.sqrt(2))
    nn.init.zeros_(linear.bias)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy with a state-independent log standard deviation.

    Initialised as SB3's ``ActorCriticPolicy`` with ``ortho_init=True``
    (orthogonal hidden layers with gain sqrt(2), output layer gain 0.01, zero
    biases, ``log_std = log_std_init``), so that a policy meta-trained here and
    an :class:`rl.ML3Policy` start from the same distribution of networks.

    Parameters
    ----------
    obs_dim, act_dim : int
    hidden_sizes : sequence of int, default=(64, 64)
    log_std_init : float, default=0.0
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (64, 64),
                 log_std_init: float = 0.0):
        super().__init__()
        self.mean = build_mlp(obs_dim, hidden_sizes, act_dim, init=_sb3_init)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean action for each row of ``obs``."""
        return self.mean(obs)


def policy_mean(params: Params, obs: torch.Tensor) -> torch.Tensor:
    """Mean action of the :class:`GaussianMLPPolicy` with parameters ``params``.

    A pure function of the parameter dict (the same as
    ``torch.func.functional_call(policy, params, (obs,))``, without its
    per-call overhead, which dominates the small batches of a rollout).
    """
    return mlp_forward(params, obs, torch.tanh, prefix="mean")


def policy_log_prob(params: Params, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log pi_params(actions | obs)`` per row, differentiable w.r.t. ``params``."""
    mean = policy_mean(params, obs)
    log_std = params["log_std"]
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


#: Where :class:`ModelFreeProblem` rolls out policies.
SIMULATORS = ("env", "twin")
#: Environments with a batched torch twin (``simulator="twin"``).
TWIN_SIMULATORS = {"ml3/ReacherGoal-v0": BatchedReacherGoal}

#: Shapes of the model-free loss (see :func:`meta_train_policy_loss`).
LOSS_STRUCTURES = ("quadratic", "advantage", "free")

#: Extra feature sets of the model-free loss (see :func:`loss_features`).
FEATURE_SETS = ("plain", "joint_frame")
#: Columns each extra feature set adds.
EXTRA_FEATURES = {"plain": 0, "joint_frame": 6}
#: How many of them (the last ones) depend on the action.
ACTION_EXTRAS = {"plain": 0, "joint_frame": 2}


def policy_loss_structure(structure: str, obs_dim: int, act_dim: int, goal_dim: int,
                   features: str) -> dict | None:
    """The :class:`~sklearn_ml3.LearnedLoss` ``structure`` of a policy loss shape.

    Rows are laid out by :func:`loss_features`: obs, action, log-probability,
    goal, extras. ``"advantage"`` weights the log-probability column by a free
    learned function; ``"quadratic"`` by ``-1/2 ||a - t(s)||^2`` with ``a``
    the action as the loss sees it (the joint-frame components with
    ``features="joint_frame"``, the raw action otherwise) and ``t`` a learned
    function of every column that does not depend on the action. ``"free"``:
    None, an unconstrained network of the whole row.
    """
    if structure not in LOSS_STRUCTURES:
        raise ValueError(f"loss_structure must be one of {LOSS_STRUCTURES}, got {structure!r}")
    score = obs_dim + act_dim
    if structure == "free":
        return None
    if structure == "advantage":
        return {"score_column": score}
    n = obs_dim + act_dim + 1 + goal_dim + EXTRA_FEATURES[features]
    raw_action = list(range(obs_dim, obs_dim + act_dim))
    first_action_extra = n - ACTION_EXTRAS[features]
    action = list(range(first_action_extra, n)) if ACTION_EXTRAS[features] else raw_action
    state = [i for i in range(first_action_extra) if i not in raw_action and i != score]
    return {"score_column": score, "action_columns": action, "state_columns": state}


def check_features(features: str, obs_dim: int, act_dim: int) -> str:
    """Validate a feature set for an environment's observation and action sizes."""
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {FEATURE_SETS}, got {features!r}")
    if features == "joint_frame" and (obs_dim, act_dim) != (10, 2):
        raise ValueError("features='joint_frame' needs ReacherGoal's observation layout "
                         f"(10 entries, 2 actions), got {obs_dim} and {act_dim}")
    return features


def loss_features(obs: torch.Tensor, actions: torch.Tensor, log_prob: torch.Tensor,
                  goal_dim: int, shift=None, scale=None, features: str = "plain") -> torch.Tensor:
    """Rows ``(obs, action, log pi(action|obs), goal[, extra])`` of the learned loss.

    The goal is the last ``goal_dim`` entries of ``obs``. With ``shift`` and
    ``scale`` (one entry per feature) the features are standardised as
    ``(x - shift) / scale``; meta-training fixes them from the rollouts of
    untrained policies and :class:`rl.ML3` applies the same ones, so that
    small-valued inputs such as a goal are not drowned by joint velocities.

    ``features="joint_frame"`` (ReacherGoal: observation ``(cos q, sin q, qd,
    fingertip - goal, goal)``) appends ``(|d|, |j|, qd.u, qd.w, a.u, a.w)``,
    with ``d`` the offset from the fingertip to the goal, ``j = J(q)^T d`` (the
    offset as joint directions), ``u = j / |j|`` and ``w`` its normal: joint
    velocities and actions seen from the direction that moves the fingertip
    towards the goal (as :func:`rl.meta.model_based.loss_features`).
    """
    goal = obs[:, obs.shape[1] - goal_dim:]
    cols = [obs, actions, log_prob.reshape(-1, 1), goal]
    if features == "joint_frame":
        cols += joint_frame(obs[:, 0:2], obs[:, 2:4], obs[:, 4:6], -obs[:, 6:8], actions)
    elif features != "plain":
        raise ValueError(f"features must be one of {FEATURE_SETS}, got {features!r}")
    x = torch.cat(cols, dim=-1)
    if shift is not None:
        x = x - torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    if scale is not None:
        x = x / torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    return x


__all__ = [
    "ACTION_EXTRAS",
    "EXTRA_FEATURES",
    "FEATURE_SETS",
    "LOSS_STRUCTURES",
    "SIMULATORS",
    "TWIN_SIMULATORS",
    "GaussianMLPPolicy",
    "check_features",
    "loss_features",
    "policy_log_prob",
    "policy_loss_structure",
    "policy_mean",
]
