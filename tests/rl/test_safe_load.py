"""ML3.load / LearnedLossPPO.load run no code from a crafted zip unless trusted."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

from rl import ML3, LearnedLossPPO, meta_train_policy_loss
from rl.ml3._safe_load import SAFE_DATA_KEY, UnsafeModelFile

ENV_ID = "ml3/ReacherGoal-v0"


@pytest.fixture(scope="module")
def learned_loss():
    return meta_train_policy_loss(
        ENV_ID, goals=np.array([[0.1, 0.1]]), n_meta_iter=1, tasks_per_iter=1,
        rollout_episodes=1, horizon=5, batch_size=5, n_epochs=1, rollouts_per_policy=1,
        loss_hidden_layer_sizes=(4,), random_state=0, verbose=0)


def make_env():
    return gym.make(ENV_ID, goal=[0.1, -0.1])


class _Payload:
    """Unpickling this writes a marker file (any code a crafted file could run) and gives {}."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return eval, (f"(open({self.marker!r}, 'w').write('ran'), {{}})[1]",)


def serialized(marker) -> dict:
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    return {":type:": "<class 'dict'>", ":serialized:": blob}


def rewrite_data(src, dst, edit):
    """Copy an SB3 zip, passing its ``data`` JSON through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            content = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                edit(data)
                content = json.dumps(data).encode()
            zout.writestr(item, content)
    return dst


@pytest.fixture(params=[ML3, LearnedLossPPO], ids=["ML3", "LearnedLossPPO"])
def saved(request, learned_loss, tmp_path):
    algo = request.param
    model = algo("MlpPolicy", make_env(), learned_loss=learned_loss, n_steps=10, batch_size=10,
                 seed=0)
    model.learn(10)
    model.save(tmp_path / "agent.zip")
    return algo, tmp_path / "agent.zip"


def test_library_files_load_without_trust(saved):
    algo, path = saved
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    pickled = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
    assert {"policy_class", "observation_space", "action_space"} <= pickled  # SB3 pickles them
    model = algo.load(path, env=make_env())
    assert model.observation_space == make_env().observation_space
    assert not hasattr(model, SAFE_DATA_KEY)
    model.learn(10, reset_num_timesteps=False)
    assert model.num_timesteps == 20


def test_crafted_pickle_in_a_known_entry_never_runs(saved, tmp_path):
    algo, path = saved
    marker = tmp_path / "ran"
    crafted = rewrite_data(path, tmp_path / "crafted.zip",
                           lambda d: d.update(policy_kwargs=serialized(marker)))
    model = algo.load(crafted, env=make_env())  # rebuilt from the JSON description
    assert not marker.exists()
    assert model.policy_kwargs == algo.load(path).policy_kwargs
    algo.load(crafted, env=make_env(), trust_pickled=True)  # the payload is live
    assert marker.read_text() == "ran"


def test_crafted_pickle_in_an_unknown_entry_is_refused(saved, tmp_path):
    algo, path = saved
    marker = tmp_path / "ran"
    crafted = rewrite_data(path, tmp_path / "crafted.zip",
                           lambda d: d.update(extra_state=serialized(marker)))
    with pytest.raises(UnsafeModelFile, match=r"crafted\.zip.*\['extra_state'\].*trust_pickled"):
        algo.load(crafted, env=make_env())
    assert not marker.exists()


@pytest.mark.parametrize("field, value, message", [
    ("policy_class", "os:system", "not one of"),
    ("policy_kwargs", {"optimizer_class": {"class": "os:system"}}, "not an optimizer"),
    ("policy_kwargs", {"optimizer_class": {"class": "torch.optim:Adam.__init__"}},
     "not an optimizer"),
    ("observation_space", {"type": "Box", "low": [0], "high": [1], "shape": [1],
                           "dtype": "object"}, "numeric dtype"),
    ("observation_space", {"type": "Tuple"}, "not a Box"),
    ("learning_rate", {"lambda": "x"}, "not a constant or linear schedule"),
])
def test_crafted_safe_description_is_refused(saved, tmp_path, field, value, message):
    algo, path = saved

    def edit(data):  # the entry pickled, its JSON description crafted
        data[field] = serialized(tmp_path / "ran")
        data[SAFE_DATA_KEY][field] = value

    crafted = rewrite_data(path, tmp_path / "crafted.zip", edit)
    with pytest.raises(ValueError, match=message):
        algo.load(crafted, env=make_env())
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("change, message", [
    ({"config": {"kind": "features", "meta_history_": [1.0]}}, "unknown keys"),
    ({"meta_history": [float("nan")]}, "finite numbers"),
    ({"meta_info": {"inner_lr": "fast"}}, "meta_info.inner_lr"),
])
def test_crafted_learned_loss_spec_is_refused(saved, tmp_path, change, message):
    algo, path = saved

    def edit(data):
        spec = data["_learned_loss_spec"]
        for key, value in change.items():
            spec[key] = {**spec[key], **value} if isinstance(value, dict) else value

    crafted = rewrite_data(path, tmp_path / "crafted.zip", edit)
    with pytest.raises(ValueError, match=message):
        algo.load(crafted, env=make_env())


def test_plain_sb3_zip_needs_trust(tmp_path):
    PPO("MlpPolicy", make_env(), n_steps=16, batch_size=16, seed=0).save(tmp_path / "ppo.zip")
    with pytest.raises(UnsafeModelFile, match="policy_class"):
        LearnedLossPPO.load(tmp_path / "ppo.zip")


def test_not_a_zip(tmp_path):
    (tmp_path / "agent.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a Stable-Baselines3 model zip"):
        ML3.load(tmp_path / "agent.zip")
