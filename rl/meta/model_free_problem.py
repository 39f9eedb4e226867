"""The meta-training problem of model-free ML3 (:mod:`rl.meta.model_free`): rollouts,
task loss and the population scoring of evolution strategies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torchopt

from rl.meta.model_free_spec import (
    EXTRA_FEATURES,
    SIMULATORS,
    TWIN_SIMULATORS,
    GaussianMLPPolicy,
    check_features,
    loss_features,
    policy_log_prob,
    policy_mean,
)
from rl.meta.policies import init_params, stack_params
from sklearn_ml3 import LearnedLoss

Params = dict[str, torch.Tensor]


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
        if not all(hasattr(env, name) for name in ("set_task", "goal_dim", "validate_goals")):
            raise ValueError(f"{env_id} is not a goal environment (needs set_task, goal_dim and "
                             "validate_goals, see rl.envs.GoalTaskMixin)")
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

    @property
    def steps_per_rollout(self) -> int:
        """Inner optimiser steps per rollout: ``n_epochs`` passes in mini-batches."""
        return self.n_epochs * math.ceil(self.rollout_episodes * self.horizon / self.batch_size)

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
        steps_per_rollout = self.steps_per_rollout
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


__all__ = ["ModelFreeProblem"]
