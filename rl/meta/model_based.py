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
loss network has one output per time step (Softplus for the free shape),
and a second head outputs a learning-rate multiplier (``learned_lr``); the
policy is trained with the ``inner_lr`` recorded on the loss times it. On
ReacherGoal the default loss reads where each rollout ended and moves the
actions by a learned gain times that miss (``loss_structure="feedback"``).

This module holds the entry point and re-exports the rest:
:mod:`rl.meta.model_based_spec` (environments, :class:`GoalPolicy`, loss
features), :mod:`rl.meta.model_based_problem` (rollouts,
:class:`ModelBasedProblem`) and :mod:`rl.meta.model_based_eval` (meta-test).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rl.dynamics import DynamicsEnsemble
from rl.meta.info import PolicyLossInfo
from rl.meta.model_based_eval import (  # noqa: F401  (re-exported)
    _as_goals,
    _meta_test_policies,
    _PolicyBatch,
    _stacked_policies,
    hand_written_feedback_loss,
    learned_rates,
    policy_trajectory,
    step_size_against_model,
    train_policy_with_loss,
    train_policy_with_model,
)
from rl.meta.model_based_problem import ModelBasedProblem, _Rollouts  # noqa: F401
from rl.meta.model_based_spec import (  # noqa: F401  (re-exported)
    ENV_SPECS,
    FEATURE_SETS,
    LOSS_STRUCTURES,
    OUTCOME_FEATURE_SETS,
    START_SEED,
    GoalEnvSpec,
    GoalPolicy,
    Params,
    _check_feature_set,
    _goal_env_spec,
    _small_output,
    default_feature_set,
    default_loss_structure,
    env_spec,
    feature_set_of,
    goal_loss_structure,
    loss_features,
    n_loss_inputs,
)
from sklearn_ml3 import LearnedLoss
from sklearn_ml3._utils import seed_from
from sklearn_ml3.meta import meta_train


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
    policy_hidden_sizes: Sequence[int] = (32, 32),
    dynamics: DynamicsEnsemble | None = None,
    n_random_episodes: int = 20,
    refit_every: int = 25,
    refit_epochs: int = 20,
    initial_epochs: int = 100,
    model_member: str = "mean",
    features: str = "auto",
    loss_structure: str = "auto",
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
    loss_hidden, policy_hidden_sizes : sequence of int
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
    features : {"auto", "full", "relative", "goal_frame", "joint_frame", \
"joint_frame_outcome"}, default="auto"
        What the loss reads per time step (:func:`loss_features`); "auto" is
        the goal frame on PointmassGoal and the joint frame with the
        rollout's outcome on ReacherGoal.
    loss_structure : {"auto", "free", "quadratic", "homogeneous", "feedback"}, default="auto"
        The loss's shape (:func:`goal_loss_structure`); "auto" is "feedback"
        with the outcome features (ReacherGoal) and "free" otherwise
        (PointmassGoal). A free network of the
        row, or ``1/2 ||a - t_phi(rest of the row)||^2``, a learned controller
        that every update pulls the policy's actions towards (its layers have
        biases). ``"homogeneous"`` is that controller without biases: a ReLU
        network with ``t_phi(c x) = c t_phi(x)`` for ``c > 0``, which pushes
        twice as hard from twice as far, as a PD law does. ``"feedback"``
        (with ``features="joint_frame_outcome"``) is ``-a . G_phi(s) e``: each
        update moves the actions by a learned gain times the joint direction
        ``e`` in which the rollout missed its goal. On ReacherGoal only the
        feedback shape carries over to the unseen half-plane; on
        PointmassGoal the controller trains faster at first and ties the free
        loss on validation goals (docs/rl_model_based.md).
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
        ``meta_info_["policy"]`` (a :class:`~rl.meta.info.PolicyLossInfo`:
        architecture, env, horizon, feature set) which
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
    problem = ModelBasedProblem(env_id, goals, dynamics, policy_hidden_sizes, model_member,
                                features=features, random_state=int(rng.integers(2**31 - 1)))
    if loss_structure == "auto":
        loss_structure = default_loss_structure(problem.features)
    columns = goal_loss_structure(spec, problem.features, loss_structure)
    problem.collect_random(n_random_episodes)
    problem.fit_dynamics(initial_epochs)
    # the free loss has no biases (as before the shapes were added); the
    # controller and the feedback gain have them, the homogeneous controller not
    loss = LearnedLoss(kind="features", n_inputs=n_loss_inputs(spec, problem.features),
                       hidden_layer_sizes=loss_hidden, output="softplus",
                       bias=loss_structure in ("quadratic", "feedback"), structure=columns,
                       learned_lr=learned_lr, random_state=int(rng.integers(2**31 - 1)))

    def refit(iteration: int, _value: float) -> None:
        problem.share_rollouts()
        if refit_every and (iteration + 1) % refit_every == 0 and iteration + 1 < n_meta_iter:
            problem.refit(n_epochs=refit_epochs)

    meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=inner_steps,
               unroll=unroll, tasks_per_iter=tasks_per_iter, inner_optimizer="sgd",
               inner_lr=inner_lr, meta_lr=meta_lr, grad_clip=grad_clip, vectorize=False,
               random_state=int(rng.integers(2**31 - 1)), verbose=verbose, callback=refit)
    loss.meta_info_["policy"] = PolicyLossInfo(
        env_id=env_id, paradigm="model_based",
        hidden_sizes=tuple(int(h) for h in problem.policy_hidden_sizes),
        features=problem.features, horizon=int(spec.horizon),
        loss_structure=loss_structure).to_dict()
    loss.meta_info_["dynamics"] = dynamics.describe()
    return loss


__all__ = [
    "ENV_SPECS",
    "FEATURE_SETS",
    "LOSS_STRUCTURES",
    "OUTCOME_FEATURE_SETS",
    "GoalEnvSpec",
    "GoalPolicy",
    "ModelBasedProblem",
    "default_feature_set",
    "default_loss_structure",
    "env_spec",
    "feature_set_of",
    "goal_loss_structure",
    "hand_written_feedback_loss",
    "learned_rates",
    "loss_features",
    "meta_train_model_based_loss",
    "n_loss_inputs",
    "policy_trajectory",
    "step_size_against_model",
    "train_policy_with_loss",
    "train_policy_with_model",
]
