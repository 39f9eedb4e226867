"""Environments, policy and loss features of model-based ML3 (:mod:`rl.meta.model_based`).

How model-based ML3 reads a goal environment (:class:`GoalEnvSpec`, from the
env class's facts), the goal-conditioned :class:`GoalPolicy` it trains, and
the per-time-step features the learned loss reads (:func:`loss_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl.envs import env_class
from rl.meta._arm import in_frame, joint_frame
from rl.meta.info import PolicyLossInfo
from rl.meta.policies import build_mlp, mlp_forward
from sklearn_ml3 import LearnedLoss

Params = dict[str, torch.Tensor]


# ------------------------------------------------------------ environments
@dataclass(frozen=True)
class GoalEnvSpec:
    """How model-based ML3 reads one goal environment (from the env class's facts).

    Attributes
    ----------
    env_id : str
        Gymnasium id.
    state_dim, action_dim, goal_dim : int
        Sizes of the modelled state, the action and the goal.
    position : tuple of int
        Indices of the state entries that must reach the goal.
    velocity : tuple of int or None
        Indices of the time derivative of ``position`` in the state, when the
        state holds it (the goal-frame loss features need it).
    horizon : int
        Steps per rollout.
    make_kwargs : dict
        Keyword arguments of ``gymnasium.make``.
    arm_links : tuple of float or None
        Link lengths of a planar 2-link arm whose state starts with
        ``(cos q1, cos q2, sin q1, sin q2, qd1, qd2)`` (the joint-frame loss
        features need them).
    """

    env_id: str
    state_dim: int
    action_dim: int
    goal_dim: int
    position: tuple[int, ...]
    velocity: tuple[int, ...] | None
    horizon: int
    make_kwargs: dict
    arm_links: tuple[float, float] | None = None

    def state_from_obs(self, obs: np.ndarray) -> np.ndarray:
        """The goal-free physical state in an observation."""
        return env_class(self.env_id).state_from_obs(np.asarray(obs, dtype=np.float64))

    def make(self) -> gym.Env:
        return gym.make(self.env_id, **self.make_kwargs)

    def sample_goals(self, n: int, rng, region: str) -> np.ndarray:
        return self.make().unwrapped.sample_tasks(n, rng, region)


def _goal_env_spec(env_id: str, make_kwargs: dict) -> GoalEnvSpec:
    cls = env_class(env_id)
    return GoalEnvSpec(env_id, cls.state_dim, cls.action_dim, cls.goal_dim,
                       cls.achieved_goal_index, cls.achieved_goal_velocity_index,
                       gym.spec(env_id).max_episode_steps, make_kwargs,
                       getattr(cls, "link_lengths", None))


ENV_SPECS = {
    "ml3/PointmassGoal-v0": _goal_env_spec("ml3/PointmassGoal-v0", {"init_noise": 0.0}),
    "ml3/ReacherGoal-v0": _goal_env_spec("ml3/ReacherGoal-v0", {}),
}
#: Seed of every reset: the start state is the same in every rollout, and the
#: model's rollouts start from it too.
START_SEED = 0


def env_spec(env_id: str) -> GoalEnvSpec:
    """The :class:`GoalEnvSpec` of a supported environment id."""
    if env_id not in ENV_SPECS:
        raise ValueError(
            f"model-based ML3 supports {sorted(ENV_SPECS)}, got {env_id!r}"
        )
    return ENV_SPECS[env_id]


# ------------------------------------------------------------------ policy
def _small_output(linear: nn.Linear, is_output: bool) -> None:
    if is_output:  # start from small actions, not from saturated bang-bang control
        with torch.no_grad():
            linear.weight.mul_(0.1)
            linear.bias.zero_()


class GoalPolicy(nn.Module):
    """Deterministic goal-conditioned policy ``a = bound * tanh(MLP(s, g, g - p))``.

    The output layer starts small (weights scaled by 0.1, zero bias), so a
    fresh policy applies gentle forces instead of saturated ones.

    ``p`` is the part of the state that must reach the goal; giving the
    offset ``g - p`` explicitly helps the policy (and the loss) carry over to
    goals in regions not seen during meta-training.
    """

    def __init__(self, spec: GoalEnvSpec, hidden_layer_sizes: Sequence[int] = (32, 32),
                 action_bound: float = 1.0) -> None:
        super().__init__()
        self.position = list(spec.position)
        self.action_bound = float(action_bound)
        self.net = build_mlp(spec.state_dim + 2 * spec.goal_dim, hidden_layer_sizes,
                             spec.action_dim, init=_small_output)

    def forward(self, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.act(dict(self.named_parameters()), state, goal)

    def act(self, params: Params, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The policy with parameters ``params`` (a functional call, without module overhead)."""
        goal = goal.expand(*state.shape[:-1], goal.shape[-1])
        x = torch.cat([state, goal, goal - state[..., self.position]], -1)
        # tanh hidden activation, and the bounded output
        return self.action_bound * mlp_forward(params, x, torch.tanh, torch.tanh)


#: Feature sets of the learned loss (see :func:`loss_features`).
FEATURE_SETS = ("full", "relative", "goal_frame", "joint_frame", "joint_frame_outcome")
#: Feature sets that also read the trajectory's final state.
OUTCOME_FEATURE_SETS = ("joint_frame_outcome",)


def default_feature_set(spec: GoalEnvSpec) -> str:
    """``"goal_frame"`` where the state holds the position's velocity,
    ``"joint_frame_outcome"`` for a 2-link arm, else ``"relative"``."""
    if spec.velocity is not None:
        return "goal_frame"
    return "joint_frame_outcome" if spec.arm_links is not None else "relative"


def _check_feature_set(spec: GoalEnvSpec, features: str | None) -> str:
    features = default_feature_set(spec) if features in (None, "auto") else features
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be 'auto' or one of {FEATURE_SETS}, got {features!r}")
    if features == "goal_frame" and spec.velocity is None:
        raise ValueError(f"goal-frame features need the position's velocity in the state; "
                         f"{spec.env_id} has none (use 'relative')")
    if features in ("joint_frame", *OUTCOME_FEATURE_SETS) and spec.arm_links is None:
        raise ValueError(f"joint-frame features need a 2-link arm; {spec.env_id} is not one "
                         "(use 'goal_frame' or 'relative')")
    return features


def loss_features(spec: GoalEnvSpec, states: torch.Tensor, actions: torch.Tensor,
                  goal: torch.Tensor, features: str = "auto",
                  final_state: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Per-time-step inputs of the learned loss.

    Parameters
    ----------
    spec : GoalEnvSpec
    states : Tensor of shape (T, state_dim)
    actions : Tensor of shape (T, action_dim)
    goal : Tensor of shape (goal_dim,)
    features : {"auto", "full", "relative", "goal_frame", "joint_frame", \
"joint_frame_outcome"}, default="auto"
        - ``"full"``: ``(state, action, goal, goal - position)``;
        - ``"relative"``: ``(state without position, action, goal - position)``:
          no absolute position or goal;
        - ``"goal_frame"`` (2-D position with its velocity in the state):
          ``(|d|, v.u, v.w, a.u, a.w)`` with ``d = goal - position``, ``u =
          d / |d|`` and ``w`` its normal: distances, velocities and actions
          seen from the goal. These are unchanged when the whole problem is
          rotated about the start, so goals in one half-plane look like goals
          in the other.
        - ``"joint_frame"`` (2-link arms): the same idea in joint space. With
          ``j = J(q)^T d`` (the offset mapped to joint directions by the arm's
          Jacobian), ``u = j / |j|`` and ``w`` its normal, the row is
          ``(|d|, |j|, qd.u, qd.w, a.u, a.w)``: joint velocities and torques
          seen from the direction that moves the fingertip towards the goal.
        - ``"joint_frame_outcome"`` (2-link arms): the joint-frame row with
          the time left and where the rollout ended inserted before the
          actions, ``(|d|, |j|, qd.u, qd.w, 1 - t/T, |d_T|, j_T.u, j_T.w,
          a.u, a.w)`` with ``d_T`` the final offset to the goal and ``j_T =
          J(q_T)^T d_T`` (see :func:`rl.meta._arm.joint_frame`): every row
          also sees which way the whole trajectory missed, as the task
          loss's gradient does.
        - ``"auto"``: ``"goal_frame"`` where possible, then
          ``"joint_frame_outcome"``, else ``"relative"``.
    final_state : Tensor of shape (state_dim,), optional
        The trajectory's last state (after the last action); required by the
        outcome feature sets, ignored by the others.

    Returns
    -------
    tuple of Tensor, each of shape (T, k)
    """
    features = _check_feature_set(spec, features)
    goal = goal.expand(len(states), goal.shape[-1])
    position = list(spec.position)
    offset = goal - states[:, position]
    if features == "full":
        return states, actions, goal, offset
    if features == "relative":
        rest = [i for i in range(states.shape[-1]) if i not in position]
        return states[:, rest], actions, offset
    if features in ("joint_frame", *OUTCOME_FEATURE_SETS):  # (cos q, sin q, qd, fingertip)
        outcome = None
        if features in OUTCOME_FEATURE_SETS:
            if final_state is None:
                raise ValueError(f"features={features!r} reads the trajectory's final state; "
                                 "pass final_state")
            outcome = (final_state[0:2], final_state[2:4], goal[0] - final_state[position])
        return joint_frame(states[:, 0:2], states[:, 2:4], states[:, 4:6], offset, actions,
                           spec.arm_links, outcome)
    distance = torch.sqrt((offset**2).sum(-1, keepdim=True) + 1e-6)
    u = offset / distance
    return distance, in_frame(u, states[:, list(spec.velocity)]), in_frame(u, actions)


def n_loss_inputs(spec: GoalEnvSpec, features: str = "auto") -> int:
    """Number of features per row that :func:`loss_features` produces."""
    features = _check_feature_set(spec, features)
    if features == "full":
        return spec.state_dim + spec.action_dim + 2 * spec.goal_dim
    if features == "relative":
        return spec.state_dim - len(spec.position) + spec.action_dim + spec.goal_dim
    if features == "joint_frame":
        return 6
    if features == "joint_frame_outcome":
        return 10
    return 1 + 2 * len(spec.velocity)


#: Shapes of the model-based loss (see :func:`goal_loss_structure`).
LOSS_STRUCTURES = ("free", "quadratic", "homogeneous", "feedback")


def default_loss_structure(features: str) -> str:
    """``"feedback"`` for the outcome feature sets, else ``"free"``."""
    return "feedback" if features in OUTCOME_FEATURE_SETS else "free"


def goal_loss_structure(spec: GoalEnvSpec, features: str, structure: str = "auto") -> dict | None:
    """The :class:`~sklearn_ml3.LearnedLoss` ``structure`` of a model-based loss shape.

    Parameters
    ----------
    spec : GoalEnvSpec
    features : str
        The feature set (:func:`loss_features`) the loss reads.
    structure : {"auto", "free", "quadratic", "homogeneous", "feedback"}, default="auto"
        ``"auto"``: :func:`default_loss_structure` of the feature set.
        ``"free"``: None, an unconstrained network of the whole row.
        ``"quadratic"``: ``1/2 ||a - t_phi(rest of the row)||^2``, with ``a``
        the action columns of the row (the action in the goal or joint frame
        for those feature sets): the loss is a learned controller ``t_phi``
        that each update moves the policy's actions towards.
        ``"homogeneous"``: the same columns; the caller builds ``t_phi``
        without biases (a ReLU network), so that ``t_phi(c x) = c t_phi(x)``
        for ``c > 0``.
        ``"feedback"`` (outcome feature sets only): ``-a . G_phi(s) e`` with
        ``e`` the outcome's ``j_T`` columns (:class:`~sklearn_ml3.networks.
        FeedbackLossNet`): every update moves the actions by a learned gain
        times the joint direction in which the trajectory missed its goal.

    Returns
    -------
    dict or None
    """
    features = _check_feature_set(spec, features)
    if structure == "auto":
        structure = default_loss_structure(features)
    if structure not in LOSS_STRUCTURES:
        raise ValueError(f"loss_structure must be 'auto' or one of {LOSS_STRUCTURES}, "
                         f"got {structure!r}")
    if structure == "free":
        return None
    n = n_loss_inputs(spec, features)
    # where loss_features puts the action: after the state (without the position
    # for "relative"), or in the last columns for the frame feature sets
    first = {"full": spec.state_dim,
             "relative": spec.state_dim - len(spec.position)}.get(features, n - spec.action_dim)
    action = list(range(first, first + spec.action_dim))
    if structure != "feedback":
        return {"action_columns": action,
                "state_columns": [i for i in range(n) if i not in action]}
    if features not in OUTCOME_FEATURE_SETS:
        raise ValueError(f"loss_structure='feedback' reads where the trajectory ended; use "
                         f"features in {OUTCOME_FEATURE_SETS}, got {features!r}")
    error = [first - 2, first - 1]  # j_T in the row's frame, just before the action
    return {"action_columns": action, "error_columns": error,
            "state_columns": [i for i in range(n) if i not in action + error]}


def feature_set_of(loss: LearnedLoss, spec: GoalEnvSpec) -> str:
    """The feature set a loss reads: recorded at meta-training, else found from its width."""
    info = PolicyLossInfo.of(loss)
    if info is not None and info.paradigm == "model_based" and info.features is not None:
        return info.features
    for features in ("auto", *FEATURE_SETS):
        try:
            if loss.kind == "features" and loss.n_inputs == n_loss_inputs(spec, features):
                return _check_feature_set(spec, features)
        except ValueError:
            continue
    widths = sorted({n_loss_inputs(spec, f) for f in FEATURE_SETS
                     if (f != "goal_frame" or spec.velocity is not None)
                     and (f not in ("joint_frame", *OUTCOME_FEATURE_SETS)
                          or spec.arm_links is not None)})
    raise ValueError(
        f"this loss reads {loss.n_inputs} features of kind {loss.kind!r}; a model-based "
        f"loss for {spec.env_id} reads {' or '.join(map(str, widths))} (see loss_features)"
    )


__all__ = [
    "ENV_SPECS",
    "FEATURE_SETS",
    "LOSS_STRUCTURES",
    "OUTCOME_FEATURE_SETS",
    "START_SEED",
    "GoalEnvSpec",
    "GoalPolicy",
    "default_feature_set",
    "default_loss_structure",
    "env_spec",
    "feature_set_of",
    "goal_loss_structure",
    "loss_features",
    "n_loss_inputs",
]
