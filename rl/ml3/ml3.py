"""ML3 at meta-test time: Stable-Baselines3 algorithms driven by a learned loss."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import open_path
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback

from rl.envs import flat_observation, flat_observation_size
from rl.meta.info import PolicyLossInfo
from rl.meta.model_free import EXTRA_FEATURES, check_features, loss_features
from rl.ml3._safe_load import SAFE_DATA_KEY, read_data_json, safe_load_data, safe_replacements
from rl.ml3.policies import ML3MultiInputPolicy, ML3Policy
from sklearn_ml3 import LearnedLoss
from sklearn_ml3._artifact import check_config, check_meta_info
from sklearn_ml3.meta import torch_optimizer_spec

SelfML3 = TypeVar("SelfML3", bound="ML3")


def _policy_info(loss: LearnedLoss) -> PolicyLossInfo | None:
    return PolicyLossInfo.of(loss)


def _features(info: PolicyLossInfo | None) -> str:
    """The model-free feature set a loss reads; ``"plain"`` when it records none."""
    if info is None or info.paradigm != "model_free" or info.features is None:
        return "plain"
    return info.features


def _check_learned_loss_spec(spec) -> tuple[dict, dict, np.ndarray]:
    """Config, meta_info and history of a loaded ``_learned_loss_spec``, validated as data."""
    where = "the saved model's _learned_loss_spec"
    if not isinstance(spec, dict) or set(spec) != {"config", "meta_info", "meta_history"}:
        raise ValueError(f"{where} must hold exactly config, meta_info and meta_history")
    config = check_config(spec["config"], where)
    meta_info = check_meta_info(spec["meta_info"], config["kind"], where)
    history = spec["meta_history"]
    if not (isinstance(history, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in history)):
        raise ValueError(f"{where}: field 'meta_history' must be a list of finite numbers")
    return config, dict(meta_info), np.asarray(history, dtype=np.float64)


class _LearnedLossMixin:
    """Holds a policy :class:`~sklearn_ml3.LearnedLoss` and saves it inside the SB3 zip.

    The loss network's weights travel as a state dict (``learned_loss.network_``
    in :meth:`_get_torch_save_params`, loaded with ``weights_only``); its
    constructor config, ``meta_info_`` and ``meta_history_`` travel as plain
    JSON data (``_learned_loss_spec``), from which :meth:`_setup_learned_loss`
    rebuilds the network on :meth:`load`.

    On Dict observations (``goal_observation="dict"`` envs) the loss reads the
    flat observation rebuilt from the Dict with the env's
    ``observation_layout`` (recorded on the model, saved with it), so it sees
    the same features as on the flat env.
    """

    learned_loss: LearnedLoss | None
    goal_dim: int
    _policy_loss_info: PolicyLossInfo | None = None
    observation_layout: tuple[str, ...] | None = None

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_learned_loss()

    def _store_learned_loss(self, learned_loss: LearnedLoss | None, goal_dim: int | None) -> None:
        if learned_loss is not None and not isinstance(learned_loss, LearnedLoss):
            raise TypeError(
                f"learned_loss must be a LearnedLoss, got {type(learned_loss).__name__}")
        if learned_loss is not None and learned_loss.kind != "features":
            raise ValueError(
                "a policy loss is a LearnedLoss(kind='features') reading (obs, action, log_prob, "
                f"goal) rows; got kind={learned_loss.kind!r}"
            )
        # a private copy: training must never touch the caller's loss
        self.learned_loss = None if learned_loss is None else copy.deepcopy(learned_loss)
        if goal_dim is None and learned_loss is not None:
            info = _policy_info(learned_loss)
            goal_dim = None if info is None else info.goal_dim
        self.goal_dim = 0 if goal_dim is None else int(goal_dim)
        self._learned_loss_spec = None
        if learned_loss is not None:
            self._learned_loss_spec = {
                "config": learned_loss.get_config(),
                "meta_info": learned_loss.meta_info_,
                "meta_history": np.asarray(getattr(learned_loss, "meta_history_", []),
                                           dtype=float).tolist(),
            }

    def _setup_learned_loss(self) -> None:
        if self.learned_loss is None:
            if self._learned_loss_spec is None:
                raise ValueError(f"{type(self).__name__} needs learned_loss=LearnedLoss(...)")
            config, meta_info, history = _check_learned_loss_spec(self._learned_loss_spec)
            # weights are overwritten by the saved state dict right after this
            self.learned_loss = LearnedLoss(**config, random_state=0)
            self.learned_loss.meta_info_ = meta_info
            if len(history):
                self.learned_loss.meta_history_ = history
        self.learned_loss.to(self.device)
        for param in self.learned_loss.parameters():
            param.requires_grad_(False)
        obs_dim = self._flat_observation_size()
        act_dim = int(np.prod(self.action_space.shape))
        # read once: the loss is this model's frozen copy
        info = self._policy_loss_info = _policy_info(self.learned_loss)
        features = _features(info)
        check_features(features, obs_dim, act_dim)
        extra = EXTRA_FEATURES[features]
        expected = obs_dim + act_dim + 1 + self.goal_dim + extra
        if self.learned_loss.n_inputs != expected:
            raise ValueError(
                f"the learned loss reads {self.learned_loss.n_inputs} features per row, but this "
                f"env gives obs ({obs_dim}) + action ({act_dim}) + log_prob (1) + goal "
                f"({self.goal_dim})" + (f" + {features} ({extra})" if extra else "")
                + f" = {expected}; meta-train a loss for this environment"
            )
        trained_obs = None if info is None else info.obs_dim
        if trained_obs is not None and trained_obs != obs_dim:
            raise ValueError(f"the learned loss was meta-trained on {trained_obs}-dimensional "
                             f"observations, this env has {obs_dim}")

    def _flat_observation_size(self) -> int:
        if not isinstance(self.observation_space, spaces.Dict):
            return int(np.prod(self.observation_space.shape))
        if self.observation_layout is None:
            if self.env is None:
                raise ValueError("a Dict observation space needs the env to tell its "
                                 "observation_layout; pass env=")
            layouts = self.env.get_attr("observation_layout")
            if not layouts or layouts[0] is None:
                raise ValueError("Dict observations need a goal env with observation_layout "
                                 "(an ml3/* env made with goal_observation='dict')")
            self.observation_layout = tuple(layouts[0])
        return flat_observation_size(self.observation_space, self.observation_layout)

    def _raw_observations(self, obs: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        """Flat observations as the env produced them (the loss was meta-trained on those)."""
        vec_normalize = self.get_vec_normalize_env()
        if vec_normalize is not None and vec_normalize.norm_obs:
            numpy_obs = ({k: v.detach().cpu().numpy() for k, v in obs.items()}
                         if isinstance(obs, dict) else obs.detach().cpu().numpy())
            raw = vec_normalize.unnormalize_obs(numpy_obs)
            obs = ({k: th.as_tensor(v, device=self.device) for k, v in raw.items()}
                   if isinstance(raw, dict) else th.as_tensor(raw, device=self.device))
        # float64 observations (e.g. MuJoCo's) would otherwise change the loss's dtype
        if isinstance(obs, dict):
            parts = {k: v.to(th.float32).reshape(len(v), -1) for k, v in obs.items()}
            return flat_observation(parts, self.observation_layout)
        return obs.to(th.float32).reshape(len(obs), -1)

    def _learned_loss_value(self, obs: th.Tensor | dict[str, th.Tensor], actions: th.Tensor,
                            log_prob: th.Tensor) -> th.Tensor:
        """Mean learned loss over rows ``(obs, action, log_prob, goal)``, goal = obs tail."""
        raw = self._raw_observations(obs)
        info = self._policy_loss_info
        shift, scale = (None, None) if info is None else (info.input_shift, info.input_scale)
        return self.learned_loss(loss_features(
            raw, actions.reshape(len(actions), -1).float(), log_prob.float(), self.goal_dim,
            shift, scale, _features(info)))

    def _excluded_save_params(self) -> list[str]:
        # derived from learned_loss, which is rebuilt from _learned_loss_spec on load
        return [*super()._excluded_save_params(), "_policy_loss_info"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, other = super()._get_torch_save_params()
        return [*state_dicts, "learned_loss.network_"], other

    def save(self, path, exclude=None, include=None) -> None:
        """SB3's ``save``, plus a plain-JSON copy of what SB3 pickles, so :meth:`load` needs no
        unpickling."""
        setattr(self, SAFE_DATA_KEY, safe_load_data(self))
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            delattr(self, SAFE_DATA_KEY)

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, *,
             trust_pickled: bool = False, **kwargs):
        """Load a model saved by :meth:`save`, running no code from the file.

        SB3 stores spaces, the policy class, ``policy_kwargs`` and schedules as
        pickles; this method rebuilds them from the plain-JSON description
        the library's :meth:`save` writes beside them (classes come only from
        the algorithm's policy aliases, ``torch.optim``, ``torch.nn`` and
        SB3's feature extractors), and refuses any other pickled entry.

        Parameters
        ----------
        path, env, device, custom_objects, **kwargs
            As in :meth:`stable_baselines3.common.base_class.BaseAlgorithm.load`.
        trust_pickled : bool, default=False
            Unpickle the file's pickled entries as plain SB3 does. Unpickling
            runs code from the file: use it only for files you trust (e.g.
            models saved by plain SB3 or with a custom policy class or a
            lambda schedule).

        Raises
        ------
        ValueError
            If the file would need unpickling and ``trust_pickled`` is False
            (:class:`rl.ml3._safe_load.UnsafeModelFile`), or is not an SB3 zip.
        """
        if trust_pickled:
            model = super().load(path, env=env, device=device, custom_objects=custom_objects,
                                 **kwargs)
        else:
            file = open_path(path, "r", verbose=0, suffix="zip")
            try:
                name = getattr(file, "name", str(path))
                replacements = safe_replacements(read_data_json(file), cls, name,
                                                 custom_objects)
                file.seek(0)
                model = super().load(file, env=env, device=device,
                                     custom_objects=replacements, **kwargs)
            finally:
                if file is not path:  # a caller's open file stays open
                    file.close()
        model.__dict__.pop(SAFE_DATA_KEY, None)
        return model


def _actor_width(net_arch) -> int | None:
    """Width of the actor's last hidden layer (the action layer's fan-in); None: no layer."""
    if net_arch is None:
        net_arch = [64, 64]  # the actor of ML3Policy and of SB3's ActorCriticPolicy
    actor = net_arch.get("pi", []) if isinstance(net_arch, dict) else net_arch
    return int(actor[-1]) if len(actor) else None


def _width_ratio(policy_info: PolicyLossInfo | None, policy_kwargs) -> float:
    """``w_meta / w``: meta-training actor width over this actor's (1 when either is unknown)."""
    trained = None if policy_info is None or not policy_info.hidden_sizes \
        else int(policy_info.hidden_sizes[-1])
    width = _actor_width((policy_kwargs or {}).get("net_arch"))
    return 1.0 if trained is None or width is None else trained / width


class ML3(_LearnedLossMixin, OnPolicyAlgorithm):
    """Train a policy with a meta-learned loss alone (ML3 meta-test, paper III-B.2).

    Each update collects ``n_steps`` steps per environment with SB3's rollout
    machinery, then runs ``n_epochs`` passes of mini-batch steps on the learned
    loss ``M_phi(obs, action, log pi(action | obs), goal)`` over the rollout
    buffer. Rewards are not used for training (they are only logged), and
    neither is the value head of the policy. By default the optimizer, its
    learning rate, the rollout size, mini-batch size and epochs are those the
    loss was meta-trained with (read from ``learned_loss.meta_info_``: the
    optimizer and rate at its top level, the rest from its
    :class:`~rl.meta.info.PolicyLossInfo`), and the loss's inputs are
    standardised with the shift and scale recorded there
    (:func:`rl.meta.model_free.loss_features`).

    Parameters
    ----------
    policy : str or type
        ``"MlpPolicy"`` (:class:`~rl.ML3Policy`), ``"MultiInputPolicy"``
        (:class:`~rl.ml3.ML3MultiInputPolicy`, for Dict observations) or a
        subclass of SB3's ``ActorCriticPolicy``; any actor architecture works.
    env : gymnasium.Env, VecEnv or str
        Its observation must end with the goal (``goal_dim`` entries), as in
        the ``ml3/*`` goal environments, or be their Dict form
        (``goal_observation="dict"``).
    learned_loss : LearnedLoss
        A policy loss from :func:`rl.meta_train_policy_loss` (``kind="features"``).
    learning_rate : float or schedule, optional
        Default: the loss's meta-training ``inner_lr``, times ``w_meta / w``
        for an actor whose last hidden layer has width ``w`` where the
        meta-training policy's had ``w_meta``. Adam moves every weight by
        about the learning rate per step, so the action layer's output moves
        in proportion to its fan-in; the ratio keeps that move the one the
        loss was meta-trained with (the width rule of muP for Adam, Yang et
        al. 2021). A 256-wide actor under a loss meta-trained on 64-64 steps
        at a quarter of the rate (measured in ``docs/rl_model_free.md``).
    optimizer : {"sgd", "momentum", "adam"}, optional
        Default: the loss's meta-training ``inner_optimizer``.
    n_steps : int, optional
        Steps per environment per update; default: the meta-training rollout
        size divided by the number of environments.
    batch_size : int, optional
        Mini-batch size; default: the meta-training one.
    n_epochs : int, optional
        Passes over each rollout; default: the meta-training one.
    max_grad_norm : float, optional
        Clip the policy gradient norm (meta-training does not clip).
    goal_dim : int, optional
        Goal entries at the end of the observation; default from the loss.
    stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device
        As in Stable-Baselines3.

    Attributes
    ----------
    learned_loss : LearnedLoss
        This model's own copy of the loss (frozen); saved inside the zip.

    Examples
    --------
    >>> import gymnasium as gym  # doctest: +SKIP
    >>> from rl import ML3
    >>> from sklearn_ml3 import LearnedLoss
    >>> env = gym.make("ml3/ReacherGoal-v0", goal=[0.1, -0.1])  # doctest: +SKIP
    >>> loss = LearnedLoss.load("reacher.ml3")  # doctest: +SKIP
    >>> model = ML3("MlpPolicy", env, learned_loss=loss)  # doctest: +SKIP
    >>> model.learn(total_timesteps=20_000, progress_bar=True)  # doctest: +SKIP
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ML3Policy, "MultiInputPolicy": ML3MultiInputPolicy}

    def __init__(
        self,
        policy: str | type[ML3Policy],
        env: GymEnv | str,
        learned_loss: LearnedLoss | None = None,
        learning_rate: float | Any | None = None,
        optimizer: str | None = None,
        n_steps: int | None = None,
        batch_size: int | None = None,
        n_epochs: int | None = None,
        max_grad_norm: float | None = None,
        goal_dim: int | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        self._store_learned_loss(learned_loss, goal_dim)
        info = {} if learned_loss is None else learned_loss.meta_info_
        policy_info = None if learned_loss is None else _policy_info(learned_loss)
        if learned_loss is not None:
            if not learned_loss.is_meta_trained:
                warnings.warn("this LearnedLoss has not been meta-trained; it is a random "
                              "function and will not train a useful policy", UserWarning,
                              stacklevel=2)
            elif policy_info is None:
                warnings.warn("this LearnedLoss was not meta-trained on policies "
                              "(no meta_info_['policy']); ML3 falls back to default settings",
                              UserWarning, stacklevel=2)
        # the meta-trained lr, rescaled for this actor's width (see learning_rate above)
        trained_lr = info.get("inner_lr", 1e-3) * _width_ratio(policy_info, policy_kwargs)
        if learning_rate is None:
            learning_rate = trained_lr
        elif isinstance(learning_rate, (int, float)) and learned_loss is not None and (
                not 1 / 3 <= learning_rate / trained_lr <= 3):
            warnings.warn(f"learning_rate {learning_rate} is far from the {trained_lr:.3g} the "
                          "loss was meta-trained with (scaled to this actor's width)",
                          UserWarning, stacklevel=2)
        self.optimizer_name = optimizer or info.get("inner_optimizer", "adam")
        # the torch.optim twin of the engine's differentiable inner optimizer
        optimizer_class, optimizer_kwargs = torch_optimizer_spec(self.optimizer_name)
        policy_kwargs = dict(policy_kwargs or {})
        policy_kwargs.setdefault("optimizer_class", optimizer_class)
        policy_kwargs.setdefault("optimizer_kwargs", dict(optimizer_kwargs))
        def trained(field: str, default):
            value = None if policy_info is None else getattr(policy_info, field)
            return default if value is None else value

        if trained("log_std_init", None) is not None:  # the spread the loss was trained on
            policy_kwargs.setdefault("log_std_init", policy_info.log_std_init)
        if n_steps is None:
            n_envs = getattr(env, "num_envs", 1) if not isinstance(env, str) else 1
            n_steps = max(1, trained("rollout_steps", 512) // n_envs)
        self.batch_size = int(batch_size or trained("batch_size", 64))
        self.n_epochs = int(n_epochs or trained("n_epochs", 1))
        if self.batch_size < 1 or self.n_epochs < 1:
            raise ValueError("batch_size and n_epochs must be at least 1")
        self.clip_grad_norm = max_grad_norm
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=int(n_steps),
            # returns and advantages are computed by SB3 for logging only
            gamma=0.99,
            gae_lambda=1.0,
            ent_coef=0.0,
            vf_coef=0.0,
            max_grad_norm=math.inf if max_grad_norm is None else max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box,),
        )
        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        """Mini-batch steps on the learned loss over the rollout buffer (no rewards)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(self.n_epochs):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                distribution = self.policy.get_distribution(rollout_data.observations)
                log_prob = distribution.log_prob(rollout_data.actions)
                loss = self._learned_loss_value(rollout_data.observations,
                                                rollout_data.actions, log_prob)
                self.policy.optimizer.zero_grad()
                loss.backward()
                if self.clip_grad_norm is not None:
                    th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.clip_grad_norm)
                self.policy.optimizer.step()
                losses.append(loss.item())
            self._n_updates += 1
        self.logger.record("train/learned_loss", float(np.mean(losses)))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self: SelfML3,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "ML3",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfML3:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


class LearnedLossPPO(_LearnedLossMixin, PPO):
    """PPO with a learned loss term added to its objective.

    The minimised loss is PPO's ``policy_loss + ent_coef * entropy_loss +
    vf_coef * value_loss`` plus ``learned_loss_weight * M_phi(obs, action,
    log pi(action | obs), goal)`` on the same mini-batch. The learned term
    sees observations as the environment produced them (a ``VecNormalize``
    wrapper is undone for it), like during meta-training.

    Parameters
    ----------
    policy, env
        As for :class:`stable_baselines3.PPO`.
    learned_loss : LearnedLoss
        A policy loss from :func:`rl.meta_train_policy_loss`.
    learned_loss_weight : float, default=1.0
        Weight of the learned term; 0 gives plain PPO.
    goal_dim : int, optional
        Goal entries at the end of the observation; default from the loss.
    **kwargs
        Any other :class:`~stable_baselines3.PPO` argument.
    """

    def __init__(self, policy, env, learned_loss: LearnedLoss | None = None,
                 learned_loss_weight: float = 1.0, goal_dim: int | None = None,
                 _init_setup_model: bool = True, **kwargs: Any):
        self._store_learned_loss(learned_loss, goal_dim)
        if learned_loss_weight < 0 or not math.isfinite(learned_loss_weight):
            raise ValueError(f"learned_loss_weight must be finite and >= 0, "
                             f"got {learned_loss_weight}")
        self.learned_loss_weight = float(learned_loss_weight)
        super().__init__(policy, env, _init_setup_model=False, **kwargs)
        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        """SB3's PPO update with ``learned_loss_weight * M_phi`` added to every mini-batch loss.

        :meth:`stable_baselines3.PPO.train` runs unchanged, through two hooks
        held for the duration of the call: the policy's ``evaluate_actions``
        also computes the learned term on the mini-batch, and right after PPO
        zeroes the gradients the optimizer's ``zero_grad`` puts in the learned
        term's gradient, to which PPO's ``loss.backward()`` adds its own
        before clipping and stepping. A weight of 0 runs PPO's update alone.
        """
        if self.learned_loss_weight == 0:
            super().train()
            return
        policy, optimizer = self.policy, self.policy.optimizer
        terms: list[th.Tensor] = []  # the learned term of each mini-batch, in order

        def evaluate_actions(obs, actions):
            values, log_prob, entropy = type(policy).evaluate_actions(policy, obs, actions)
            terms.append(self._learned_loss_value(obs, actions, log_prob))
            return values, log_prob, entropy

        def zero_grad(set_to_none: bool = True) -> None:
            type(optimizer).zero_grad(optimizer, set_to_none)
            # PPO's loss shares this mini-batch's graph: keep it for PPO's backward
            (self.learned_loss_weight * terms[-1]).backward(retain_graph=True)
            terms[-1] = terms[-1].detach()  # frees the graph once PPO's backward is done

        policy.evaluate_actions, optimizer.zero_grad = evaluate_actions, zero_grad
        try:
            super().train()
        finally:
            del policy.evaluate_actions, optimizer.zero_grad
        self.logger.record("train/learned_loss", th.stack(terms).mean().item())


__all__ = ["ML3", "LearnedLossPPO"]
