"""Policies of :class:`rl.ML3`."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import ActorCriticPolicy


class ML3Policy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` with a learned-loss-only default architecture.

    The actor (``pi``) is what the learned loss trains. :class:`rl.ML3` never
    trains the value head: it exists because SB3's rollout machinery calls
    ``policy.forward`` for values, so the default ``net_arch`` gives it no
    hidden layers (``vf=[]``) to keep it a single, unused linear map.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`stable_baselines3.common.policies.ActorCriticPolicy`.
        ``net_arch`` defaults to ``dict(pi=[64, 64], vf=[])``; a list such as
        ``[128, 128]`` sets the actor only.
    """

    def __init__(self, *args: Any, net_arch: Any = None, **kwargs: Any) -> None:
        if net_arch is None:
            net_arch = {"pi": [64, 64], "vf": []}
        elif isinstance(net_arch, (list, tuple)):
            net_arch = {"pi": list(net_arch), "vf": []}
        super().__init__(*args, net_arch=net_arch, **kwargs)


MlpPolicy = ML3Policy

__all__ = ["ML3Policy", "MlpPolicy"]
