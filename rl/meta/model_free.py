"""Model-free meta-training of a policy loss (paper III-B.2).

The optimizee is a Gaussian MLP policy ``pi_theta(a | s)`` (a mean network and
a state-independent log standard deviation, initialised like SB3's
``ActorCriticPolicy``), evaluated functionally on a parameter dict so that the
engine of :mod:`sklearn_ml3.meta` can differentiate through its updates.

One task is one goal. Per inner step the policy takes an optimizer step on the
learned loss ``M_phi(s, a, log pi(a|s), g)`` over a mini-batch of its latest
rollouts; after ``n_epochs`` passes over the rollout (the engine's ``unroll``)
the *task loss* is the REINFORCE surrogate of fresh rollouts of the updated
policy, ``-mean_t[log pi'(a_t | s_t) A_t]`` with ``A_t`` the reward-to-go minus
its mean over the episodes at the same time step, divided by its standard
deviation. Those fresh rollouts are the experience of the next inner steps, so
each meta-iteration costs one rollout per task. Rewards never enter the
learned loss: at meta-test time (:class:`rl.ML3`) it trains policies without
them.

This module holds the entry point and re-exports the rest:
:mod:`rl.meta.model_free_spec` (the policy and the loss features) and
:mod:`rl.meta.model_free_problem` (:class:`ModelFreeProblem`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rl.meta.info import PolicyLossInfo
from rl.meta.model_free_problem import ModelFreeProblem, _GoalTask, _run_episodes  # noqa: F401
from rl.meta.model_free_spec import (  # noqa: F401  (re-exported)
    ACTION_EXTRAS,
    EXTRA_FEATURES,
    FEATURE_SETS,
    LOSS_STRUCTURES,
    SIMULATORS,
    TWIN_SIMULATORS,
    GaussianMLPPolicy,
    Params,
    _sb3_init,
    check_features,
    loss_features,
    policy_log_prob,
    policy_loss_structure,
    policy_mean,
)
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.meta import meta_train
from sklearn_ml3.meta.distributed import gather_task_records


def meta_train_policy_loss(
    env_id: str,
    goals=None,
    *,
    n_goals: int = 20,
    loss: LearnedLoss | None = None,
    loss_hidden_layer_sizes: Sequence[int] = (),
    loss_output: str = "none",
    policy_hidden_sizes: Sequence[int] = (64, 64),
    log_std_init: float = -1.0,
    rollout_episodes: int = 1,
    batch_size: int | None = 50,
    n_epochs: int = 4,
    rollouts_per_policy: int = 40,
    tasks_per_iter: int = 4,
    n_meta_iter: int = 100,
    inner_optimizer: str = "adam",
    inner_lr: float = 1e-3,
    meta_lr: float = 0.05,
    grad_clip: float | None = 1.0,
    horizon: int | None = None,
    gamma: float = 1.0,
    env_kwargs: dict[str, Any] | None = None,
    normalize_inputs: bool = True,
    action_penalty: float = 0.0,
    features: str = "auto",
    loss_structure: str = "quadratic",
    simulator: str = "auto",
    meta_gradient: str = "auto",
    es_population: int = 32,
    es_sigma: float = 0.1,
    task_loss_episodes: int | None = None,
    checkpoint=None,
    random_state=None,
    verbose: int = 1,
    callback=None,
) -> LearnedLoss:
    """Meta-train a policy loss ``M_phi(s, a, log pi(a|s), g)`` by model-free rollouts.

    Runs :func:`sklearn_ml3.meta.meta_train` on a :class:`ModelFreeProblem`.
    By default (ReacherGoal) the loss is a learned quadratic advantage times
    the log-probability, and evolution strategies score perturbed losses on
    whole training runs of fresh policies (``rollouts_per_policy`` rollouts of
    ``rollout_episodes`` episodes, ``n_epochs`` passes of ``batch_size``
    mini-batches, Adam) on the batched torch twin: the meta-test run of
    :class:`rl.ML3` with the loss's own settings. No gradient passes through
    the dynamics. With ``meta_gradient="backprop"`` (the default where no twin
    exists) each meta-iteration instead differentiates the REINFORCE surrogate
    of a fresh rollout through ``n_epochs`` passes of inner steps, and
    policies are re-initialised after ``rollouts_per_policy`` such rounds.

    Parameters
    ----------
    env_id : str
        Goal environment, e.g. ``"ml3/ReacherGoal-v0"``.
    goals : array-like of shape (n_goals, goal_dim), optional
        Meta-training goals; default: ``n_goals`` goals from the environment's
        ``sample_tasks(n_goals, random_state)``. Keep meta-test goals out.
    n_goals : int, default=20
        Used only when ``goals`` is None.
    loss : LearnedLoss, optional
        A features loss to continue training; by default a new one with
        ``loss_hidden_layer_sizes`` (ReLU, biases; ``()`` a linear ``t_phi``
        for the quadratic structure), ``loss_structure`` and ``loss_output``.
    loss_output : {"none", "softplus"}, default="none"
        Output of the loss network. A Softplus floor lets the policy push every
        sampled row of a mini-batch to a loss of ~0 within a few steps, where
        the gradients of both the inner and the meta level vanish; a linear
        output (like a policy-gradient surrogate, unbounded) keeps them alive.
    policy_hidden_sizes : sequence of int, default=(64, 64)
        Hidden layers of the meta-training policies (tanh, like SB3's
        ``MlpPolicy``). Other sizes can be trained at meta-test time.
    log_std_init : float, default=-1.0
        Initial log standard deviation of the policies (recorded, and used by
        :class:`rl.ML3`). The loss's update is a likelihood step towards its
        learned best action, estimated from the sampled actions: less action
        noise gives a less noisy step. On ReacherGoal's validation goals -1.0
        trained faster in the first 1,000 steps than -0.5 (docs/rl_model_free.md).
    rollout_episodes : int, default=1
        Episodes per rollout; ``rollout_episodes * horizon`` rows of experience.
        One episode per update doubles the updates of the first 1,000 steps
        over two; on ReacherGoal's validation goals that trained faster and
        ended closer (docs/rl_model_free.md).
    batch_size : int or None, default=50
        Rows per inner (mini-batch) step; None uses the whole rollout, i.e.
        one full-batch step per rollout and epoch.
    n_epochs : int, default=4
        Passes over each rollout; ``n_epochs * rows / batch_size`` inner steps
        are unrolled per meta-gradient.
    rollouts_per_policy : int, default=40
        Rollouts a policy is trained for before it is re-initialised (the
        length of a scored run with ``"es"``: 40 rollouts of 50 steps, the
        first 2,000 environment steps of meta-test). A loss is held to nothing
        beyond its scored runs: on ReacherGoal a loss scored on 1,000-step runs
        with log-std -1 trained fast and then let some runs drift away from
        the goal; 2,000-step runs kept them there.
    tasks_per_iter : int, default=4
        Goals per meta-gradient.
    n_meta_iter : int, default=100
        Meta-iterations (one rollout per task each, or one ES population). On
        ReacherGoal the scored runs stop improving after about 100; with
        2,000-step scored runs, 100 iterations cost what 200 of 1,000 steps
        did (docs/rl_model_free.md).
    inner_optimizer : {"sgd", "momentum", "adam"}, default="adam"
        Plain SGD passes the meta-gradient through the size of the learned
        loss's gradient; Adam's first steps (``lr * sign(g)``) are nearly flat
        in it.
    inner_lr : float, default=1e-3
    meta_lr : float, default=0.05
    grad_clip : float or None, default=1.0
    horizon : int, optional
        Episode length (default: the environment's limit).
    gamma : float, default=1.0
        Discount of the task loss's reward-to-go.
    env_kwargs : dict, optional
    normalize_inputs : bool, default=True
        Standardise the loss's inputs with a shift and scale fixed before
        meta-training (recorded in ``meta_info_["policy"]`` and applied by
        :class:`rl.ML3`).
    action_penalty : float, default=0.0
        Meta-train-only penalty on mean actions outside the action box, added
        to the task loss (see :class:`ModelFreeProblem`).
    features : {"auto", "plain", "joint_frame"}, default="auto"
        ``"joint_frame"`` (ReacherGoal) adds the arm's goal direction in joint
        space to the loss's inputs (see :func:`loss_features`); recorded in
        ``PolicyLossInfo.of(loss).features`` and used by :class:`rl.ML3`.
        ``"auto"``: ``"joint_frame"`` for ReacherGoal, ``"plain"`` otherwise.
    loss_structure : {"quadratic", "advantage", "free"}, default="quadratic"
        ``"advantage"``: ``M = -log pi(a|s) * f_phi(s, a, g)`` with ``f_phi``
        centred over each batch, a learned advantage
        (:class:`~sklearn_ml3.networks.ScoreWeightedLossNet`);
        ``"quadratic"``: the same with ``f_phi = -1/2 ||a - t_phi(s, g)||^2``,
        a learned best action ``t_phi`` (see :func:`policy_loss_structure`);
        ``"free"``: any function of the whole row, log-probability included
        (an MLP with ``loss_output``). Recorded in ``meta_info_["policy"]``.
    simulator : {"auto", "env", "twin"}, default="auto"
        Where meta-training rolls out (see :class:`ModelFreeProblem`); "auto"
        takes the batched torch twin where one exists (ReacherGoal).
    meta_gradient : {"auto", "backprop", "es"}, default="auto"
        ``"es"`` scores perturbed losses on whole training runs of
        ``rollouts_per_policy`` updates (:meth:`ModelFreeProblem.
        population_task_loss`, needs the twin); ``"backprop"`` differentiates
        the REINFORCE surrogate of fresh rollouts through ``n_epochs`` passes
        of inner steps. "auto": ``"es"`` on the twin, ``"backprop"`` otherwise.
    es_population : int, default=32
        Population of ``"es"`` (antithetic pairs, so even). On ReacherGoal 32
        members scored better on the validation goals than 16 (200 or 400
        iterations) and as well as 64.
    es_sigma : float, default=0.1
        Perturbation size of ``"es"``.
    task_loss_episodes : int, optional
        ``"backprop"`` on the twin: episodes of each task-loss rollout
        (default ``rollout_episodes``).
    checkpoint : path, optional
        Resumable meta-training state (see :func:`~sklearn_ml3.meta.meta_train`).
    random_state : int or None
    verbose : int, default=1
        0 silences the progress bar.
    callback : callable, optional
        ``callback(iteration, task_loss)``.

    Returns
    -------
    loss : LearnedLoss
        ``meta_info_["policy"]`` (a :class:`~rl.meta.info.PolicyLossInfo`,
        read with ``PolicyLossInfo.of(loss)``) records what :class:`rl.ML3`
        needs to use it as trained (rollout size, mini-batch, epochs, goal
        dimension, input standardisation, policy architecture);
        ``meta_info_["rollout_stats"]`` the mean return and final distance of
        the task-loss rollouts per meta-iteration.

    Examples
    --------
    >>> from rl import meta_train_policy_loss  # doctest: +SKIP
    >>> loss = meta_train_policy_loss("ml3/ReacherGoal-v0", n_meta_iter=100)  # doctest: +SKIP
    >>> loss.save("reacher.ml3")  # doctest: +SKIP
    """
    import rl.envs  # noqa: F401

    if goals is None:
        env_cls = gym.spec(env_id).entry_point
        env = gym.make(env_id, **(env_kwargs or {})).unwrapped
        if not hasattr(env, "sample_tasks"):
            raise ValueError(f"{env_id} ({env_cls}) cannot sample goals; pass goals=")
        goals = env.sample_tasks(int(n_goals), np.random.default_rng(random_state))
        env.close()
    if features == "auto":
        features = "joint_frame" if env_id in TWIN_SIMULATORS else "plain"
    if simulator == "auto":
        simulator = "twin" if env_id in TWIN_SIMULATORS else "env"
    if meta_gradient == "auto":
        meta_gradient = "es" if simulator == "twin" else "backprop"
    problem = ModelFreeProblem(
        env_id, goals, policy_hidden_sizes=policy_hidden_sizes, log_std_init=log_std_init,
        rollout_episodes=rollout_episodes, batch_size=batch_size, horizon=horizon, gamma=gamma,
        env_kwargs=env_kwargs, normalize_inputs=normalize_inputs, action_penalty=action_penalty,
        features=features, simulator=simulator, n_epochs=n_epochs,
        task_loss_episodes=task_loss_episodes)
    inner_steps = problem.steps_per_rollout * int(rollouts_per_policy)
    if loss is None:
        loss = LearnedLoss(kind="features", n_inputs=problem.n_loss_inputs,
                           hidden_layer_sizes=loss_hidden_layer_sizes, bias=True,
                           output=loss_output, random_state=random_state,
                           structure=policy_loss_structure(
                               loss_structure, problem.obs_dim, problem.act_dim,
                               problem.goal_dim, problem.features))
    elif loss.kind != "features" or loss.n_inputs != problem.n_loss_inputs:
        raise ValueError(f"loss must be a LearnedLoss(kind='features', n_inputs="
                         f"{problem.n_loss_inputs}) for {env_id}")
    meta_train(loss, problem, n_meta_iter=n_meta_iter, inner_steps=inner_steps,
               unroll=inner_steps if meta_gradient == "es" else problem.steps_per_rollout,
               tasks_per_iter=tasks_per_iter, inner_optimizer=inner_optimizer,
               inner_lr=inner_lr, meta_lr=meta_lr, grad_clip=grad_clip,
               meta_gradient=meta_gradient, es_population=es_population, es_sigma=es_sigma,
               checkpoint=checkpoint, random_state=random_state, verbose=verbose,
               callback=callback)
    loss.meta_info_["policy"] = PolicyLossInfo(
        env_id=env_id,
        paradigm="model_free",
        hidden_sizes=tuple(int(h) for h in problem.policy_hidden_sizes),
        features=problem.features,
        horizon=int(problem.horizon),
        obs_dim=int(problem.obs_dim),
        act_dim=int(problem.act_dim),
        goal_dim=int(problem.goal_dim),
        inputs=("obs", "action", "log_prob", "goal"),
        loss_structure=loss_structure,
        simulator=problem.simulator,
        log_std_init=float(problem.log_std_init),
        rollout_steps=problem.rollout_episodes * problem.horizon,
        batch_size=int(problem.batch_size),
        n_epochs=int(n_epochs),
        rollouts_per_policy=int(rollouts_per_policy),
        input_shift=problem.input_shift,
        input_scale=problem.input_scale,
    ).to_dict()
    # per meta-iteration means of this call's task-loss rollouts (a resumed run: its part
    # only), over the tasks of all processes under torch.distributed
    if meta_gradient == "es":  # one record per meta-iteration: this process's members
        loss.meta_info_["rollout_stats"] = list(problem.stats)
    else:
        stats = gather_task_records(problem.stats, tasks_per_iter)
        loss.meta_info_["rollout_stats"] = [
            {key: float(np.nanmean([s[key] for s in stats[i:i + tasks_per_iter]]))
             for key in ("return", "final_distance")}
            for i in range(0, len(stats), tasks_per_iter)
        ]
    return loss


__all__ = [
    "GaussianMLPPolicy",
    "ModelFreeProblem",
    "loss_features",
    "meta_train_policy_loss",
    "policy_log_prob",
    "policy_mean",
]
