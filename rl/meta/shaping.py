"""Shaping policy losses with meta-train-only information (paper III-C, IV-B.3-4).

Two model-based problems with *known* dynamics: the policy's rollouts and
the task loss run through the exact torch twins of the environments
(:func:`rl.envs.mountain_car_step`, :func:`rl.envs.reacher_step`), and the
task loss is differentiated through those dynamics. Both follow the shaping
convention of :mod:`sklearn_ml3.shaping`,

    L_T = beta * task_loss + gamma * L_extra,

with the meta-train-only information in the task's ``extra`` mapping:

- :class:`MountainCarShapingProblem`: the task loss is the final distance to
  the goal; the shaping term rewards visiting an intermediate point on the
  left hill (``extra["intermediate"]``), which a greedy optimiser never does;
- :class:`ReacherExpertProblem`: the task loss is behavioural cloning of
  iLQR expert actions (``extra["expert_states"]``, ``extra["expert_actions"]``).

In both, the learned loss (``LearnedLoss(kind="features")``) reads one row
per time step of the policy's own rollout: the state features, the action
(differentiable w.r.t. the policy) and the goal. At meta-test,
:func:`train_twin_policy_with_loss` trains a fresh policy with the learned loss
alone through :func:`sklearn_ml3.meta.meta_test`, which hides ``task.extra``;
:func:`train_twin_policies` trains one policy per goal for many goals in one
batched rollout.

:class:`GoalTask`, :class:`TwinPolicy` and the twin-rollout machinery both
problems share are in :mod:`rl.meta.shaping_base` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rl.meta.policies import unstack_params
from rl.meta.shaping_base import (  # noqa: F401  (re-exported)
    GoalTask,
    Params,
    TwinPolicy,
    _check_weights,
    _TwinGoalProblem,
)
from sklearn_ml3.meta import TaskObjective, meta_test


# ---------------------------------------------------------------- mountain car
class MountainCarShapingProblem(_TwinGoalProblem):
    """MountainCarGoal from rest at the valley bottom, shaped by an intermediate goal.

    A task is a goal position (on the right hill by default). The policy
    reads ``(position, velocity / 0.07, goal, goal - position)`` and drives
    the car for ``horizon`` steps of :func:`rl.envs.mountain_car_step` from
    rest at the valley bottom. Task loss of the updated policy, through the
    twin dynamics:

    - unshaped: ``|x_T - goal|``;
    - shaped: ``beta * |x_T - goal| + gamma * max(0, min_t x_t - x_left)``, with
      the intermediate point ``x_left`` stored in ``task.extra["intermediate"]``:
      a hinge that rewards swinging at least as far left as ``x_left`` and
      vanishes once the rollout gets there, so it never competes with the
      final-distance term after the swing is found; with ``intermediate_step=k``
      the term is ``max(0, x_k - x_left)`` instead (the car must be there at
      step ``k``; ``k`` is stored in the extra too).

    The learned loss reads one row per time step (:meth:`loss_inputs`):
    ``(goal - x_t, v_t / 0.07, a_t)`` with ``loss_features="relative"``
    (default; goal-relative, the same for every goal), or the policy's
    features and the action with ``loss_features="absolute"``.

    Parameters
    ----------
    goals : array-like of shape (n_goals,) or (n_goals, 1)
        Meta-training goal positions in ``[-1.2, 0.6]``.
    shaped : bool, default=True
    beta, gamma : float, default=1.0, 1.0
    intermediate : float, default=-1.0
        The point on the left hill (meta-train-only information).
    intermediate_step : int, optional
        Time step at which the car should be at ``intermediate`` (default:
        any time step).
    horizon : int, default=100
    policy_hidden_sizes : sequence of int or None, default=(16, 16)
        Hidden widths of the MLP policy; ``None`` makes the policy an
        open-loop action sequence ``a_t = tanh(u_t)`` (parameters ``{"u"}``).
    loss_features : {"relative", "absolute"}, default="relative"
        Inputs of the learned loss (see above).
    """

    n_actions = 1
    n_features = 4

    def __init__(self, goals, *, shaped: bool = True, beta: float = 1.0, gamma: float = 1.0,
                 intermediate: float = -1.0, intermediate_step: int | None = None,
                 horizon: int = 100, policy_hidden_sizes: Sequence[int] | None = (16, 16),
                 loss_features: str = "relative") -> None:
        if loss_features not in ("relative", "absolute"):
            raise ValueError(f"loss_features must be 'relative' or 'absolute', got "
                             f"{loss_features!r}")
        self.loss_features = loss_features
        from rl.envs.mountain_car import MAX_POSITION, MIN_POSITION, MountainCarGoalEnv

        if int(horizon) < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        self.horizon = int(horizon)
        super().__init__(goals, MountainCarGoalEnv, policy_hidden_sizes)
        if not MIN_POSITION <= float(intermediate) <= MAX_POSITION:
            raise ValueError(f"intermediate must lie in [{MIN_POSITION}, {MAX_POSITION}], "
                             f"got {intermediate}")
        self.shaped = bool(shaped)
        self.beta, self.gamma = _check_weights(self.shaped, beta, gamma)
        self.intermediate = float(intermediate)
        if intermediate_step is not None and not 0 <= int(intermediate_step) <= self.horizon:
            raise ValueError(f"intermediate_step must lie in [0, horizon], got "
                             f"{intermediate_step}")
        self.intermediate_step = None if intermediate_step is None else int(intermediate_step)
        self._train_tasks = [self.make_task(g, with_extra=True) for g in self.goals]

    def make_task(self, goal, with_extra: bool = False) -> GoalTask:
        """The task of ``goal``; ``with_extra`` adds the intermediate point (meta-train only)."""
        goal_t = torch.as_tensor(self.validate_goal(goal), dtype=torch.float32)
        extra = {}
        if with_extra:
            extra["intermediate"] = torch.tensor(self.intermediate)
            if self.intermediate_step is not None:
                extra["intermediate_step"] = torch.tensor(self.intermediate_step)
        return GoalTask(goal_t, extra)

    def step(self, state, action):
        from rl.envs.mountain_car import mountain_car_step

        return mountain_car_step(state, action)

    def start_state(self) -> torch.Tensor:
        from rl.envs.mountain_car import VALLEY_BOTTOM

        return torch.tensor([VALLEY_BOTTOM, 0.0])

    def features(self, states, goal):
        from rl.envs.mountain_car import MAX_SPEED

        pos, vel = states[..., :1], states[..., 1:2] / MAX_SPEED
        goal = goal.expand(*pos.shape[:-1], 1)
        return torch.cat([pos, vel, goal, goal - pos], -1)

    @property
    def n_loss_inputs(self) -> int:
        """Features per row of :meth:`loss_inputs` (``LearnedLoss(n_inputs=...)``)."""
        if self.loss_features == "relative":
            return 2 + self.n_actions
        return self.n_features + self.n_actions

    def loss_inputs(self, params: Params, task: GoalTask) -> tuple[torch.Tensor, ...]:
        """One row per time step: ``(goal - x_t, v_t / 0.07, a_t)`` ("relative").

        The states come from a rollout of the detached policy; the actions are
        recomputed from them so that they are differentiable w.r.t. ``params``.
        Reads ``task.goal`` only.
        """
        if self.loss_features == "absolute":
            return super().loss_inputs(params, task)
        with torch.no_grad():
            states, _ = self.rollout({k: v.detach() for k, v in params.items()}, task.goal)
        states = states[:-1]
        feats = self.features(states, task.goal)
        return feats[..., [3, 1]], self.act(params, states, task.goal)

    def final_distance(self, params: Params, task: GoalTask) -> torch.Tensor:
        """``|x_T - goal|`` of a differentiable twin rollout (reads ``task.goal`` only)."""
        states, _ = self.rollout(params, task.goal)
        return torch.sqrt((states[-1, ..., 0] - task.goal[..., 0]) ** 2 + 1e-10)

    def task_loss(self, params: Params, task: GoalTask) -> torch.Tensor:
        states, _ = self.rollout(params, task.goal)
        distance = torch.sqrt((states[-1, 0] - task.goal[0]) ** 2 + 1e-10)
        if not self.shaped:
            return distance
        if "intermediate_step" in task.extra:
            reach = states[int(task.extra["intermediate_step"]), 0]
        else:
            reach = states[:, 0].min()
        visit = torch.relu(reach - task.extra["intermediate"])
        return self.beta * distance + self.gamma * visit

    def describe(self) -> dict[str, Any]:
        return {"type": "mountain_car_shaping", "shaped": self.shaped, "beta": self.beta,
                "loss_features": self.loss_features,
                "gamma": self.gamma, "intermediate": self.intermediate,
                "intermediate_step": self.intermediate_step,
                "horizon": self.horizon, "goals": self.goals.ravel().tolist(),
                "policy_hidden_sizes": None if self.policy_hidden_sizes is None
                else list(self.policy_hidden_sizes),
                "dynamics": "mountain_car_step"}


# ------------------------------------------------------------------ reacher
class ReacherExpertProblem(_TwinGoalProblem):
    """ReacherGoal from rest at ``q = 0``, meta-trained on iLQR expert demonstrations.

    A task is a target ``(x, y)``. The policy reads ReacherGoal's observation
    ``(cos q, sin q, qd, fingertip - goal, goal)`` (so it runs unchanged in
    ``ml3/ReacherGoal-v0``) and acts for ``horizon`` steps of
    :func:`rl.envs.reacher_step`. Task loss of the updated policy:

    - shaped (the paper's): ``beta * ||tip_T - goal|| + gamma * BC`` with the
      behavioural-cloning error ``BC = mean_t ||pi(s*_t) - a*_t||^2`` on the
      expert's states and actions (``task.extra``); ``beta=0`` by default;
    - unshaped: ``||tip_T - goal||`` through the twin.

    Expert plans (:func:`rl.baselines.expert_actions_reacher`) are computed
    once per training goal, from the same start state.

    Parameters
    ----------
    goals : array-like of shape (n_goals, 2)
        Meta-training targets (within reach).
    shaped : bool, default=True
    beta, gamma : float, default=0.0, 1.0
    horizon : int, optional
        Steps per rollout; default: ``ReacherGoalEnv.max_episode_steps`` (50).
    expert_iter : int, default=30
        iLQR iterations per expert plan.
    policy_hidden_sizes : sequence of int, default=(32, 32)
    """

    n_actions = 2
    n_features = 10

    def __init__(self, goals, *, shaped: bool = True, beta: float = 0.0, gamma: float = 1.0,
                 horizon: int | None = None, expert_iter: int = 30,
                 policy_hidden_sizes: Sequence[int] = (32, 32)) -> None:
        from rl.envs.reacher import ReacherGoalEnv

        horizon = ReacherGoalEnv.max_episode_steps if horizon is None else horizon
        if int(horizon) < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        self.horizon = int(horizon)
        super().__init__(goals, ReacherGoalEnv, policy_hidden_sizes)
        self.shaped = bool(shaped)
        self.beta, self.gamma = _check_weights(self.shaped, beta, gamma)
        self.expert_iter = int(expert_iter)
        self._train_tasks = [self.make_task(g, with_expert=True) for g in self.goals]

    def make_task(self, goal, with_expert: bool = False) -> GoalTask:
        """The task of ``goal``; ``with_expert`` plans the iLQR demonstration (meta-train only)."""
        goal = self.validate_goal(goal)
        extra: dict[str, torch.Tensor] = {}
        if with_expert:
            from rl.baselines import expert_actions_reacher

            actions, states, _ = expert_actions_reacher(
                goal, self.start_state().double().numpy(), self.horizon, self.expert_iter)
            extra = {"expert_states": torch.as_tensor(states[:-1], dtype=torch.float32),
                     "expert_actions": torch.as_tensor(actions, dtype=torch.float32)}
        return GoalTask(torch.as_tensor(goal, dtype=torch.float32), extra)

    def step(self, state, action):
        from rl.envs.planar_arm import reacher_step

        return reacher_step(state, action)

    def start_state(self) -> torch.Tensor:
        return torch.zeros(4)

    def features(self, states, goal):
        from rl.envs.planar_arm import reacher_fingertip

        q, qd = states[..., :2], states[..., 2:4]
        goal = goal.expand(*q.shape[:-1], 2)
        tip = reacher_fingertip(q)
        return torch.cat([torch.cos(q), torch.sin(q), qd, tip - goal, goal], -1)

    def final_distance(self, params: Params, task: GoalTask) -> torch.Tensor:
        """``||tip_T - goal||`` of a differentiable twin rollout (reads ``task.goal`` only)."""
        from rl.envs.planar_arm import reacher_fingertip

        states, _ = self.rollout(params, task.goal)
        offset = reacher_fingertip(states[-1, ..., :2]) - task.goal
        return torch.sqrt((offset**2).sum(-1) + 1e-10)

    def cloning_error(self, params: Params, task: GoalTask) -> torch.Tensor:
        """``mean_t ||pi(s*_t) - a*_t||^2`` on the expert demonstration in ``task.extra``."""
        pred = self.act(params, task.extra["expert_states"], task.goal)
        return ((pred - task.extra["expert_actions"]) ** 2).sum(-1).mean()

    def task_loss(self, params: Params, task: GoalTask) -> torch.Tensor:
        if not self.shaped:
            return self.final_distance(params, task)
        value = self.gamma * self.cloning_error(params, task)
        if self.beta:
            value = value + self.beta * self.final_distance(params, task)
        return value

    def describe(self) -> dict[str, Any]:
        return {"type": "reacher_expert_shaping", "shaped": self.shaped, "beta": self.beta,
                "gamma": self.gamma, "horizon": self.horizon, "goals": self.goals.tolist(),
                "expert_iter": self.expert_iter,
                "policy_hidden_sizes": list(self.policy_hidden_sizes),
                "dynamics": "reacher_step"}


# ------------------------------------------------------------------ meta-test
def train_twin_policy_with_loss(problem: _TwinGoalProblem, loss, task: GoalTask, *,
                                n_updates: int, lr: float, solver: str = "sgd", seed: int = 0,
                                ) -> tuple[Params, np.ndarray]:
    """Train a fresh policy on ``task`` with ``loss`` alone; final distance after every update.

    Only ``problem.init_params``, ``problem.loss_inputs`` and
    ``problem.final_distance`` are used: they read ``task.goal``, never
    ``task.extra``.

    Parameters
    ----------
    problem : MountainCarShapingProblem or ReacherExpertProblem
    loss : callable
        A meta-trained :class:`~sklearn_ml3.LearnedLoss` (``kind="features"``).
    task : GoalTask
    n_updates : int
    lr : float
    solver : {"sgd", "momentum", "adam"}, default="sgd"
    seed : int, default=0
        Policy initialisation.

    Returns
    -------
    params : dict
        The trained policy's parameters.
    distances : ndarray of shape (n_updates + 1,)
        Final distance to the goal in the twin, before and after every update
        (the same order as :func:`rl.train_policy_with_loss`).
    """
    return _meta_test_one(problem, loss, task, n_updates, lr, solver, seed)


def train_twin_policy_on_task_loss(problem: _TwinGoalProblem, task: GoalTask, *,
                                   n_updates: int, lr: float, solver: str = "adam",
                                   seed: int = 0) -> tuple[Params, np.ndarray]:
    """Baseline: gradient descent on the final distance through the twin dynamics.

    The hand-written loss of the model-based setting (no extra information).
    Same returns as :func:`train_twin_policy_with_loss`.
    """
    return _meta_test_one(problem, TaskObjective(problem.final_distance, "final_distance"),
                          task, n_updates, lr, solver, seed)


def train_twin_policies(problem: _TwinGoalProblem, loss, tasks: Sequence[GoalTask], *,
                        n_updates: int, lr: float | None = None, solver: str | None = None,
                        seed: int = 0) -> tuple[list[Params], np.ndarray]:
    """Train one fresh policy per task at once, in one batched rollout (:meth:`batch`).

    Each policy follows its own gradient, as with :func:`train_twin_policy_with_loss`
    one task at a time, for about the cost of one task: the twins' cost is per
    torch operation, not per goal.

    Parameters
    ----------
    problem : MountainCarShapingProblem or ReacherExpertProblem
    loss : LearnedLoss or TaskObjective
        A meta-trained loss (``kind="features"``), or the hand-written task
        loss ``TaskObjective(problem.summed_final_distance)``.
    tasks : sequence of GoalTask
        Meta-test tasks (:meth:`make_task` without extra information).
    n_updates : int
    lr, solver : optional
        Default: what ``loss`` was meta-trained with.
    seed : int, default=0
        The batch's initialisation; policy ``i`` starts from
        ``rl.meta.shaping_base.batch_init_seeds(seed, len(tasks))[i]``.

    Returns
    -------
    params : list of dict
        The trained policies, one per task.
    distances : ndarray of shape (n_tasks, n_updates + 1)
        Final distance to each goal in the twin, before and after every update.
    """
    tasks = list(tasks)
    result = meta_test(problem, loss, [problem.batch(tasks)], n_updates=n_updates,
                       metric=problem.final_distance, init_seeds=[[seed]], lr=lr,
                       optimizer=solver, keep_params=True)
    stacked = result.params[0][0]
    return ([unstack_params(stacked, i) for i in range(len(tasks))],
            result.curves[0, 0].T.copy())


def _meta_test_one(problem, loss, task, n_updates, lr, solver, seed):
    result = meta_test(problem, loss, [task], n_updates=n_updates, metric=problem.final_distance,
                       init_seeds=[[seed]], lr=lr, optimizer=solver, keep_params=True)
    return result.params[0][0], result.curves[0, 0]


def behaviour_cloning(problem: ReacherExpertProblem, tasks: Sequence[GoalTask], *,
                      n_updates: int = 500, lr: float = 1e-2, seed: int = 0) -> Params:
    """Baseline: fit one goal-conditioned policy to the expert data of ``tasks`` (Adam, MSE).

    Reads ``task.extra`` (the demonstrations): this is the meta-train-time
    information used directly, without a learned loss.
    """
    if not tasks:
        raise ValueError("behaviour_cloning needs at least one task with a demonstration")
    params = {k: v.requires_grad_() for k, v in problem.init_params(tasks[0], seed).items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    for _ in range(int(n_updates)):
        optimizer.zero_grad(set_to_none=True)
        torch.stack([problem.cloning_error(params, t) for t in tasks]).mean().backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in params.items()}


# ------------------------------------------------------- gymnasium checks
def evaluate_in_env(problem: _TwinGoalProblem, params: Params, goal, *, seed: int = 0,
                    n_steps: int | None = None) -> dict[str, float]:
    """Roll the policy out in the real gymnasium environment.

    MountainCar: ``ml3/MountainCarGoal-v0`` started at rest at the valley
    bottom; Reacher: ``ml3/ReacherGoal-v0`` (its own start noise, seeded).

    Returns
    -------
    result : dict
        ``final_distance``, ``min_distance`` and ``success`` (the env's
        ``info["is_success"]`` at the last step).
    """
    import gymnasium as gym

    import rl.envs  # noqa: F401  (registers the ml3/ envs)

    goal = problem.validate_goal(goal)
    n_steps = problem.horizon if n_steps is None else int(n_steps)
    if isinstance(problem, MountainCarShapingProblem):
        from rl.envs.mountain_car import VALLEY_BOTTOM

        env = gym.make("ml3/MountainCarGoal-v0", goal=float(goal[0]), max_episode_steps=n_steps,
                       init_low=VALLEY_BOTTOM, init_high=VALLEY_BOTTOM)

        def obs_to_features(obs):
            state = torch.as_tensor(obs[:2], dtype=torch.float32)
            return problem.features(state, torch.as_tensor(goal, dtype=torch.float32))
    else:
        env = gym.make("ml3/ReacherGoal-v0", goal=goal, max_episode_steps=n_steps)

        def obs_to_features(obs):
            return torch.as_tensor(obs, dtype=torch.float32)

    obs, _ = env.reset(seed=seed)
    distances, info = [], {}
    with torch.no_grad():
        for t in range(n_steps):
            if "u" in params:
                action = torch.tanh(params["u"][t]).numpy()
            else:
                action = problem.policy.act(params, obs_to_features(obs)).numpy()
            obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
            distances.append(float(info["distance"]))
            if terminated or truncated:
                break
    env.close()
    return {"final_distance": distances[-1], "min_distance": min(distances),
            "success": bool(info["is_success"])}


__all__ = [
    "GoalTask",
    "MountainCarShapingProblem",
    "ReacherExpertProblem",
    "TwinPolicy",
    "behaviour_cloning",
    "evaluate_in_env",
    "train_twin_policies",
    "train_twin_policy_on_task_loss",
    "train_twin_policy_with_loss",
]
