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

import numpy as np
import torch

from rl.envs.planar_arm import planar_arm_fingertip, planar_arm_step, reacher_params
from rl.envs.reacher import ReacherGoalEnv

#: Episode length of ``ml3/ReacherGoal-v0`` (its registered ``max_episode_steps``).
REACHER_HORIZON = 50


class BatchedReacherGoal:
    """A batch of ReacherGoal episodes stepped together on the twin.

    Observations, rewards and distances follow :class:`rl.envs.ReacherGoalEnv`
    (observation ``cos q, sin q, qd, fingertip - goal, goal``; reward
    ``-||fingertip - goal|| - reward_control_weight * ||a||^2``); resets draw
    ``q ~ U(-0.1, 0.1)`` and ``qd ~ U(-0.005, 0.005)`` as its ``reset_model``.
    The state is simulated in float64 numpy (on arrays this small, numpy's
    per-operation cost is a fraction of torch's); observations and rewards
    come back as float32 tensors, as a policy reads them.

    Parameters
    ----------
    goals : array-like of shape (n_episodes, 2)
        One goal per episode.
    reward_control_weight : float, default=0.0
    """

    obs_dim = 10
    act_dim = 2
    goal_dim = ReacherGoalEnv.goal_dim
    horizon = REACHER_HORIZON

    def __init__(self, goals, reward_control_weight: float = 0.0):
        goals = np.asarray(goals, dtype=np.float64)
        if goals.ndim != 2 or goals.shape[1] != self.goal_dim:
            raise ValueError(f"goals must have shape (n_episodes, 2), got {goals.shape}")
        self.goals = goals
        self.reward_control_weight = float(reward_control_weight)
        self.params = reacher_params()
        self.state = np.zeros((len(goals), 4))

    @staticmethod
    def initial_states(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` start states ``(q, qd)`` drawn as ReacherGoalEnv's reset does, (n, 4)."""
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
        return torch.cat([0.2 * u[:, :2] - 0.1, 0.01 * u[:, 2:] - 0.005], 1)

    def reset(self, generator: torch.Generator | None = None, state=None) -> torch.Tensor:
        """Start every episode; ``state`` (n, 4) sets ``(q, qd)`` instead of drawing it."""
        if state is None:
            state = self.initial_states(len(self.goals), generator)
        if isinstance(state, torch.Tensor):
            state = state.detach().cpu().numpy()
        self.state = np.array(state, dtype=np.float64)
        return self.observation()

    def _offset(self) -> np.ndarray:
        return planar_arm_fingertip(self.state[:, :2], self.params) - self.goals

    def distance(self) -> torch.Tensor:
        """Distance from the fingertip to the goal, (n,)."""
        return torch.from_numpy(np.linalg.norm(self._offset(), axis=1)).float()

    def observation(self) -> torch.Tensor:
        """Observations as :class:`rl.envs.ReacherGoalEnv` gives them, (n, 10) float32."""
        q, qd = self.state[:, :2], self.state[:, 2:]
        obs = np.concatenate([np.cos(q), np.sin(q), qd, self._offset(), self.goals], 1)
        return torch.from_numpy(obs).float()

    def step(self, actions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply ``actions`` (n, 2), clipped to ``[-1, 1]``.

        Returns
        -------
        obs : (n, 10), reward : (n,), distance : (n,), float32 tensors
        """
        actions = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        self.state = planar_arm_step(self.state, actions, self.params)
        distance = np.linalg.norm(self._offset(), axis=1)
        reward = -distance - self.reward_control_weight * (actions**2).sum(1)
        return (self.observation(), torch.from_numpy(reward).float(),
                torch.from_numpy(distance).float())
