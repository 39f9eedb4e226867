"""The ML3 algorithm as an SB3 algorithm: run, save/load, determinism, train/eval mode.

Modelled on sb3-contrib's tests/test_run.py, test_save_load.py,
test_deterministic.py and test_train_eval_mode.py, on a tiny budget.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import VecNormalize

from rl import ML3, LearnedLossPPO, ML3Policy, meta_train_policy_loss
from sklearn_ml3 import LearnedLoss

ENV_ID = "ml3/ReacherGoal-v0"
GOAL = [0.1, -0.1]


@pytest.fixture(scope="module")
def learned_loss() -> LearnedLoss:
    goals = np.array([[0.1, 0.1], [0.05, 0.15]])
    return meta_train_policy_loss(
        ENV_ID, goals=goals, n_meta_iter=2, tasks_per_iter=1, rollout_episodes=2, horizon=10,
        batch_size=10, n_epochs=1, rollouts_per_policy=1, loss_hidden_layer_sizes=(16,),
        simulator="env", meta_gradient="backprop", loss_structure="free", features="plain",
        inner_optimizer="sgd", inner_lr=0.1,
        random_state=0, verbose=0)


def make_env():
    return gym.make(ENV_ID, goal=GOAL)


def actor_params(model) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("net_arch", [None, [8], [32, 32]])
def test_run_trains_actor_only(learned_loss, net_arch):
    policy_kwargs = {} if net_arch is None else {"net_arch": net_arch}
    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, n_steps=20, seed=0,
                policy_kwargs=policy_kwargs)
    before = actor_params(model)
    model.learn(total_timesteps=60)
    after = actor_params(model)
    assert model.num_timesteps == 60
    assert isinstance(model.policy, ML3Policy)
    changed = {k for k in before if not th.equal(before[k], after[k])}
    assert "action_net.weight" in changed and "log_std" in changed
    assert not any(k.startswith("value_net") for k in changed)  # the value head stays unused


def test_defaults_come_from_the_learned_loss(learned_loss):
    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss)
    info = learned_loss.meta_info_
    assert model.n_steps == info["policy"]["rollout_steps"]
    assert model.batch_size == info["policy"]["batch_size"]
    assert model.n_epochs == info["policy"]["n_epochs"]
    assert model.learning_rate == info["inner_lr"]
    assert info["inner_optimizer"] == "sgd"
    assert type(model.policy.optimizer) is th.optim.SGD
    assert model.goal_dim == 2


@pytest.mark.parametrize(("net_arch", "ratio"), [(None, 1.0), ([32], 2.0), ([128, 256], 0.25),
                                                 ({"pi": [16], "vf": [8]}, 4.0), ([], 1.0)])
def test_default_lr_follows_the_actor_width(learned_loss, net_arch, ratio):
    """The meta-training policy is 64-64: the default lr scales with 64 / last actor width."""
    assert learned_loss.meta_info_["policy"]["hidden_sizes"] == [64, 64]
    policy_kwargs = {} if net_arch is None else {"net_arch": net_arch}
    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, policy_kwargs=policy_kwargs)
    assert model.learning_rate == pytest.approx(learned_loss.meta_info_["inner_lr"] * ratio)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(model.learning_rate)
    explicit = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, learning_rate=0.05,
                   policy_kwargs=policy_kwargs)
    assert explicit.learning_rate == 0.05  # a given rate is never rescaled


def test_lr_warning_compares_with_the_width_scaled_rate(learned_loss, recwarn):
    lr = learned_loss.meta_info_["inner_lr"]
    ML3("MlpPolicy", make_env(), learned_loss=learned_loss, learning_rate=lr / 4,
        policy_kwargs={"net_arch": [256]})  # the 256-wide actor's own default: no warning
    assert not [w for w in recwarn if "far from" in str(w.message)]
    with pytest.warns(UserWarning, match="far from the 0.1 the loss"):
        ML3("MlpPolicy", make_env(), learned_loss=learned_loss, learning_rate=lr / 4)


def test_width_scaled_lr_survives_save_and_load(learned_loss, tmp_path):
    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss,
                policy_kwargs={"net_arch": [256]})
    model.save(tmp_path / "agent.zip")
    loaded = ML3.load(tmp_path / "agent.zip", env=make_env())
    assert loaded.learning_rate == pytest.approx(learned_loss.meta_info_["inner_lr"] / 4)
    assert loaded.policy.optimizer.param_groups[0]["lr"] == pytest.approx(loaded.learning_rate)


def test_loss_sees_the_meta_training_features(learned_loss):
    """ML3 standardises (obs, action, log-prob, goal) exactly as meta-training did."""
    from rl.meta.model_free import loss_features

    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss)
    info = learned_loss.meta_info_["policy"]
    assert len(info["input_scale"]) == learned_loss.n_inputs
    obs = th.randn(5, 10)
    actions, log_prob = th.randn(5, 2), th.randn(5)
    expected = learned_loss(loss_features(obs, actions, log_prob, 2, info["input_shift"],
                                          info["input_scale"]))
    raw = learned_loss(obs, actions, log_prob[:, None], obs[:, -2:])
    dev = model.device  # "auto": a GPU where there is one
    got = model._learned_loss_value(obs.to(dev), actions.to(dev), log_prob.to(dev)).cpu()
    torch_close = th.testing.assert_close
    torch_close(got, expected)
    assert not th.allclose(got, raw)


def test_run_vec_env_normalize_and_callback(learned_loss):
    env = VecNormalize(make_vec_env(make_env, n_envs=2, seed=0), norm_reward=False)
    calls = []

    class Count(BaseCallback):
        def _on_step(self) -> bool:
            calls.append(self.num_timesteps)
            return True

    model = ML3("MlpPolicy", env, learned_loss=learned_loss, n_steps=10, seed=0)
    model.learn(total_timesteps=40, callback=Count(), progress_bar=True)
    assert model.num_timesteps == 40
    assert calls[-1] == 40


def test_loss_sees_observations_before_vec_normalize(learned_loss):
    """The loss reads the env's raw observations, as in meta-training, not normalised ones."""
    from rl.meta.model_free import loss_features

    env = VecNormalize(make_vec_env(make_env, n_envs=2, seed=0), norm_reward=False)
    model = ML3("MlpPolicy", env, learned_loss=learned_loss, n_steps=10, seed=0, device="cpu")
    model.learn(total_timesteps=40)  # VecNormalize gathers its statistics
    raw = th.as_tensor(env.get_original_obs(), dtype=th.float32)
    normalised = th.as_tensor(env.normalize_obs(env.get_original_obs()), dtype=th.float32)
    assert not th.allclose(raw, normalised, atol=1e-2)  # the test can tell them apart
    actions, log_prob = th.randn(2, 2), th.randn(2)
    info = learned_loss.meta_info_["policy"]
    on_raw = learned_loss(loss_features(raw, actions, log_prob, 2, info["input_shift"],
                                        info["input_scale"]))
    got = model._learned_loss_value(normalised, actions, log_prob)
    th.testing.assert_close(got, on_raw, rtol=1e-5, atol=1e-6)


def test_rewards_are_not_used(learned_loss):
    class FlipReward(gym.RewardWrapper):
        def reward(self, reward):
            return -100.0 * reward

    results = []
    for factory in (make_env, lambda: FlipReward(make_env())):
        model = ML3("MlpPolicy", factory(), learned_loss=learned_loss, n_steps=20, seed=3)
        model.learn(total_timesteps=40)
        results.append(actor_params(model))
    for key in results[0]:
        assert th.equal(results[0][key], results[1][key])


def test_callers_loss_is_left_untouched(learned_loss):
    reference = copy.deepcopy(learned_loss)
    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, n_steps=20, seed=0)
    model.learn(total_timesteps=20)
    assert model.learned_loss is not learned_loss
    for (k, v), w in zip(learned_loss.network_.state_dict().items(),
                         reference.network_.state_dict().values(), strict=True):
        assert th.equal(v, w), k
    assert [p.requires_grad for p in learned_loss.parameters()] == [
        p.requires_grad for p in reference.parameters()]


def test_save_load(learned_loss, tmp_path):
    env = make_env()
    model = ML3("MlpPolicy", env, learned_loss=learned_loss, n_steps=20, seed=0)
    model.learn(total_timesteps=40)
    obs = np.stack([env.observation_space.sample() for _ in range(5)])
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent.zip")
    del model

    loaded = ML3.load(tmp_path / "agent.zip", env=env)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)
    for k, v in learned_loss.network_.state_dict().items():
        assert th.equal(loaded.learned_loss.network_.state_dict()[k].cpu(), v)
    assert loaded.learned_loss.meta_info_["policy"] == learned_loss.meta_info_["policy"]
    np.testing.assert_array_equal(loaded.learned_loss.meta_history_, learned_loss.meta_history_)
    assert loaded.batch_size == 10 and loaded.n_steps == 20
    assert type(loaded.policy.optimizer) is th.optim.SGD  # the loss's inner optimizer
    loaded.learn(total_timesteps=20, reset_num_timesteps=False)  # keeps training
    assert loaded.num_timesteps == 60


@pytest.mark.parametrize("algo", ["ML3", "LearnedLossPPO"])
def test_deterministic(learned_loss, algo):
    def run():
        if algo == "ML3":
            model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, n_steps=20, seed=7)
        else:
            model = LearnedLossPPO("MlpPolicy", make_env(), learned_loss=learned_loss,
                                   n_steps=32, batch_size=16, n_epochs=2, seed=7)
        model.learn(total_timesteps=64)
        env = make_env()
        obs, _ = env.reset(seed=1)
        return model.predict(obs, deterministic=False)[0], actor_params(model)

    (a1, p1), (a2, p2) = run(), run()
    np.testing.assert_array_equal(a1, a2)
    for key in p1:
        assert th.equal(p1[key], p2[key]), key


class DropoutExtractor(FlattenExtractor):
    def __init__(self, observation_space):
        super().__init__(observation_space)
        self.dropout = th.nn.Dropout(0.5)

    def forward(self, observations):
        return self.dropout(super().forward(observations))


def test_train_eval_mode(learned_loss):
    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, n_steps=20, seed=0,
                policy_kwargs={"features_extractor_class": DropoutExtractor})
    modes = []
    original = model._learned_loss_value

    def spy(*args):
        modes.append(model.policy.training)
        return original(*args)

    model._learned_loss_value = spy
    model.learn(total_timesteps=40)
    assert modes and all(modes)  # updates run in train mode (dropout active)
    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    first = model.predict(obs, deterministic=True)[0]
    assert not model.policy.training  # predict runs in eval mode
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], first)


def test_learned_loss_ppo_weight_zero_is_ppo_bit_for_bit(learned_loss, tmp_path):
    kwargs = {"n_steps": 32, "batch_size": 16, "n_epochs": 2, "seed": 5}
    ppo = PPO("MlpPolicy", make_env(), **kwargs).learn(64)
    mixed = LearnedLossPPO("MlpPolicy", make_env(), learned_loss=learned_loss,
                           learned_loss_weight=0.0, **kwargs).learn(64)
    for key, value in actor_params(ppo).items():
        assert th.equal(actor_params(mixed)[key], value), key

    weighted = LearnedLossPPO("MlpPolicy", make_env(), learned_loss=learned_loss,
                              learned_loss_weight=10.0, **kwargs).learn(64)
    assert not th.equal(actor_params(weighted)["action_net.weight"],
                        actor_params(ppo)["action_net.weight"])
    weighted.save(tmp_path / "ppo.zip")
    loaded = LearnedLossPPO.load(tmp_path / "ppo.zip", env=make_env())
    assert loaded.learned_loss_weight == 10.0
    for k, v in weighted.learned_loss.network_.state_dict().items():
        assert th.equal(loaded.learned_loss.network_.state_dict()[k].cpu(), v.cpu())


def test_learned_loss_ppo_adds_the_weighted_learned_gradient_to_ppos(learned_loss):
    """One full-batch SGD step: the update moves by exactly -lr * w * grad(learned term) more."""
    sgd = {"optimizer_class": th.optim.SGD, "optimizer_kwargs": {}}
    kwargs = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "seed": 2, "learning_rate": 0.1,
              "max_grad_norm": 1e9, "policy_kwargs": sgd}
    weight = 3.0
    # built and run one after the other: each seeds the global RNGs it samples actions from
    ppo = LearnedLossPPO("MlpPolicy", make_env(), learned_loss=learned_loss,
                         learned_loss_weight=0.0, **kwargs).learn(32)
    mixed = LearnedLossPPO("MlpPolicy", make_env(), learned_loss=learned_loss,
                           learned_loss_weight=weight, **kwargs)
    start = copy.deepcopy(mixed.policy)
    mixed.learn(32)
    np.testing.assert_array_equal(mixed.rollout_buffer.actions, ppo.rollout_buffer.actions)
    data = next(mixed.rollout_buffer.get(None))
    _, log_prob, _ = start.evaluate_actions(data.observations, data.actions)
    start.zero_grad()
    mixed._learned_loss_value(data.observations, data.actions, log_prob).backward()
    moved = 0
    for (name, p_start), p_ppo, p_mixed in zip(start.named_parameters(),
                                               ppo.policy.parameters(),
                                               mixed.policy.parameters(), strict=True):
        if p_start.grad is None or not p_start.grad.abs().sum() > 0:
            continue
        moved += 1
        th.testing.assert_close(p_mixed.detach() - p_ppo.detach(),
                                -0.1 * weight * p_start.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert moved >= 3  # actor layers and log_std
    assert "train/learned_loss" in mixed.logger.name_to_value


def test_ml3_trains_on_dict_observations_with_the_flat_features(learned_loss):
    """MultiInputPolicy on goal_observation='dict': the loss reads the flat observation."""
    flat_env = make_env()
    dict_env = gym.make(ENV_ID, goal=GOAL, goal_observation="dict")
    model = ML3("MultiInputPolicy", dict_env, learned_loss=learned_loss, n_steps=20, seed=0)
    flat_model = ML3("MlpPolicy", flat_env, learned_loss=learned_loss, n_steps=20, seed=0)
    assert model.observation_layout == ("observation", "goal_offset", "desired_goal")
    flat_obs, _ = flat_env.reset(seed=3)
    dict_obs, _ = dict_env.reset(seed=3)
    rows = []
    for _ in range(4):
        action = flat_env.action_space.sample()
        flat_obs, *_ = flat_env.step(action)
        dict_obs, *_ = dict_env.step(action)
        rows.append((flat_obs, dict_obs, action))
    flat_batch = th.as_tensor(np.stack([r[0] for r in rows]))
    dict_batch = {k: th.as_tensor(np.stack([r[1][k] for r in rows])) for k in rows[0][1]}
    actions, log_prob = th.as_tensor(np.stack([r[2] for r in rows])), th.zeros(4)
    th.testing.assert_close(model._learned_loss_value(dict_batch, actions, log_prob),
                            flat_model._learned_loss_value(flat_batch, actions, log_prob),
                            rtol=1e-5, atol=1e-6)
    before = actor_params(model)
    model.learn(total_timesteps=40)
    assert not th.equal(before["action_net.weight"], actor_params(model)["action_net.weight"])


def test_ml3_on_dict_observations_saves_and_loads(learned_loss, tmp_path):
    env = gym.make(ENV_ID, goal=GOAL, goal_observation="dict")
    model = ML3("MultiInputPolicy", env, learned_loss=learned_loss, n_steps=20, seed=0)
    model.learn(total_timesteps=20)
    model.save(tmp_path / "dict.zip")
    loaded = ML3.load(tmp_path / "dict.zip", env=env)
    assert tuple(loaded.observation_layout) == model.observation_layout
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  model.predict(obs, deterministic=True)[0])


def test_tensorboard_log_records_the_learned_loss(learned_loss, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = ML3("MlpPolicy", make_env(), learned_loss=learned_loss, n_steps=20, seed=0,
                tensorboard_log=str(tmp_path))
    model.learn(total_timesteps=60, tb_log_name="reacher")
    runs = list(tmp_path.glob("reacher_*"))
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    assert "train/learned_loss" in events.Tags()["scalars"]
    # 3 updates; SB3 writes an update's values at the next iteration's dump
    values = [event.value for event in events.Scalars("train/learned_loss")]
    assert len(values) == 2 and np.all(np.isfinite(values))


def test_bad_inputs(learned_loss):
    with pytest.raises(ValueError, match="needs learned_loss"):
        ML3("MlpPolicy", make_env())
    with pytest.raises(ValueError, match="kind='features'"):
        ML3("MlpPolicy", make_env(), learned_loss=LearnedLoss(random_state=0))
    wrong = LearnedLoss(kind="features", n_inputs=7, random_state=0)
    with pytest.warns(UserWarning, match="not been meta-trained"), \
            pytest.raises(ValueError, match="features per row"):
        ML3("MlpPolicy", make_env(), learned_loss=wrong)
    with pytest.raises(ValueError, match="optimizer"):
        ML3("MlpPolicy", make_env(), learned_loss=learned_loss, optimizer="lbfgs")
    with pytest.warns(UserWarning, match="far from"):
        ML3("MlpPolicy", make_env(), learned_loss=learned_loss, learning_rate=1.0)
    with pytest.raises(ValueError, match="learned_loss_weight"):
        LearnedLossPPO("MlpPolicy", make_env(), learned_loss=learned_loss,
                       learned_loss_weight=-1.0)


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agent_trains_and_loads_on_cpu(learned_loss, tmp_path):
    env = make_env()
    model = ML3("MlpPolicy", env, learned_loss=learned_loss, n_steps=20, seed=0, device="cuda")
    assert model.device.type == "cuda"
    assert model.learned_loss.device.type == "cuda"
    before = actor_params(model)
    model.learn(total_timesteps=40)
    assert not th.equal(before["action_net.weight"], actor_params(model)["action_net.weight"])
    assert learned_loss.device.type == "cpu"  # the caller's loss stays where it was
    obs = np.stack([env.observation_space.sample() for _ in range(5)])
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent.zip")

    loaded = ML3.load(tmp_path / "agent.zip", env=env, device="cpu")
    assert loaded.device.type == "cpu" and loaded.learned_loss.device.type == "cpu"
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, atol=1e-5)
    loaded.learn(total_timesteps=20, reset_num_timesteps=False)
