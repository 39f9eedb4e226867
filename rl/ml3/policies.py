"""Policies of :class:`rl.ML3`: SB3's actor-critic policies with an actor-only default."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import ActorCriticPolicy, MultiInputActorCriticPolicy


def _actor_only(net_arch: Any) -> Any:
    # ML3 never trains the value head; SB3's rollouts still call it, so it stays one linear map
    if net_arch is None:
        return {"pi": [64, 64], "vf": []}
    if isinstance(net_arch, (list, tuple)):
        return {"pi": list(net_arch), "vf": []}
    return net_arch


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
        super().__init__(*args, net_arch=_actor_only(net_arch), **kwargs)


class ML3MultiInputPolicy(MultiInputActorCriticPolicy):
    """:class:`ML3Policy` for Dict observations (``goal_observation="dict"`` envs).

    SB3's ``CombinedExtractor`` feeds the actor all keys; the learned loss
    reads the flat observation rebuilt from them (:func:`rl.envs.flat_observation`).
    ``net_arch`` as for :class:`ML3Policy`.
    """

    def __init__(self, *args: Any, net_arch: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, net_arch=_actor_only(net_arch), **kwargs)


MlpPolicy = ML3Policy
MultiInputPolicy = ML3MultiInputPolicy

__all__ = ["ML3MultiInputPolicy", "ML3Policy", "MlpPolicy", "MultiInputPolicy"]
