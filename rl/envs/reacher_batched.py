"""``ml3/ReacherGoal-v0`` for many episodes at once, simulated by the torch twin.

Stepping MuJoCo environments one by one costs about 41 us per step plus
Python; the planar twin (:func:`rl.envs.planar_arm.planar_arm_step`, the same
RK4 integrator and constants as MuJoCo's Reacher) steps thousands of episodes
in one batched call. It is a *simulator*: meta-training that rolls out on it
and never differentiates through it stays model-free.

The twin ignores the elbow's joint limit (+-3 rad), which a Reacher policy
rarely reaches within its 50 steps.
"""

from __future__ import annotations

import torch

from rl.envs.planar_arm import planar_arm_fingertip, planar_arm_step, reacher_params
from rl.envs.reacher import ReacherGoalEnv

#: Episode length of ``ml3/ReacherGoal-v0`` (its registered ``max_episode_steps``).
REACHER_HORIZON = 50


class BatchedReacherGoal:
    """A batch of ReacherGoal episodes stepped together on the torch twin.

    Observations, rewards and distances follow :class:`rl.envs.ReacherGoalEnv`
    (observation ``cos q, sin q, qd, fingertip - goal, goal``; reward
    ``-||fingertip - goal|| - reward_control_weight * ||a||^2``); resets draw
    ``q ~ U(-0.1, 0.1)`` and ``qd ~ U(-0.005, 0.005)`` as its ``reset_model``.

    Parameters
    ----------
    goals : torch.Tensor of shape (n_episodes, 2)
        One goal per episode.
    reward_control_weight : float, default=0.0
    dtype : torch.dtype, default=torch.float32
        Dtype of the simulation (float64 matches MuJoCo to round-off).
    """

    obs_dim = 10
    act_dim = 2
    goal_dim = ReacherGoalEnv.goal_dim
    horizon = REACHER_HORIZON

    def __init__(self, goals: torch.Tensor, reward_control_weight: float = 0.0,
                 dtype: torch.dtype = torch.float32):
        goals = torch.as_tensor(goals, dtype=dtype)
        if goals.ndim != 2 or goals.shape[1] != self.goal_dim:
            raise ValueError(f"goals must have shape (n_episodes, 2), got {tuple(goals.shape)}")
        self.goals = goals
        self.reward_control_weight = float(reward_control_weight)
        self.params = reacher_params()
        self.state = torch.zeros(len(goals), 4, dtype=dtype)

    def reset(self, generator: torch.Generator | None = None,
              state: torch.Tensor | None = None) -> torch.Tensor:
        """Start every episode; ``state`` (n, 4) sets ``(q, qd)`` instead of drawing it."""
        if state is None:
            u = torch.rand(len(self.goals), 4, generator=generator, dtype=self.goals.dtype)
            state = torch.cat([0.2 * u[:, :2] - 0.1, 0.01 * u[:, 2:] - 0.005], 1)
        self.state = torch.as_tensor(state, dtype=self.goals.dtype).clone()
        return self.observation()

    def offset(self) -> torch.Tensor:
        """``fingertip - goal`` of every episode, (n, 2)."""
        return planar_arm_fingertip(self.state[:, :2], self.params) - self.goals

    def distance(self) -> torch.Tensor:
        """Distance from the fingertip to the goal, (n,)."""
        return torch.linalg.vector_norm(self.offset(), dim=1)

    def observation(self) -> torch.Tensor:
        """Observations as :class:`rl.envs.ReacherGoalEnv` gives them, (n, 10)."""
        q, qd = self.state[:, :2], self.state[:, 2:]
        return torch.cat([torch.cos(q), torch.sin(q), qd, self.offset(), self.goals], 1)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply ``actions`` (n, 2), clipped to ``[-1, 1]``.

        Returns
        -------
        obs : (n, 10), reward : (n,), distance : (n,)
        """
        actions = torch.clamp(torch.as_tensor(actions, dtype=self.state.dtype), -1.0, 1.0)
        self.state = planar_arm_step(self.state, actions, self.params)
        distance = self.distance()
        reward = -distance - self.reward_control_weight * actions.pow(2).sum(1)
        return self.observation(), reward, distance
