"""What a policy loss was meta-trained with: :class:`PolicyLossInfo`.

The meta-training entry points (:func:`rl.meta_train_policy_loss`,
:func:`rl.meta.meta_train_model_based_loss`) record it in
``loss.meta_info_["policy"]`` as :meth:`PolicyLossInfo.to_dict`; everything
that uses a policy loss reads it back with :meth:`PolicyLossInfo.of`. The
field types are those the file format checks on load
(:data:`sklearn_ml3._artifact.POLICY_INFO_FIELDS`), so a loss that loads has
a readable description.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PolicyLossInfo:
    """The policies and settings a policy loss was meta-trained with.

    Parameters
    ----------
    env_id : str
        The environment the loss was meta-trained on.
    paradigm : {"model_free", "model_based", "shaping"}
        How: REINFORCE on fresh rollouts, through a learned dynamics model, or
        with meta-train-only shaping information.
    hidden_sizes : tuple of int
        Hidden layer widths of the policies trained during meta-training.
    features : str, optional
        The loss's input feature set (:func:`rl.meta.model_free.loss_features`
        or :func:`rl.meta.model_based.loss_features`); ``None`` when not
        recorded (readers then use their default: ``"plain"`` for
        :class:`rl.ML3`, the set found from the loss's width for model-based
        meta-testing).
    horizon : int, optional
        Steps per episode.
    obs_dim, act_dim, goal_dim : int, optional
        Observation, action and goal sizes (model-free).
    inputs : tuple of str, optional
        The loss's inputs, in order (model-free).
    loss_structure : str, optional
        The loss's shape: ``"quadratic"``, ``"advantage"`` or ``"free"``
        (model-free), ``"free"``, ``"quadratic"``, ``"homogeneous"`` or
        ``"feedback"`` (model-based).
    simulator : str, optional
        The rollout simulator (model-free).
    log_std_init : float, optional
        Initial log standard deviation of the Gaussian policies (model-free).
    rollout_steps : int, optional
        Rows per rollout (episodes times horizon) between policy updates.
    batch_size : int, optional
        Mini-batch size of the policy updates.
    n_epochs : int, optional
        Passes over each rollout.
    rollouts_per_policy : int, optional
        Rollouts per inner optimisation (model-free).
    input_shift, input_scale : tuple of float, optional
        Standardisation of the loss's inputs, ``(x - shift) / scale``
        (model-free; one entry per input).

    See Also
    --------
    sklearn_ml3._artifact.check_policy_info : the checks of :meth:`from_dict`.

    Examples
    --------
    >>> from rl.meta.info import PolicyLossInfo
    >>> info = PolicyLossInfo("ml3/PointmassGoal-v0", "model_based", (32, 32),
    ...                       features="relative", horizon=30)
    >>> info.to_dict()["hidden_sizes"]
    [32, 32]
    >>> PolicyLossInfo.from_dict({"env_id": "ml3/PointmassGoal-v0",
    ...                           "hidden_layer_sizes": [8], "feature_set": "plain"}).paradigm
    'model_based'
    """

    env_id: str
    paradigm: str
    hidden_sizes: tuple[int, ...]
    features: str | None = None
    horizon: int | None = None
    obs_dim: int | None = None
    act_dim: int | None = None
    goal_dim: int | None = None
    inputs: tuple[str, ...] | None = None
    loss_structure: str | None = None
    simulator: str | None = None
    log_std_init: float | None = None
    rollout_steps: int | None = None
    batch_size: int | None = None
    n_epochs: int | None = None
    rollouts_per_policy: int | None = None
    input_shift: tuple[float, ...] | None = None
    input_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        from sklearn_ml3._artifact import check_policy_info

        checked = check_policy_info(dataclasses.asdict(self), "PolicyLossInfo")
        for name, value in checked.items():  # sequences as tuples
            object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored in ``meta_info_["policy"]``.

        Returns
        -------
        dict
            The required fields and the optional ones that are set (not
            ``None``); sequences as lists.
        """
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "policy info") -> PolicyLossInfo:
        """Read a ``meta_info_["policy"]`` dict, of this or an earlier version.

        Parameters
        ----------
        d : dict
            As :meth:`to_dict` writes it. Earlier spellings are accepted:
            ``hidden_layer_sizes`` for ``hidden_sizes`` and ``feature_set``
            for ``features`` (model-based losses); without ``paradigm`` it is
            inferred (``"model_based"`` for those spellings, else
            ``"model_free"``).
        source : str, default="policy info"
            Named first in errors.

        Returns
        -------
        PolicyLossInfo

        Raises
        ------
        ValueError
            Naming the field, for an unknown or missing key, a field given
            under both spellings, or a value of the wrong type.
        """
        from sklearn_ml3._artifact import check_policy_info

        return cls(**check_policy_info(d, source))

    @classmethod
    def of(cls, loss, *, required: bool = False) -> PolicyLossInfo | None:
        """The description recorded in ``loss.meta_info_["policy"]``.

        Parameters
        ----------
        loss : LearnedLoss
        required : bool, default=False
            Raise instead of returning ``None`` when the loss has none.

        Returns
        -------
        PolicyLossInfo or None
            ``None`` when the loss records none (it was not meta-trained on
            policies) and ``required`` is false.

        Raises
        ------
        ValueError
            When the recorded entry is malformed (see :meth:`from_dict`), or
            absent and ``required``.
        """
        meta_info = getattr(loss, "meta_info_", None) or {}
        if "policy" not in meta_info:
            if required:
                raise ValueError("this LearnedLoss records no policy meta-training "
                                 "(no meta_info_['policy']); use a loss from "
                                 "rl.meta_train_policy_loss or meta_train_model_based_loss")
            return None
        return cls.from_dict(meta_info["policy"], "meta_info_['policy']")


__all__ = ["PolicyLossInfo"]
