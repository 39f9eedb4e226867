"""Model-based ML3: a loss for goal-reaching policies, meta-trained through a learned model.

The loop of the paper (III-B.1), run by the one engine
(:func:`sklearn_ml3.meta.meta_train`):

1. collect transitions in the real environment and fit a
   :class:`~rl.dynamics.DynamicsEnsemble`;
2. meta-train: a deterministic policy ``pi_theta(s, g)`` takes an SGD step on
   the learned loss ``M_phi``, which reads the policy's real-environment
   state-action trajectory and the goal; the task loss is the final distance
   to the goal of a rollout of the *updated* policy through the learned
   model, differentiated through the model, the policy and the inner step
   into ``phi``;
3. every ``refit_every`` meta-iterations, add exploratory rollouts of the
   current policies to the data and refit the model.

At meta-test time (:func:`train_policy_with_loss`) the learned loss alone
trains new policies on new goals, from real-environment rollouts; no
dynamics model is needed. :func:`train_policy_with_model` is the baseline
the paper compares with: gradient descent on the task loss through the
learned model.

The paper's meta-network "outputs a loss and a learning rate". Here the
loss network has one (Softplus) output per time step: its scale *is* the
step size, since an SGD step of size ``alpha`` on ``M_phi`` equals a step of
size 1 on ``alpha * M_phi``, and meta-training is free to learn that scale
per state, action and goal. The policy is trained with the fixed
``inner_lr`` recorded on the loss.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl.dynamics import DynamicsEnsemble
from rl.envs import env_class
from rl.meta._arm import in_frame, joint_frame
from rl.meta.policies import build_mlp, init_params, mlp_forward, stack_params, unstack_params
from sklearn_ml3 import LearnedLoss
from sklearn_ml3._utils import seed_from
from sklearn_ml3.meta import TaskObjective, distributed, meta_test, meta_train

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
FEATURE_SETS = ("full", "relative", "goal_frame", "joint_frame")


def default_feature_set(spec: GoalEnvSpec) -> str:
    """``"goal_frame"`` where the state holds the position's velocity, ``"joint_frame"``
    for a 2-link arm, else ``"relative"``."""
    if spec.velocity is not None:
        return "goal_frame"
    return "joint_frame" if spec.arm_links is not None else "relative"


def _check_feature_set(spec: GoalEnvSpec, features: str | None) -> str:
    features = default_feature_set(spec) if features in (None, "auto") else features
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be 'auto' or one of {FEATURE_SETS}, got {features!r}")
    if features == "goal_frame" and spec.velocity is None:
        raise ValueError(f"goal-frame features need the position's velocity in the state; "
                         f"{spec.env_id} has none (use 'relative')")
    if features == "joint_frame" and spec.arm_links is None:
        raise ValueError(f"joint-frame features need a 2-link arm; {spec.env_id} is not one "
                         "(use 'goal_frame' or 'relative')")
    return features


def loss_features(spec: GoalEnvSpec, states: torch.Tensor, actions: torch.Tensor,
                  goal: torch.Tensor, features: str = "auto") -> tuple[torch.Tensor, ...]:
    """Per-time-step inputs of the learned loss.

    Parameters
    ----------
    spec : GoalEnvSpec
    states : Tensor of shape (T, state_dim)
    actions : Tensor of shape (T, action_dim)
    goal : Tensor of shape (goal_dim,)
    features : {"auto", "full", "relative", "goal_frame"}, default="auto"
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
        - ``"auto"``: ``"goal_frame"`` where possible, then ``"joint_frame"``,
          else ``"relative"``.

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
    if features == "joint_frame":  # arm state (cos q, sin q, qd, fingertip)
        return joint_frame(states[:, 0:2], states[:, 2:4], states[:, 4:6], offset, actions,
                           spec.arm_links)
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
    return 1 + 2 * len(spec.velocity)


def feature_set_of(loss: LearnedLoss, spec: GoalEnvSpec) -> str:
    """The feature set a loss reads: recorded at meta-training, else found from its width."""
    recorded = loss.meta_info_.get("policy", {}).get("feature_set")
    if recorded is not None:
        return recorded
    for features in ("auto", *FEATURE_SETS):
        try:
            if loss.kind == "features" and loss.n_inputs == n_loss_inputs(spec, features):
                return _check_feature_set(spec, features)
        except ValueError:
            continue
    widths = sorted({n_loss_inputs(spec, f) for f in FEATURE_SETS
                     if (f != "goal_frame" or spec.velocity is not None)
                     and (f != "joint_frame" or spec.arm_links is not None)})
    raise ValueError(
        f"this loss reads {loss.n_inputs} features of kind {loss.kind!r}; a model-based "
        f"loss for {spec.env_id} reads {' or '.join(map(str, widths))} (see loss_features)"
    )


# ----------------------------------------------------------------- rollouts
class _Rollouts:
    """Real-environment and model rollouts of a policy given as ``(module, params)``."""

    def __init__(self, spec: GoalEnvSpec, policy: GoalPolicy):
        self.spec = spec
        self.policy = policy
        self.env = spec.make()
        obs, _ = self.env.reset(seed=START_SEED)
        self.start_state = torch.as_tensor(spec.state_from_obs(obs), dtype=torch.float32)

    def act(self, params: Params, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.policy.act(params, state, goal)

    @torch.no_grad()
    def real(self, params: Params, goal: np.ndarray, noise: float = 0.0,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Roll out in the real env; returns states (T+1, S), actions (T, A), final distance."""
        spec = self.spec
        self.env.unwrapped.set_task(goal)
        obs, _ = self.env.reset(seed=START_SEED)
        goal_t = torch.as_tensor(goal, dtype=torch.float32)
        params = {k: v.detach() for k, v in params.items()}
        states, actions = [spec.state_from_obs(obs)], []
        distance = float("nan")
        for _ in range(spec.horizon):
            state = torch.as_tensor(states[-1], dtype=torch.float32)
            action = self.act(params, state, goal_t).numpy().astype(np.float64)
            if noise > 0:
                action = np.clip(action + noise * rng.standard_normal(action.shape), -1.0, 1.0)
            obs, _, terminated, truncated, info = self.env.step(action.astype(np.float32))
            states.append(spec.state_from_obs(obs))
            actions.append(action)
            distance = float(info["distance"])
            if terminated or truncated:
                break
        return np.asarray(states), np.asarray(actions), distance

    def model(self, params: Params, goal: torch.Tensor, dynamics: DynamicsEnsemble,
              member: int | None = None) -> torch.Tensor:
        """Differentiable final distance to ``goal`` of a rollout through ``dynamics``."""
        state = self.start_state
        for _ in range(self.spec.horizon):
            state = dynamics(state, self.act(params, state, goal), member=member)
        offset = state[list(self.spec.position)] - goal
        return torch.sqrt((offset**2).sum() + 1e-8)


# ------------------------------------------------------------------ problem
class ModelBasedProblem:
    """Goal reaching through a learned dynamics model, as a :class:`~sklearn_ml3.meta.MetaProblem`.

    A task is a goal. The optimizee is a :class:`GoalPolicy`; the learned
    loss reads :func:`loss_features` of its real-environment trajectory; the
    task loss is the final distance to the goal of a rollout of the updated
    policy through ``dynamics``. Every real rollout is stored as model data;
    :meth:`refit` adds exploratory rollouts and refits the model.
    Under ``torch.distributed``, :meth:`share_rollouts` gives every rank the
    rollouts of all ranks' tasks, so that their models stay identical.

    Parameters
    ----------
    env_id : str
        ``"ml3/PointmassGoal-v0"`` or ``"ml3/ReacherGoal-v0"``.
    goals : array-like of shape (n_goals, goal_dim)
        Meta-training goals.
    dynamics : DynamicsEnsemble
        The learned model (fitted in place by :meth:`refit`).
    policy_hidden : sequence of int, default=(32, 32)
    model_member : {"mean", "random"}, default="mean"
        Roll the task loss out through the ensemble mean or one random member
        per task loss.
    max_transitions : int, default=50_000
        Size of the model's data buffer (oldest transitions are dropped).
    features : str, default="auto"
        Feature set of the learned loss (:func:`loss_features`).
    random_state : int or None
        Seeds exploration noise and random member choices.
    """

    vectorizable = False

    def __init__(self, env_id: str, goals, dynamics: DynamicsEnsemble,
                 policy_hidden: Sequence[int] = (32, 32), model_member: str = "mean",
                 max_transitions: int = 50_000, features: str = "auto",
                 random_state=None) -> None:
        self.spec = env_spec(env_id)
        self.features = _check_feature_set(self.spec, features)
        goals = env_class(env_id).validate_goals(goals)
        if model_member not in ("mean", "random"):
            raise ValueError(f"model_member must be 'mean' or 'random', got {model_member!r}")
        if (dynamics.state_dim, dynamics.action_dim) != (self.spec.state_dim,
                                                          self.spec.action_dim):
            raise ValueError(
                f"{env_id} needs a dynamics model of state_dim {self.spec.state_dim} and "
                f"action_dim {self.spec.action_dim}, got {dynamics.state_dim} and "
                f"{dynamics.action_dim}"
            )
        self.goals = goals
        self.dynamics = dynamics
        self.policy_hidden = tuple(int(h) for h in policy_hidden)
        self.model_member = model_member
        self.max_transitions = int(max_transitions)
        self.rng = np.random.default_rng(seed_from(random_state))
        self.policy = GoalPolicy(self.spec, self.policy_hidden)
        self.rollouts = _Rollouts(self.spec, self.policy)
        self._data: list[tuple[np.ndarray, np.ndarray]] = []  # (states, actions) per rollout
        self._recent: dict[tuple[float, ...], tuple[np.ndarray, Params]] = {}
        self._unshared: list[tuple[np.ndarray, np.ndarray, np.ndarray, Params]] = []

    # ------------------------------------------------------------ model data
    def record(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Add one rollout's transitions to the model data."""
        self._data.append((states, actions))
        while sum(len(a) for _, a in self._data) > self.max_transitions:
            self._data.pop(0)

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored ``(states, actions, next_states)``."""
        s = np.concatenate([s[:-1] for s, _ in self._data])
        a = np.concatenate([a for _, a in self._data])
        s_next = np.concatenate([s[1:] for s, _ in self._data])
        return s, a, s_next

    def collect_random(self, n_episodes: int, params: Params | None = None,
                       noise: float = 1.0) -> None:
        """Record ``n_episodes`` exploratory rollouts on random meta-training goals.

        With ``params=None`` a fresh random policy is drawn per episode;
        actions get Gaussian noise of scale ``noise``.
        """
        for _ in range(int(n_episodes)):
            goal = self.goals[self.rng.integers(len(self.goals))]
            p = params if params is not None else self.init_params(
                None, int(self.rng.integers(2**31 - 1)))
            states, actions, _ = self.rollouts.real(p, goal, noise, self.rng)
            self.record(states, actions)

    def refit(self, n_epochs: int = 20, n_explore: int = 4, noise: float = 0.3) -> None:
        """Collect noisy rollouts of the most recent policies, then refit the model."""
        recent = list(self._recent.values())[-int(n_explore):] if n_explore else []
        for goal, params in recent:
            states, actions, _ = self.rollouts.real(params, goal, noise, self.rng)
            self.record(states, actions)
        self.fit_dynamics(n_epochs)

    def fit_dynamics(self, n_epochs: int) -> None:
        """Fit the model on all stored transitions, then freeze it: the task loss
        differentiates through the model, but never trains it."""
        self.dynamics.fit(*self.transitions(), n_epochs=n_epochs)
        self.dynamics.requires_grad_(False)

    # ------------------------------------------------------------ MetaProblem
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[torch.Tensor]:
        idx = rng.integers(len(self.goals), size=n)
        return [torch.as_tensor(self.goals[i], dtype=torch.float32) for i in idx]

    def init_params(self, task: Any, seed: int) -> Params:
        return init_params(lambda: GoalPolicy(self.spec, self.policy_hidden), seed)

    def loss_inputs(self, params: Params, task: torch.Tensor) -> tuple[torch.Tensor, ...]:
        goal = task.numpy().astype(np.float64)
        states, actions, _ = self.rollouts.real(params, goal)
        rollout = (states, actions, goal, {k: v.detach() for k, v in params.items()})
        if distributed.is_distributed():
            self._unshared.append(rollout)  # recorded in task order by share_rollouts
        else:
            self._remember(*rollout)
        states_t = torch.as_tensor(states[:-1], dtype=torch.float32)
        # the same actions as in the rollout, now differentiable w.r.t. params
        actions_t = self.rollouts.act(params, states_t, task)
        return loss_features(self.spec, states_t, actions_t, task, self.features)

    def _remember(self, states, actions, goal, params) -> None:
        self.record(states, actions)
        self._recent[tuple(goal)] = (goal, params)

    def share_rollouts(self) -> None:
        """Record the rollouts of every rank's tasks since the last call, in task order.

        Call it on all ranks after every meta-iteration; a no-op without a
        process group (rollouts are then recorded as they happen).
        """
        for rollout in distributed.gather_lists(self._unshared):
            self._remember(*rollout)
        self._unshared = []

    def task_loss(self, params: Params, task: torch.Tensor) -> torch.Tensor:
        member = None
        if self.model_member == "random":
            if distributed.is_distributed():
                raise ValueError("model_member='random' draws members per rank, which differs "
                                 "between processes; use model_member='mean' under "
                                 "torch.distributed")
            member = int(self.rng.integers(self.dynamics.n_members))
        return self.rollouts.model(params, task, self.dynamics, member)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "model_based_rl",
            "env_id": self.spec.env_id,
            "horizon": self.spec.horizon,
            "n_goals": len(self.goals),
            "goals": self.goals.tolist(),
            "model_member": self.model_member,
            "features": self.features,
            "dynamics": self.dynamics.describe(),
        }


# ----------------------------------------------------------- meta-training
def meta_train_model_based_loss(
    env_id: str,
    goals=None,
    *,
    n_goals: int = 10,
    n_meta_iter: int = 400,
    inner_steps: int = 40,
    unroll: int = 1,
    tasks_per_iter: int = 4,
    inner_lr: float = 0.1,
    meta_lr: float = 3e-3,
    loss_hidden: Sequence[int] = (40, 40),
    policy_hidden: Sequence[int] = (32, 32),
    dynamics: DynamicsEnsemble | None = None,
    n_random_episodes: int = 20,
    refit_every: int = 25,
    refit_epochs: int = 20,
    initial_epochs: int = 100,
    model_member: str = "mean",
    features: str = "auto",
    grad_clip: float | None = 10.0,
    learned_lr: bool = True,
    random_state=0,
    verbose: int = 1,
) -> LearnedLoss:
    """Meta-train a loss for goal-reaching policies through a learned dynamics model.

    Parameters
    ----------
    env_id : {"ml3/PointmassGoal-v0", "ml3/ReacherGoal-v0"}
    goals : array-like of shape (n_goals, 2), optional
        Meta-training goals; by default ``n_goals`` goals in the right
        half-plane (``region="right"`` of the env's ``sample_tasks``).
    n_goals : int, default=10
        Number of default goals.
    n_meta_iter : int, default=400
        Updates of the loss network; ``phi`` is updated after every policy
        update (the engine's ``unroll=1``).
    inner_steps : int, default=40
        Policy updates before a policy is re-initialised (the paper's M).
        Make it the number of updates the loss will be used for at meta-test:
        a loss meta-trained on the first 10 updates of each policy and used
        for 40 stalls after the first few.
    unroll : int, default=1
        Policy updates differentiated through per meta-gradient (the engine's
        ``unroll``): 1 judges each update by the task loss right after it;
        larger values judge ``unroll`` updates together (costlier).
    tasks_per_iter : int, default=4
        Goals per meta-gradient.
    inner_lr : float, default=0.1
        SGD step size of the policy updates (also used at meta-test).
    meta_lr : float, default=3e-3
        Adam step size of the loss network.
    loss_hidden, policy_hidden : sequence of int
        Hidden widths of the loss network and of the policy.
    dynamics : DynamicsEnsemble, optional
        The model to learn (fitted in place, so the caller keeps it, e.g. for
        :func:`train_policy_with_model`); a 5-member (64, 64) ensemble by default.
    n_random_episodes : int, default=20
        Exploratory episodes (random policies, noisy actions) before the first fit.
    refit_every : int, default=25
        Meta-iterations between model refits (each adds noisy rollouts of the
        current policies to the data).
    refit_epochs, initial_epochs : int
        Epochs of each refit and of the first fit.
    model_member : {"mean", "random"}, default="mean"
        Which model the task loss rolls out through.
    features : {"auto", "full", "relative", "goal_frame"}, default="auto"
        What the loss reads per time step (:func:`loss_features`); "auto" is
        the goal frame on PointmassGoal and the joint frame on ReacherGoal.
    grad_clip : float or None, default=10.0
        Clip of the meta-gradient norm.
    learned_lr : bool, default=True
        Whether the loss also outputs a learning rate from the trajectory and
        goal (the paper's meta-loss outputs "a loss and a learning rate"):
        each policy update is then a step of ``inner_lr * alpha`` with
        ``alpha = loss.learning_rate(...)`` (see :class:`LearnedLoss`), and
        :func:`learned_rates` reads ``alpha`` for trained policies.
    random_state : int, default=0
        Seeds goals, loss and model initialisation, policy initialisations and
        exploration.
    verbose : int, default=1

    Returns
    -------
    loss : LearnedLoss
        ``kind="features"``, reading :func:`loss_features` rows. Its
        ``meta_info_`` records the engine options, the problem and
        ``meta_info_["policy"]`` (architecture, env, horizon) which
        :func:`train_policy_with_loss` uses.
    """
    spec = env_spec(env_id)
    seed = seed_from(random_state)
    rng = np.random.default_rng(seed)
    if goals is None:
        goals = spec.sample_goals(int(n_goals), rng, "right")
    if dynamics is None:
        dynamics = DynamicsEnsemble(spec.state_dim, spec.action_dim,
                                    random_state=int(rng.integers(2**31 - 1)))
    problem = ModelBasedProblem(env_id, goals, dynamics, policy_hidden, model_member,
                                features=features, random_state=int(rng.integers(2**31 - 1)))
    problem.collect_random(n_random_episodes)
    problem.fit_dynamics(initial_epochs)
    loss = LearnedLoss(kind="features", n_inputs=n_loss_inputs(spec, problem.features),
                       hidden_layer_sizes=loss_hidden, output="softplus",
                       learned_lr=learned_lr, random_state=int(rng.integers(2**31 - 1)))

    def refit(iteration: int, _value: float) -> None:
        problem.share_rollouts()
        if refit_every and (iteration + 1) % refit_every == 0 and iteration + 1 < n_meta_iter:
            problem.refit(n_epochs=refit_epochs)

    meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=inner_steps,
               unroll=unroll, tasks_per_iter=tasks_per_iter, inner_optimizer="sgd",
               inner_lr=inner_lr, meta_lr=meta_lr, grad_clip=grad_clip, vectorize=False,
               random_state=int(rng.integers(2**31 - 1)), verbose=verbose, callback=refit)
    loss.meta_info_["policy"] = {
        "env_id": env_id, "hidden_layer_sizes": list(problem.policy_hidden),
        "horizon": spec.horizon, "feature_set": problem.features,
    }
    loss.meta_info_["dynamics"] = dynamics.describe()
    return loss


# ---------------------------------------------------------------- meta-test
def _as_goals(spec: GoalEnvSpec, goal) -> tuple[np.ndarray, bool]:
    """Validated goals as ``(n_goals, goal_dim)`` and whether a single goal was given."""
    single = np.ndim(goal) == 1
    return env_class(spec.env_id).validate_goals(np.atleast_2d(goal) if single else goal), single


def _stacked_policies(spec: GoalEnvSpec, hidden: Sequence[int], n: int,
                      random_state) -> Params:
    """Parameters of ``n`` fresh policies stacked along a leading axis (leaf tensors)."""
    rng = np.random.default_rng(seed_from(random_state))
    seeds = rng.integers(0, 2**31 - 1, size=n)
    stacked = stack_params(init_params(lambda: GoalPolicy(spec, hidden), int(s)) for s in seeds)
    return {name: p.requires_grad_() for name, p in stacked.items()}


class _PolicyBatch:
    """One policy per goal, trained together as stacked parameters (a meta-test problem).

    The task is the ``(n_goals, goal_dim)`` tensor of goals; :meth:`apply_loss`
    sums the per-goal losses, so every policy follows its own gradient.
    """

    def __init__(self, spec: GoalEnvSpec, hidden: Sequence[int], goals: np.ndarray,
                 features: str = "auto"):
        self.spec, self.hidden, self.goals, self.features = spec, tuple(hidden), goals, features
        self.rollouts = _Rollouts(spec, GoalPolicy(spec, hidden))

    def init_params(self, task, seed: int) -> Params:
        return _stacked_policies(self.spec, self.hidden, len(self.goals), seed)

    def real(self, params: Params) -> list:
        return [self.rollouts.real(unstack_params(params, i), g) for i, g in enumerate(self.goals)]

    def distances(self, params: Params, task) -> np.ndarray:
        """Real-environment final distance of every goal's policy (the metric)."""
        return np.asarray([r[2] for r in self.real(params)])

    def apply_loss(self, loss: LearnedLoss, params: Params, goals_t: torch.Tensor
                   ) -> torch.Tensor:
        states = torch.as_tensor(np.stack([r[0][:-1] for r in self.real(params)]),
                                 dtype=torch.float32)

        def one(p, s, g):
            return loss(*loss_features(self.spec, s, self.rollouts.act(p, s, g), g, self.features))

        return torch.func.vmap(one)(params, states, goals_t).sum()

    def through_model(self, dynamics: DynamicsEnsemble) -> TaskObjective:
        """The baseline's objective: summed final distances through ``dynamics`` (frozen copy)."""
        frozen = copy.deepcopy(dynamics).requires_grad_(False)

        def model_distance(params, goals_t):
            one = lambda p, g: self.rollouts.model(p, g, frozen)  # noqa: E731
            return torch.func.vmap(one)(params, goals_t).sum()

        return TaskObjective(model_distance)


def _meta_test_policies(spec, goals, single, n_updates, lr, hidden, random_state, eval_every,
                        loss=None, dynamics=None, features="auto"):
    """SGD with the learned ``loss`` (or through ``dynamics``) for one policy per goal.

    Returns the final parameters and the real-environment final distances.
    """
    batch = _PolicyBatch(spec, hidden, goals, features)
    objective = loss if loss is not None else batch.through_model(dynamics)
    seed = seed_from(random_state)
    if seed is None:
        seed = seed_from(np.random.default_rng())
    result = meta_test(batch, objective, [torch.as_tensor(goals, dtype=torch.float32)],
                       n_updates=n_updates, metric=batch.distances, init_seeds=[[seed]],
                       lr=lr, optimizer="sgd", eval_every=eval_every, keep_params=True)
    distances = result.curves[0, 0].T  # (n_goals, n_evaluations)
    params = result.params[0][0]
    if single:
        return unstack_params(params, 0), distances[0]
    return params, distances


def train_policy_with_loss(
    loss: LearnedLoss,
    env_id: str,
    goal,
    n_updates: int = 50,
    *,
    lr: float | None = None,
    policy_hidden: Sequence[int] | None = None,
    eval_every: int = 1,
    random_state=0,
) -> tuple[Params, np.ndarray]:
    """Train fresh policies to reach goals with the learned loss alone (meta-test).

    Each update rolls every policy out in the real environment, evaluates the
    learned loss on its trajectory and takes one SGD step. No dynamics model
    and no task loss are used. Several goals are trained together, one
    independent policy each.

    Parameters
    ----------
    loss : LearnedLoss
        A loss from :func:`meta_train_model_based_loss`.
    env_id : str
        Environment (normally the one the loss was meta-trained on).
    goal : array-like of shape (2,) or (n_goals, 2)
    n_updates : int, default=50
    lr : float, optional
        SGD step size; by default the ``inner_lr`` of meta-training.
    policy_hidden : sequence of int, optional
        Policy architecture; by default the meta-training one.
    eval_every : int, default=1
        Record the distance every ``eval_every`` updates (and after the last).
    random_state : int, default=0
        Seeds the policy initialisations.

    Returns
    -------
    params : dict of str to Tensor
        The trained policy's parameters (for :class:`GoalPolicy`; stacked
        along a leading goal axis when several goals were given).
    distances : ndarray of shape (n_evaluations,) or (n_goals, n_evaluations)
        Real-environment final distance to the goal before update 0, every
        ``eval_every`` updates, and after the last update (``n_updates + 1``
        values with the default ``eval_every=1``).

    Examples
    --------
    >>> env_id = "ml3/PointmassGoal-v0"
    >>> loss = meta_train_model_based_loss(env_id)  # doctest: +SKIP
    >>> params, dist = train_policy_with_loss(loss, env_id, [-1.0, 0.0])  # doctest: +SKIP
    """
    spec = env_spec(env_id)
    info = loss.meta_info_.get("policy")
    features = feature_set_of(loss, spec)
    if loss.kind != "features" or loss.n_inputs != n_loss_inputs(spec, features):
        raise ValueError(
            f"this loss reads {loss.n_inputs} features of kind {loss.kind!r}; its feature "
            f"set {features!r} on {env_id} has {n_loss_inputs(spec, features)}"
        )
    if info is not None and info.get("env_id") != env_id:
        warnings.warn(f"the loss was meta-trained on {info['env_id']}, used on {env_id}",
                      stacklevel=2)
    if lr is None:
        if "inner_lr" not in loss.meta_info_:
            raise ValueError("the loss has no recorded inner_lr; pass lr")
        lr = float(loss.meta_info_["inner_lr"])
    if policy_hidden is None:
        policy_hidden = info["hidden_layer_sizes"] if info else (32, 32)
    goals, single = _as_goals(spec, goal)
    return _meta_test_policies(spec, goals, single, n_updates, lr, policy_hidden, random_state,
                               eval_every, loss=loss, features=features)


def train_policy_with_model(
    dynamics: DynamicsEnsemble,
    env_id: str,
    goal,
    n_updates: int = 50,
    *,
    lr: float = 1e-2,
    policy_hidden: Sequence[int] = (32, 32),
    eval_every: int = 1,
    random_state=0,
) -> tuple[Params, np.ndarray]:
    """Baseline: SGD on the task loss (final distance) through a dynamics model.

    Parameters and returns as :func:`train_policy_with_loss` (same policy
    initialisations for the same ``random_state``); the distances are
    measured in the real environment. ``dynamics`` is any module mapping
    ``(state, action)`` to the next state with a ``member=`` keyword, e.g. the
    :class:`~rl.dynamics.DynamicsEnsemble` learned during meta-training.
    """
    spec = env_spec(env_id)
    goals, single = _as_goals(spec, goal)
    return _meta_test_policies(spec, goals, single, n_updates, lr, policy_hidden, random_state,
                               eval_every, dynamics=dynamics)


def learned_rates(loss: LearnedLoss, params: Params, env_id: str, goal, *,
                  policy_hidden: Sequence[int] | None = None) -> np.ndarray:
    """Learning-rate multipliers ``alpha`` the loss outputs for trained policies.

    Parameters
    ----------
    loss : LearnedLoss
        A loss from :func:`meta_train_model_based_loss`.
    params : dict of str to Tensor
        Policies as returned by :func:`train_policy_with_loss` (stacked along
        a leading goal axis for several goals).
    env_id : str
    goal : array-like of shape (2,) or (n_goals, 2)
    policy_hidden : sequence of int, optional
        Policy architecture; by default the meta-training one.

    Returns
    -------
    ndarray of shape (n_goals,)
        ``loss.learning_rate`` of each policy's real-environment trajectory
        (all ones for a loss without a learned learning rate); the policy's
        next update is a step of ``lr * alpha``.
    """
    spec = env_spec(env_id)
    features = feature_set_of(loss, spec)
    goals, single = _as_goals(spec, goal)
    info = loss.meta_info_.get("policy") or {}
    if single:
        params = {k: v.unsqueeze(0) for k, v in params.items()}
    if policy_hidden is None:
        policy_hidden = info.get("hidden_layer_sizes", (32, 32))
    rollouts = _Rollouts(spec, GoalPolicy(spec, policy_hidden))
    rates = []
    with torch.no_grad():
        for i, g in enumerate(goals):
            p = unstack_params(params, i)
            states = torch.as_tensor(rollouts.real(p, g)[0][:-1], dtype=torch.float32)
            goal_t = torch.as_tensor(g, dtype=torch.float32)
            rates.append(float(loss.learning_rate(*loss_features(
                spec, states, rollouts.act(p, states, goal_t), goal_t, features))))
    return np.asarray(rates)


def policy_trajectory(params: Params, env_id: str, goal,
                      policy_hidden: Sequence[int] = (32, 32)) -> np.ndarray:
    """Real-environment positions ``(T+1, 2)`` of one trained :class:`GoalPolicy` (for plots)."""
    spec = env_spec(env_id)
    goals, _ = _as_goals(spec, goal)
    rollouts = _Rollouts(spec, GoalPolicy(spec, policy_hidden))
    states, _, _ = rollouts.real(params, goals[0])
    return states[:, list(spec.position)]


__all__ = [
    "ENV_SPECS",
    "FEATURE_SETS",
    "GoalEnvSpec",
    "GoalPolicy",
    "ModelBasedProblem",
    "env_spec",
    "feature_set_of",
    "learned_rates",
    "loss_features",
    "meta_train_model_based_loss",
    "n_loss_inputs",
    "policy_trajectory",
    "train_policy_with_loss",
    "train_policy_with_model",
]
