"""Meta-test of model-based ML3 losses (:mod:`rl.meta.model_based`).

:func:`train_policy_with_loss` trains new policies on new goals with the
learned loss alone, from real-environment rollouts; :func:`train_policy_with_model`
is the baseline the paper compares with, gradient descent on the task loss
through the learned model.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from rl.dynamics import DynamicsEnsemble
from rl.envs import env_class
from rl.meta.info import PolicyLossInfo
from rl.meta.model_based_problem import _Rollouts
from rl.meta.model_based_spec import (
    GoalEnvSpec,
    GoalPolicy,
    _check_feature_set,
    env_spec,
    feature_set_of,
    goal_loss_structure,
    loss_features,
    n_loss_inputs,
)
from rl.meta.policies import init_params, stack_params, unstack_params
from sklearn_ml3 import LearnedLoss
from sklearn_ml3._utils import seed_from
from sklearn_ml3.meta import TaskObjective, meta_test, step_size_diagnostic

Params = dict[str, torch.Tensor]


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
        trajectories = torch.as_tensor(np.stack([r[0] for r in self.real(params)]),
                                       dtype=torch.float32)

        def one(p, trajectory, g):
            s = trajectory[:-1]
            return loss(*loss_features(self.spec, s, self.rollouts.act(p, s, g), g, self.features,
                                       final_state=trajectory[-1]))

        return torch.func.vmap(one)(params, trajectories, goals_t).sum()

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
    result = meta_test(batch, objective, [torch.as_tensor(goals, dtype=torch.float32)],
                       n_updates=n_updates, metric=batch.distances,
                       init_seeds=[[_batch_seed(random_state)]],
                       lr=lr, optimizer="sgd", eval_every=eval_every, keep_params=True)
    distances = result.curves[0, 0].T  # (n_goals, n_evaluations)
    params = result.params[0][0]
    if single:
        return unstack_params(params, 0), distances[0]
    return params, distances


def _batch_seed(random_state) -> int:
    seed = seed_from(random_state)
    return seed_from(np.random.default_rng()) if seed is None else seed


def _loss_settings(loss: LearnedLoss, env_id: str, lr: float | None,
                   policy_hidden_sizes: Sequence[int] | None):
    """The env spec, feature set, SGD step size and policy architecture a loss is used with."""
    spec = env_spec(env_id)
    info = PolicyLossInfo.of(loss)
    features = feature_set_of(loss, spec)
    if loss.kind != "features" or loss.n_inputs != n_loss_inputs(spec, features):
        raise ValueError(
            f"this loss reads {loss.n_inputs} features of kind {loss.kind!r}; its feature "
            f"set {features!r} on {env_id} has {n_loss_inputs(spec, features)}"
        )
    if info is not None and info.env_id != env_id:
        warnings.warn(f"the loss was meta-trained on {info.env_id}, used on {env_id}",
                      stacklevel=3)
    if lr is None:
        if "inner_lr" not in loss.meta_info_:
            raise ValueError("the loss has no recorded inner_lr; pass lr")
        lr = float(loss.meta_info_["inner_lr"])
    if policy_hidden_sizes is None:
        policy_hidden_sizes = info.hidden_sizes if info is not None else (32, 32)
    return spec, features, lr, tuple(policy_hidden_sizes)


def train_policy_with_loss(
    loss: LearnedLoss,
    env_id: str,
    goal,
    n_updates: int = 50,
    *,
    lr: float | None = None,
    policy_hidden_sizes: Sequence[int] | None = None,
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
    policy_hidden_sizes : sequence of int, optional
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
    spec, features, lr, policy_hidden_sizes = _loss_settings(loss, env_id, lr,
                                                             policy_hidden_sizes)
    goals, single = _as_goals(spec, goal)
    return _meta_test_policies(spec, goals, single, n_updates, lr, policy_hidden_sizes,
                               random_state, eval_every, loss=loss, features=features)


def train_policy_with_model(
    dynamics: DynamicsEnsemble,
    env_id: str,
    goal,
    n_updates: int = 50,
    *,
    lr: float = 1e-2,
    policy_hidden_sizes: Sequence[int] = (32, 32),
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
    return _meta_test_policies(spec, goals, single, n_updates, lr, policy_hidden_sizes,
                               random_state, eval_every, dynamics=dynamics)


def hand_written_feedback_loss(env_id: str, features: str = "auto") -> LearnedLoss:
    """The feedback loss with a fixed identity gain: ``-a . J(q_T)^T d_T``, a baseline.

    The hand-written counterpart of the learned ``"feedback"`` shape
    (:func:`~rl.meta.model_based_spec.goal_loss_structure`): every update
    pushes all the rollout's torques along the joint direction that moves the
    final fingertip towards the goal (the Jacobian-transpose step of iterative
    learning control). It has no recorded ``inner_lr``: give
    :func:`train_policy_with_loss` an ``lr`` (tuned like any baseline's).

    Parameters
    ----------
    env_id : str
        A 2-link arm environment (``"ml3/ReacherGoal-v0"``).
    features : str, default="auto"
        An outcome feature set (``"auto"`` picks one on an arm).

    Returns
    -------
    LearnedLoss
        ``structure`` of :func:`~rl.meta.model_based_spec.goal_loss_structure`
        with ``"feedback"``; a linear gain with zero weights and the identity
        as bias.
    """
    spec = env_spec(env_id)
    features = _check_feature_set(spec, features)
    structure = goal_loss_structure(spec, features, "feedback")
    loss = LearnedLoss(kind="features", n_inputs=n_loss_inputs(spec, features),
                       hidden_layer_sizes=(), bias=True, structure=structure)
    gain = loss.network_.gain[-1]
    with torch.no_grad():  # G = I whatever the state
        gain.weight.zero_()
        gain.bias.copy_(torch.eye(len(structure["action_columns"]),
                                  len(structure["error_columns"])).flatten())
    return loss


def step_size_against_model(
    loss: LearnedLoss,
    dynamics: DynamicsEnsemble,
    env_id: str,
    goal,
    n_updates: int = 50,
    *,
    lr: float | None = None,
    policy_hidden_sizes: Sequence[int] | None = None,
    random_state=0,
) -> dict:
    """Step-size diagnostic of a model-based loss against the task loss through ``dynamics``.

    Follows :func:`train_policy_with_loss` (same policies for the same
    ``random_state``) and before every update compares the learned loss's
    gradient with the gradient of :func:`train_policy_with_model`'s objective
    (summed final distance through the model), via
    :func:`sklearn_ml3.meta.step_size_diagnostic`.

    Returns
    -------
    dict
        As :func:`~sklearn_ml3.meta.step_size_diagnostic`: ``cosine``,
        ``norm_ratio`` and ``control_lr_factor`` (run
        :func:`train_policy_with_model` at ``lr x control_lr_factor`` for the
        step-size control).
    """
    spec, features, lr, hidden = _loss_settings(loss, env_id, lr, policy_hidden_sizes)
    goals, _ = _as_goals(spec, goal)
    batch = _PolicyBatch(spec, hidden, goals, features)
    return step_size_diagnostic(batch, loss, batch.through_model(dynamics),
                                [torch.as_tensor(goals, dtype=torch.float32)],
                                n_updates=n_updates, init_seeds=[[_batch_seed(random_state)]],
                                lr=lr, optimizer="sgd")


def learned_rates(loss: LearnedLoss, params: Params, env_id: str, goal, *,
                  policy_hidden_sizes: Sequence[int] | None = None) -> np.ndarray:
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
    policy_hidden_sizes : sequence of int, optional
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
    info = PolicyLossInfo.of(loss)
    if single:
        params = {k: v.unsqueeze(0) for k, v in params.items()}
    if policy_hidden_sizes is None:
        policy_hidden_sizes = info.hidden_sizes if info is not None else (32, 32)
    rollouts = _Rollouts(spec, GoalPolicy(spec, policy_hidden_sizes))
    rates = []
    with torch.no_grad():
        for i, g in enumerate(goals):
            p = unstack_params(params, i)
            trajectory = torch.as_tensor(rollouts.real(p, g)[0], dtype=torch.float32)
            states, goal_t = trajectory[:-1], torch.as_tensor(g, dtype=torch.float32)
            rates.append(float(loss.learning_rate(*loss_features(
                spec, states, rollouts.act(p, states, goal_t), goal_t, features,
                final_state=trajectory[-1]))))
    return np.asarray(rates)


def policy_trajectory(params: Params, env_id: str, goal,
                      policy_hidden_sizes: Sequence[int] = (32, 32)) -> np.ndarray:
    """Real-environment positions ``(T+1, 2)`` of one trained :class:`GoalPolicy` (for plots)."""
    spec = env_spec(env_id)
    goals, _ = _as_goals(spec, goal)
    rollouts = _Rollouts(spec, GoalPolicy(spec, policy_hidden_sizes))
    states, _, _ = rollouts.real(params, goals[0])
    return states[:, list(spec.position)]


__all__ = ["learned_rates", "policy_trajectory", "step_size_against_model",
           "train_policy_with_loss", "train_policy_with_model"]
