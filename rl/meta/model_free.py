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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torchopt
from torch import nn

from rl.envs.reacher_batched import BatchedReacherGoal
from rl.meta._arm import joint_frame
from rl.meta.policies import build_mlp, init_params, mlp_forward, stack_params
from sklearn_ml3 import LearnedLoss
from sklearn_ml3.meta import meta_train
from sklearn_ml3.meta.distributed import gather_task_records

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


def _run_episodes(sim, params: Params, start_states: torch.Tensor, horizon: int,
                  gen: torch.Generator, deterministic: bool = False, members: int = 1):
    """Episodes of stacked policies on a batched simulator.

    ``params`` holds ``members * B`` stacked policies, each running ``E``
    episodes; ``sim`` holds their ``members * B * E`` episodes in that order.
    ``start_states`` (B * E, 4) and the action noise are shared by the
    members (common random numbers). Returns ``obs`` (M*B, E, T, obs_dim),
    unclipped ``actions`` (M*B, E, T, act_dim), ``rewards`` (M*B, E, T) and
    the final ``distance`` (M*B, E).
    """
    n_policies = params["log_std"].shape[0]
    B = n_policies // members
    E = len(start_states) // B
    std = torch.exp(params["log_std"])[:, None, :]
    mean_of = torch.func.vmap(policy_mean)
    current = sim.reset(state=start_states.repeat(members, 1)).reshape(n_policies, E, -1)
    obs, actions, rewards = [], [], []
    for _ in range(horizon):
        obs.append(current)
        act = mean_of(params, current)
        if not deterministic:
            noise = torch.randn(B, E, act.shape[-1], generator=gen).repeat(members, 1, 1)
            act = act + std * noise
        actions.append(act)
        current, reward, distance = sim.step(act.reshape(-1, act.shape[-1]).numpy())
        current = current.reshape(n_policies, E, -1)
        rewards.append(reward.reshape(n_policies, E))
    return (torch.stack(obs, 2), torch.stack(actions, 2), torch.stack(rewards, 2),
            distance.reshape(n_policies, E))


class _GoalTask:
    """One goal plus the rollouts its current policy produced (mutable per episode)."""

    def __init__(self, goal: np.ndarray, seed: int):
        self.goal = np.asarray(goal, dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.buffer: dict[str, torch.Tensor] | None = None
        self.buffer_params: Params | None = None
        self.order: torch.Tensor | None = None
        self.cursor = 0


class ModelFreeProblem:
    """Goal-reaching with rollouts in a real environment, as a MetaProblem.

    Parameters
    ----------
    env_id : str
        A goal environment of :mod:`rl.envs` (``set_task``, goal last in the
        observation), e.g. ``"ml3/ReacherGoal-v0"``.
    goals : array-like of shape (n_goals, goal_dim)
        Meta-training goals; each task draws one of them.
    policy_hidden_sizes : sequence of int, default=(64, 64)
    log_std_init : float, default=0.0
    rollout_episodes : int, default=2
        Episodes per rollout (stepped together, one batched policy call per
        time step).
    batch_size : int or None, default=100
        Rows of the rollout per inner step (None: the whole rollout).
    horizon : int, optional
        Episode length; defaults to the environment's registered limit.
    gamma : float, default=1.0
        Discount of the reward-to-go in the task loss.
    env_kwargs : dict, optional
        Passed to ``gymnasium.make``.
    action_penalty : float, default=0.0
        Meta-train-only shaping of the task loss: adds ``action_penalty *
        mean(relu(|mu(s)| - high)^2)`` over the task-loss rollout's states, so
        that the learned loss does not drive the policy's mean action out of
        the action box (where clipping makes the return, and the
        meta-gradient, flat).
    normalize_inputs : bool, default=True
        Standardise the loss's input features with a shift and scale measured
        once, on rollouts of untrained policies on the training goals
        (``input_shift``, ``input_scale``).
    features : {"plain", "joint_frame"}, default="plain"
        Extra loss inputs (see :func:`loss_features`).
    n_epochs : int, default=4
        Passes over each rollout (:meth:`population_task_loss`'s runs; the
        backprop path unrolls them through the engine's ``unroll``).
    task_loss_episodes : int, optional
        Episodes of the fresh rollout that scores the task loss (twin only;
        default ``rollout_episodes``); its first ``rollout_episodes`` are the
        next experience. More episodes give a less noisy meta-gradient.
    simulator : {"env", "twin"}, default="env"
        Where rollouts run: ``"env"`` steps ``rollout_episodes`` gymnasium
        environments one by one; ``"twin"`` (``ml3/ReacherGoal-v0`` only)
        steps every episode of a rollout at once on the torch twin
        (:class:`rl.envs.reacher_batched.BatchedReacherGoal`). Nothing is
        differentiated through either, so both are model-free. Only the twin
        offers :meth:`population_task_loss`, which scores many losses on
        whole training runs at once (``meta_gradient="es"``).
    """

    vectorizable = False

    def __init__(self, env_id: str, goals, *, policy_hidden_sizes: Sequence[int] = (64, 64),
                 log_std_init: float = 0.0, rollout_episodes: int = 10,
                 batch_size: int | None = 100, horizon: int | None = None, gamma: float = 1.0,
                 env_kwargs: dict[str, Any] | None = None, normalize_inputs: bool = True,
                 action_penalty: float = 0.0, features: str = "plain", simulator: str = "env",
                 n_epochs: int = 1, task_loss_episodes: int | None = None):
        import rl.envs  # noqa: F401  (registers the ml3/* environments)

        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
        if simulator == "twin" and env_id not in TWIN_SIMULATORS:
            raise ValueError(f"simulator='twin' exists for {sorted(TWIN_SIMULATORS)}, not "
                             f"{env_id}; use simulator='env'")
        self.simulator = simulator
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.envs = [gym.make(env_id, **self.env_kwargs).unwrapped
                     for _ in range(int(rollout_episodes))]
        env = self.envs[0]
        if not hasattr(env, "set_task") or not hasattr(env, "goal_dim"):
            raise ValueError(f"{env_id} is not a goal environment (needs set_task and goal_dim)")
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError(f"{env_id} needs a continuous (Box) action space")
        self.goal_dim = int(env.goal_dim)
        self.obs_dim = int(np.prod(env.observation_space.shape))
        self.act_dim = int(np.prod(env.action_space.shape))
        self.features = check_features(features, self.obs_dim, self.act_dim)
        self.goals = type(env).validate_goals(goals)
        spec_horizon = gym.spec(env_id).max_episode_steps
        self.horizon = int(horizon or spec_horizon or 0)
        if self.horizon < 1:
            raise ValueError(f"{env_id} has no episode limit; give horizon")
        self.policy_hidden_sizes = tuple(int(h) for h in policy_hidden_sizes)
        self.log_std_init = float(log_std_init)
        self.rollout_episodes = int(rollout_episodes)
        self.batch_size = int(batch_size or self.rollout_episodes * self.horizon)
        if not 1 <= self.batch_size <= self.rollout_episodes * self.horizon:
            raise ValueError(f"batch_size must be in [1, rollout_episodes * horizon = "
                             f"{self.rollout_episodes * self.horizon}], got {batch_size}")
        self.gamma = float(gamma)
        self.n_epochs = int(n_epochs)
        self.task_loss_episodes = int(task_loss_episodes or self.rollout_episodes)
        if self.task_loss_episodes < self.rollout_episodes or (
                self.simulator == "env" and self.task_loss_episodes != self.rollout_episodes):
            raise ValueError("task_loss_episodes must be >= rollout_episodes (and equal to it "
                             f"with simulator='env'), got {task_loss_episodes}")
        if self.n_epochs < 1:
            raise ValueError(f"n_epochs must be at least 1, got {n_epochs}")
        if action_penalty < 0:
            raise ValueError(f"action_penalty must be >= 0, got {action_penalty}")
        self.action_penalty = float(action_penalty)
        self.low = torch.as_tensor(env.action_space.low, dtype=torch.float32)
        self.high = torch.as_tensor(env.action_space.high, dtype=torch.float32)
        #: Mean undiscounted return and final distance of every task-loss rollout.
        self.stats: list[dict[str, float]] = []
        self.input_shift: list[float] | None = None
        self.input_scale: list[float] | None = None
        if normalize_inputs:
            self._fit_input_normalisation()

    def _fit_input_normalisation(self, n_policies: int = 4) -> None:
        """Feature mean and std over rollouts of untrained policies on training goals."""
        rng = np.random.default_rng(12345)
        rows = []
        for i in range(n_policies):
            params = self.init_params(None, 1_000 + i)
            goal = self.goals[rng.integers(len(self.goals))]
            batch = self._flatten(self.rollout(params, goal, rng))
            with torch.no_grad():
                log_prob = policy_log_prob(params, batch["obs"], batch["actions"])
                rows.append(loss_features(batch["obs"], batch["actions"], log_prob,
                                          self.goal_dim, features=self.features))
        x = torch.cat(rows).double()
        std = x.std(0)
        # goal columns vary only across goals: take their spread over all training goals
        goals = torch.as_tensor(self.goals, dtype=torch.float64)
        n = self.obs_dim + self.act_dim + 1 + self.goal_dim  # end of the goal columns
        for cols in (slice(self.obs_dim - self.goal_dim, self.obs_dim),
                     slice(n - self.goal_dim, n)):
            std[cols] = goals.std(0) if len(goals) > 1 else torch.ones(self.goal_dim)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        mean = x.mean(0)
        mean[self.obs_dim - self.goal_dim:self.obs_dim] = goals.mean(0)
        mean[n - self.goal_dim:n] = goals.mean(0)
        self.input_shift = [float(v) for v in mean]
        self.input_scale = [float(v) for v in std]

    @property
    def n_loss_inputs(self) -> int:
        """Features per row of the learned loss: obs, action, log-prob, goal, extras."""
        return self.obs_dim + self.act_dim + 1 + self.goal_dim + EXTRA_FEATURES[self.features]

    # ------------------------------------------------------------- rollouts
    def rollout(self, params: Params, goal: np.ndarray, rng: np.random.Generator,
                deterministic: bool = False) -> dict[str, torch.Tensor]:
        """Run ``rollout_episodes`` episodes of the policy ``params`` on ``goal``.

        Returns
        -------
        batch : dict
            ``obs`` (E, T, obs_dim) float32, ``actions`` (E, T, act_dim) as
            sampled (unclipped, as SB3's rollout buffer stores them),
            ``rewards`` and ``alive`` (E, T; 0 after an episode terminated),
            ``final_distance`` (E,) when the env reports a distance.
        """
        if self.simulator == "twin":
            return self._twin_rollout(params, goal, rng, deterministic)
        E, T = self.rollout_episodes, self.horizon
        obs = np.zeros((E, T, self.obs_dim), np.float32)
        actions = torch.zeros(E, T, self.act_dim)
        rewards = np.zeros((E, T), np.float32)
        alive = np.ones((E, T), np.float32)
        distance = np.full(E, np.nan)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        current = np.stack([
            env.reset(seed=int(rng.integers(2**31 - 1)), options={"goal": goal})[0]
            for env in self.envs
        ])
        done = np.zeros(E, bool)
        params = {k: v.detach() for k, v in params.items()}
        std = torch.exp(params["log_std"])
        for t in range(T):
            obs[:, t] = current
            with torch.no_grad():
                mean = policy_mean(params, torch.from_numpy(current))
                act = mean if deterministic else mean + std * torch.randn(
                    mean.shape, generator=gen)
            actions[:, t] = act
            clipped = torch.clamp(act, self.low, self.high).numpy()
            for i, env in enumerate(self.envs):
                if done[i]:
                    alive[i, t] = 0.0
                    continue
                current[i], rewards[i, t], terminated, _, info = env.step(clipped[i])
                if "distance" in info:
                    distance[i] = info["distance"]
                done[i] = terminated
        return {"obs": torch.from_numpy(obs), "actions": actions,
                "rewards": torch.from_numpy(rewards), "alive": torch.from_numpy(alive),
                "final_distance": torch.from_numpy(distance)}

    def _twin_rollout(self, params: Params, goal: np.ndarray, rng: np.random.Generator,
                      deterministic: bool = False, episodes: int | None = None
                      ) -> dict[str, torch.Tensor]:
        """:meth:`rollout` on the batched torch twin (all episodes in one call per step)."""
        E = episodes or self.rollout_episodes
        simulator = TWIN_SIMULATORS[self.env_id]
        sim = simulator(np.repeat(np.asarray(goal)[None], E, 0), **self.env_kwargs)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        params = {k: v.detach()[None] for k, v in params.items()}
        obs, actions, rewards, distance = _run_episodes(
            sim, params, simulator.initial_states(E, gen), self.horizon, gen, deterministic)
        return {"obs": obs[0], "actions": actions[0], "rewards": rewards[0],
                "alive": torch.ones_like(rewards[0]), "final_distance": distance[0].double()}

    def population_task_loss(self, loss: LearnedLoss, phis: torch.Tensor, tasks, rng, *,
                             optimizer, inner_steps: int) -> torch.Tensor:
        """Mean per-step cost of whole training runs, one per loss in ``phis``.

        Each row of ``phis`` is a flat parameter vector of ``loss``'s network.
        For every row and task a fresh policy (the same initialisations and
        the same simulator noise for every row: common random numbers)
        trains for ``inner_steps`` optimizer steps on that loss exactly as
        :class:`rl.ML3` would (a rollout, then ``n_epochs`` passes of
        mini-batches, ``optimizer``), all rows and tasks batched with
        ``torch.func.vmap`` on the twin. The task loss is the mean negative
        reward over every rollout of the run plus one deterministic rollout
        after its last update, so a loss scores well by training fast *and*
        ending well.

        Returns
        -------
        task_losses : Tensor of shape (len(phis),)
        """
        if self.simulator != "twin":
            raise ValueError("population_task_loss needs simulator='twin'")
        if loss.learned_lr:
            raise ValueError("population_task_loss does not support learned_lr losses")
        E, T = self.rollout_episodes, self.horizon
        rows = E * T
        steps_per_rollout = self.n_epochs * math.ceil(rows / self.batch_size)
        if inner_steps % steps_per_rollout:
            raise ValueError(f"inner_steps ({inner_steps}) must be a multiple of the "
                             f"{steps_per_rollout} steps of one rollout")
        n_updates = inner_steps // steps_per_rollout
        P, G = len(phis), len(tasks)
        seeds = rng.integers(0, 2**31 - 1, size=G)
        inits = [self.init_params(task, int(s)) for task, s in zip(tasks, seeds, strict=True)]
        # policy n = p * G + g trains row p of phis on task g
        params = {k: v.repeat(P, *[1] * (v.ndim - 1)) for k, v in stack_params(inits).items()}
        shapes = [(name, p.shape) for name, p in loss.network_.named_parameters()]
        phi, offset = {}, 0
        for name, shape in shapes:
            n = math.prod(shape)
            phi[name] = phis[:, offset:offset + n].reshape(P, *shape).to(torch.float32)
            phi[name] = phi[name].repeat_interleave(G, 0)
            offset += n
        network = loss.network_
        shift, scale, features = self.input_shift, self.input_scale, self.features
        loss_of_row = torch.func.vmap(
            lambda phi_n, x: torch.func.functional_call(network, phi_n, (x,)))
        log_prob_of = torch.func.vmap(policy_log_prob)

        def update(theta, state, obs, actions):
            # the policies are independent: the gradient of the summed mean losses is
            # every policy's own gradient, and the optimizers act elementwise
            theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
            log_prob = log_prob_of(theta, obs, actions)
            x = loss_features(obs.flatten(0, 1), actions.flatten(0, 1), log_prob.reshape(-1),
                              self.goal_dim, shift, scale, features)
            total = loss_of_row(phi, x.reshape(len(obs), obs.shape[1], -1)).mean(1).sum()
            grads = dict(zip(theta, torch.autograd.grad(total, list(theta.values())),
                             strict=True))
            updates, state = optimizer.update(grads, state, params=theta, inplace=False)
            theta = torchopt.apply_updates(theta, updates, inplace=False)
            return {k: v.detach() for k, v in theta.items()}, state

        states = optimizer.init(params)
        simulator = TWIN_SIMULATORS[self.env_id]
        goals = np.stack([task.goal for task in tasks])
        sim = simulator(np.repeat(np.tile(goals, (P, 1)), E, 0), **self.env_kwargs)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        cost = torch.zeros(P * G)
        curve = []
        for k in range(n_updates + 1):
            with torch.no_grad():  # the last rollout evaluates the trained mean action
                obs, actions, rewards, distance = _run_episodes(
                    sim, params, simulator.initial_states(G * E, gen), T, gen,
                    deterministic=k == n_updates, members=P)
            cost -= rewards.mean((1, 2))
            curve.append(distance.reshape(P, G * E).mean(1))
            if k == n_updates:
                break
            obs, actions = obs.reshape(P * G, rows, -1), actions.reshape(P * G, rows, -1)
            for _ in range(self.n_epochs):
                order = torch.randperm(rows, generator=gen)
                for i in range(0, rows, self.batch_size):
                    idx = order[i:i + self.batch_size]
                    params, states = update(params, states, obs[:, idx], actions[:, idx])
        #: final distance after each update, per member, of the latest call
        self.population_curve = torch.stack(curve, 1)
        self.stats.append({"return": -float(cost.mean()) * T,
                           "final_distance": float(self.population_curve[:, -1].mean())})
        return (cost / (n_updates + 1)).reshape(P, G).mean(1).double()

    def _features(self, params: Params, obs: torch.Tensor, actions: torch.Tensor):
        log_prob = policy_log_prob(params, obs, actions)
        return (loss_features(obs, actions, log_prob, self.goal_dim, self.input_shift,
                              self.input_scale, self.features),)

    # ---------------------------------------------------------- MetaProblem
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[_GoalTask]:
        idx = rng.choice(len(self.goals), size=n, replace=n > len(self.goals))
        return [_GoalTask(self.goals[i], int(rng.integers(2**31 - 1))) for i in idx]

    def init_params(self, task: _GoalTask, seed: int) -> Params:
        return init_params(lambda: GaussianMLPPolicy(
            self.obs_dim, self.act_dim, self.policy_hidden_sizes, self.log_std_init), seed)

    def loss_inputs(self, params: Params, task: _GoalTask) -> tuple[torch.Tensor, ...]:
        if task.buffer is None:  # a fresh policy: collect its first experience
            task.buffer = self._flatten(self.rollout(params, task.goal, task.rng))
        n = len(task.buffer["obs"])
        if task.order is None or task.cursor >= n:
            perm = torch.from_numpy(task.rng.permutation(n))
            task.order, task.cursor = perm, 0
        idx = task.order[task.cursor:task.cursor + self.batch_size]
        task.cursor += self.batch_size
        return self._features(params, task.buffer["obs"][idx], task.buffer["actions"][idx])

    def _flatten(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = batch["alive"].reshape(-1) > 0
        return {"obs": batch["obs"].reshape(-1, self.obs_dim)[keep],
                "actions": batch["actions"].reshape(-1, self.act_dim)[keep]}

    def task_loss(self, params: Params, task: _GoalTask) -> torch.Tensor:
        if self.simulator == "twin":
            batch = self._twin_rollout(params, task.goal, task.rng,
                                       episodes=self.task_loss_episodes)
        else:
            batch = self.rollout(params, task.goal, task.rng)
        rewards, alive = batch["rewards"], batch["alive"]
        to_go = torch.zeros_like(rewards)
        running = torch.zeros(rewards.shape[0])
        for t in reversed(range(rewards.shape[1])):
            running = rewards[:, t] + self.gamma * running
            to_go[:, t] = running
        advantage = to_go - to_go.mean(0, keepdim=True)
        advantage = advantage / (advantage[alive > 0].std() + 1e-8)
        E, T = rewards.shape
        log_prob = policy_log_prob(params, batch["obs"].reshape(E * T, -1),
                                   batch["actions"].reshape(E * T, -1)).reshape(E, T)
        surrogate = -(log_prob * advantage * alive).sum() / alive.sum()
        if self.action_penalty > 0:
            mean = policy_mean(params, batch["obs"].reshape(E * T, -1))
            excess = torch.relu(mean - self.high) + torch.relu(self.low - mean)
            rows = alive.reshape(-1, 1)
            surrogate = surrogate + self.action_penalty * (
                (excess.pow(2) * rows).sum() / rows.sum())
        self.stats.append({"return": float((rewards * alive).sum(1).mean()),
                           "final_distance": float(np.nanmean(batch["final_distance"].numpy()))
                           if np.isfinite(batch["final_distance"].numpy()).any() else math.nan})
        # The fresh rollouts are the experience of the next inner steps.
        experience = {k: batch[k][:self.rollout_episodes] for k in ("obs", "actions", "alive")}
        task.buffer, task.order = self._flatten(experience), None
        return surrogate

    def describe(self) -> dict[str, Any]:
        return {
            "type": "model_free",
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "n_goals": len(self.goals),
            "goal_dim": self.goal_dim,
            "rollout_episodes": self.rollout_episodes,
            "horizon": self.horizon,
            "batch_size": self.batch_size,
            "gamma": self.gamma,
            "task_loss": "REINFORCE surrogate, reward-to-go minus per-step mean, unit std",
            "input_shift": self.input_shift,
            "input_scale": self.input_scale,
            "action_penalty": self.action_penalty,
            "simulator": self.simulator,
            "n_epochs": self.n_epochs,
            "task_loss_episodes": self.task_loss_episodes,
        }


def meta_train_policy_loss(
    env_id: str,
    goals=None,
    *,
    n_goals: int = 20,
    loss: LearnedLoss | None = None,
    loss_hidden_layer_sizes: Sequence[int] = (),
    loss_output: str = "none",
    policy_hidden_sizes: Sequence[int] = (64, 64),
    log_std_init: float = -0.5,
    rollout_episodes: int = 2,
    batch_size: int | None = 50,
    n_epochs: int = 4,
    rollouts_per_policy: int = 10,
    tasks_per_iter: int = 4,
    n_meta_iter: int = 400,
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
    es_population: int = 16,
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
    log_std_init : float, default=-0.5
    rollout_episodes : int, default=2
        Episodes per rollout; ``rollout_episodes * horizon`` rows of experience.
    batch_size : int or None, default=50
        Rows per inner (mini-batch) step; None uses the whole rollout, i.e.
        one full-batch step per rollout and epoch.
    n_epochs : int, default=4
        Passes over each rollout; ``n_epochs * rows / batch_size`` inner steps
        are unrolled per meta-gradient.
    rollouts_per_policy : int, default=10
        Rollouts a policy is trained for before it is re-initialised (the
        length of a scored run with ``"es"``: 10 rollouts of 100 steps, the
        first 1,000 environment steps of meta-test).
    tasks_per_iter : int, default=4
        Goals per meta-gradient.
    n_meta_iter : int, default=400
        Meta-iterations (one rollout per task each).
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
        ``meta_info_["policy"]["features"]`` and used by :class:`rl.ML3`.
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
    es_population, es_sigma
        Population (antithetic, even) and perturbation size of ``"es"``.
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
        ``meta_info_["policy"]`` records what :class:`rl.ML3` needs to use it
        as trained (rollout size, mini-batch, epochs, goal dimension, policy
        architecture); ``meta_info_["rollout_stats"]`` the mean return and
        final distance of the task-loss rollouts per meta-iteration.

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
    rows = problem.rollout_episodes * problem.horizon
    per_rollout = int(n_epochs) * math.ceil(rows / problem.batch_size)
    inner_steps = per_rollout * int(rollouts_per_policy)
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
               unroll=inner_steps if meta_gradient == "es" else per_rollout,
               tasks_per_iter=tasks_per_iter, inner_optimizer=inner_optimizer,
               inner_lr=inner_lr, meta_lr=meta_lr, grad_clip=grad_clip,
               meta_gradient=meta_gradient, es_population=es_population, es_sigma=es_sigma,
               checkpoint=checkpoint, random_state=random_state, verbose=verbose,
               callback=callback)
    loss.meta_info_["policy"] = {
        "env_id": env_id,
        "obs_dim": problem.obs_dim,
        "act_dim": problem.act_dim,
        "goal_dim": problem.goal_dim,
        "inputs": ["obs", "action", "log_prob", "goal"],
        "features": problem.features,
        "loss_structure": loss_structure,
        "simulator": problem.simulator,
        "hidden_sizes": list(problem.policy_hidden_sizes),
        "log_std_init": problem.log_std_init,
        "rollout_steps": rows,
        "batch_size": problem.batch_size,
        "n_epochs": int(n_epochs),
        "rollouts_per_policy": int(rollouts_per_policy),
        "input_shift": problem.input_shift,
        "input_scale": problem.input_scale,
    }
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
