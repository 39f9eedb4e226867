"""PolicyLossInfo: the typed ``meta_info_["policy"]`` of a policy loss, written and read."""

from __future__ import annotations

import dataclasses
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest

from rl import ML3, meta_train_policy_loss
from rl.dynamics import DynamicsEnsemble
from rl.meta.info import PolicyLossInfo
from rl.meta.model_based import (
    env_spec,
    feature_set_of,
    meta_train_model_based_loss,
    n_loss_inputs,
    train_policy_with_loss,
)
from sklearn_ml3 import LearnedLoss
from sklearn_ml3._artifact import POLICY_INFO_FIELDS

REACHER, PM = "ml3/ReacherGoal-v0", "ml3/PointmassGoal-v0"
FULL = PolicyLossInfo(
    env_id=REACHER, paradigm="model_free", hidden_sizes=(32, 32), features="joint_frame",
    horizon=50, obs_dim=10, act_dim=2, goal_dim=2, inputs=("obs", "action", "log_prob", "goal"),
    loss_structure="quadratic", simulator="twin", log_std_init=-0.5, rollout_steps=400,
    batch_size=100, n_epochs=2, rollouts_per_policy=4, input_shift=(0.0, 1.5),
    input_scale=(1.0, 0.5))
# as earlier versions wrote them
OLD_MODEL_BASED = {"env_id": PM, "hidden_layer_sizes": [8], "horizon": 30,
                   "feature_set": "relative"}
FIRST_MODEL_BASED = {"env_id": PM, "hidden_layer_sizes": [8], "horizon": 30,
                     "features": "state, action, goal, goal - position"}
FIRST_MODEL_FREE = {"env_id": REACHER, "obs_dim": 10, "act_dim": 2, "goal_dim": 2,
                    "inputs": ["obs", "action", "log_prob", "goal"], "hidden_sizes": [64, 64],
                    "log_std_init": -0.5, "rollout_steps": 100, "batch_size": 50,
                    "n_epochs": 1, "rollouts_per_policy": 1}


def test_fields_are_the_file_formats():
    assert [f.name for f in dataclasses.fields(PolicyLossInfo)] == list(POLICY_INFO_FIELDS)


def test_round_trip_through_json():
    d = FULL.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["hidden_sizes"] == [32, 32] and d["input_scale"] == [1.0, 0.5]
    assert PolicyLossInfo.from_dict(json.loads(json.dumps(d))) == FULL
    small = PolicyLossInfo(PM, "model_based", [8, 8], features="plain")
    assert small.hidden_sizes == (8, 8)  # sequences become tuples
    assert small.to_dict() == {"env_id": PM, "paradigm": "model_based", "hidden_sizes": [8, 8],
                               "features": "plain"}  # unset optional fields are left out
    assert PolicyLossInfo.from_dict(small.to_dict()) == small
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.batch_size = 3


def test_earlier_spellings_are_read():
    info = PolicyLossInfo.from_dict(OLD_MODEL_BASED)
    assert (info.paradigm, info.hidden_sizes, info.features, info.horizon) == (
        "model_based", (8,), "relative", 30)
    first = PolicyLossInfo.from_dict(FIRST_MODEL_BASED)
    assert first.paradigm == "model_based" and first.features is None  # a description, dropped
    free = PolicyLossInfo.from_dict(FIRST_MODEL_FREE)
    assert free.paradigm == "model_free" and free.features is None and free.input_shift is None
    assert free.rollout_steps == 100 and free.hidden_sizes == (64, 64)
    with_paradigm = PolicyLossInfo.from_dict({**OLD_MODEL_BASED, "paradigm": "model_based"})
    assert with_paradigm == info


@pytest.mark.parametrize("edit, field", [
    ({"env_id": 3}, "env_id"),
    ({"paradigm": "supervised"}, "paradigm"),
    ({"hidden_sizes": [32, 0]}, "hidden_sizes"),
    ({"hidden_sizes": [32.0]}, "hidden_sizes"),
    ({"hidden_sizes": 32}, "hidden_sizes"),
    ({"hidden_layer_sizes": [True]}, "hidden_sizes"),
    ({"features": 1}, "features"),
    ({"horizon": 0}, "horizon"),
    ({"obs_dim": "10"}, "obs_dim"),
    ({"goal_dim": -1}, "goal_dim"),
    ({"inputs": "obs"}, "inputs"),
    ({"log_std_init": float("nan")}, "log_std_init"),
    ({"rollout_steps": 1.5}, "rollout_steps"),
    ({"batch_size": True}, "batch_size"),
    ({"n_epochs": None, "rollouts_per_policy": 0}, "rollouts_per_policy"),
    ({"input_shift": [0.0, "a"]}, "input_shift"),
    ({"input_scale": [1.0, 0.0]}, "input_scale"),
    ({"feature_set": "plain"}, "features"),  # both spellings
    ({"batch_sizes": 3}, "unknown keys"),
])
def test_wrong_values_are_refused_by_name(edit, field):
    d = {**FULL.to_dict(), **edit}
    with pytest.raises(ValueError, match=field):
        PolicyLossInfo.from_dict(d)


@pytest.mark.parametrize("missing", ["env_id", "hidden_sizes"])
def test_required_fields(missing):
    d = FULL.to_dict()
    del d[missing]
    with pytest.raises(ValueError, match=f"'{missing}': missing"):
        PolicyLossInfo.from_dict(d)
    with pytest.raises(ValueError, match="must be a JSON object"):
        PolicyLossInfo.from_dict([("env_id", PM)])
    with pytest.raises(ValueError, match="'hidden_sizes'"):
        PolicyLossInfo(PM, "model_based", 8)


def test_of_a_loss_without_one():
    loss = LearnedLoss(kind="features", n_inputs=5, random_state=0)
    assert PolicyLossInfo.of(loss) is None
    with pytest.raises(ValueError, match="no policy meta-training"):
        PolicyLossInfo.of(loss, required=True)
    loss.meta_info_["policy"] = {**FULL.to_dict(), "n_epochs": 0}
    with pytest.raises(ValueError, match="meta_info_\\['policy'\\].*'n_epochs'"):
        PolicyLossInfo.of(loss)


def test_a_file_with_a_malformed_policy_entry_is_refused(tmp_path):
    loss = LearnedLoss(kind="features", n_inputs=5, random_state=0)
    loss.meta_info_["policy"] = {**FULL.to_dict(), "batch_size": "64"}
    loss.save(tmp_path / "bad.ml3")
    with pytest.raises(ValueError, match="meta_info.policy.batch_size"):
        LearnedLoss.load(tmp_path / "bad.ml3")
    loss.meta_info_["policy"] = OLD_MODEL_BASED  # an earlier version's file still loads
    loss.save(tmp_path / "old.ml3")
    loaded = LearnedLoss.load(tmp_path / "old.ml3")
    assert loaded.meta_info_["policy"] == OLD_MODEL_BASED  # read as stored
    assert PolicyLossInfo.of(loaded) == PolicyLossInfo.from_dict(OLD_MODEL_BASED)


def test_model_free_loss_records_it_and_ml3_uses_it(tmp_path):
    loss = meta_train_policy_loss(
        REACHER, goals=np.array([[0.1, 0.1], [0.05, -0.15]]), n_meta_iter=1, tasks_per_iter=1,
        rollout_episodes=2, horizon=8, batch_size=8, n_epochs=2, rollouts_per_policy=1,
        policy_hidden_sizes=(16,), log_std_init=-0.7, loss_hidden_layer_sizes=(8,),
        simulator="env", meta_gradient="backprop", loss_structure="free", features="plain",
        inner_optimizer="sgd", inner_lr=0.1, random_state=0, verbose=0)
    info = PolicyLossInfo.of(loss)
    assert info.paradigm == "model_free" and info.env_id == REACHER
    assert info.hidden_sizes == (16,) and info.features == "plain" and info.horizon == 8
    assert (info.obs_dim, info.act_dim, info.goal_dim) == (10, 2, 2)
    assert (info.rollout_steps, info.batch_size, info.n_epochs) == (16, 8, 2)
    assert info.log_std_init == pytest.approx(-0.7) and info.loss_structure == "free"
    assert len(info.input_shift) == len(info.input_scale) == loss.n_inputs
    assert loss.meta_info_["policy"] == info.to_dict()
    loss.save(tmp_path / "free.ml3")
    assert PolicyLossInfo.of(LearnedLoss.load(tmp_path / "free.ml3")) == info

    model = ML3("MlpPolicy", gym.make(REACHER, goal=[0.1, -0.1]), learned_loss=loss,
                device="cpu", seed=0)
    assert (model.n_steps, model.batch_size, model.n_epochs) == (16, 8, 2)
    assert model.goal_dim == 2
    assert float(model.policy.log_std.detach()[0]) == pytest.approx(-0.7)


def test_ml3_defaults_without_recorded_settings():
    """A loss from the first model-free version records no features: ML3 reads "plain"."""
    loss = LearnedLoss(kind="features", n_inputs=15, random_state=0)
    loss.meta_history_ = np.zeros(1)
    loss.meta_info_ = {"inner_lr": 0.1, "inner_optimizer": "sgd",
                       "policy": {k: v for k, v in FIRST_MODEL_FREE.items()
                                  if k not in ("rollout_steps", "batch_size", "n_epochs")}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = ML3("MlpPolicy", gym.make(REACHER, goal=[0.1, -0.1]), learned_loss=loss,
                    device="cpu")
    assert (model.n_steps, model.batch_size, model.n_epochs) == (512, 64, 1)


def test_model_based_loss_records_it(tmp_path):
    dynamics = DynamicsEnsemble(4, 2, n_members=2, hidden_layer_sizes=(16,), random_state=0)
    loss = meta_train_model_based_loss(
        PM, [[1.0, 0.0], [0.5, 0.8]], n_meta_iter=2, inner_steps=2, tasks_per_iter=1,
        policy_hidden_sizes=(8,), loss_hidden=(8,), dynamics=dynamics, n_random_episodes=2,
        initial_epochs=1, refit_every=0, random_state=0, verbose=0)
    info = PolicyLossInfo.of(loss)
    spec = env_spec(PM)
    assert info.paradigm == "model_based" and info.env_id == PM
    assert info.hidden_sizes == (8,) and info.horizon == spec.horizon
    assert info.features == feature_set_of(loss, spec)
    assert info.batch_size is None and "batch_size" not in loss.meta_info_["policy"]
    loss.save(tmp_path / "mb.ml3")
    loaded = LearnedLoss.load(tmp_path / "mb.ml3")
    assert PolicyLossInfo.of(loaded) == info
    params, _ = train_policy_with_loss(loaded, PM, [1.0, 0.0], n_updates=1)
    assert next(iter(params.values())).shape[0] == 8  # the recorded architecture

    # the same loss as an earlier version recorded it still meta-tests the same way
    loaded.meta_info_["policy"] = {"env_id": PM, "hidden_layer_sizes": [8],
                                   "horizon": spec.horizon, "feature_set": info.features}
    again, _ = train_policy_with_loss(loaded, PM, [1.0, 0.0], n_updates=1)
    for key in params:
        np.testing.assert_array_equal(again[key].numpy(), params[key].numpy())
    loaded.meta_info_["policy"] = {"env_id": PM, "hidden_layer_sizes": [8], "horizon": 30,
                                   "features": "a description"}  # width decides
    assert loaded.n_inputs == n_loss_inputs(spec, feature_set_of(loaded, spec))
