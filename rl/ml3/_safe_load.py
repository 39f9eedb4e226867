"""Loading SB3 zips of :class:`rl.ML3` / :class:`rl.LearnedLossPPO` without running pickled code.

Stable-Baselines3 stores every attribute that is not plain JSON (spaces,
the policy class, ``policy_kwargs`` holding an optimizer class, schedules,
numpy arrays, deques) as a ``":serialized:"`` cloudpickle entry of the zip's
``data`` JSON, and ``load`` unpickles them: a crafted zip runs code. The
library's ``save`` therefore also writes a plain-JSON description of those
entries (``_safe_load_data``); the library's ``load`` rebuilds the entries
from it, resolving classes only from an allow-list, and refuses any other
pickled entry unless the caller passes ``trust_pickled=True``.
"""

from __future__ import annotations

import importlib
import json
import math
import zipfile
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

#: Attribute holding the JSON description in the saved ``data``.
SAFE_DATA_KEY = "_safe_load_data"
#: Entries SB3 rebuilds itself (in ``_setup_model`` / ``learn``) when they are None.
_REBUILT = ("lr_schedule", "_last_obs", "_last_episode_starts", "_last_original_obs")
#: Where a class named in ``policy_kwargs`` may come from, and what it must be.
_CLASS_HOMES = (("torch.optim", th.optim.Optimizer), ("torch.nn", th.nn.Module),
                ("stable_baselines3.common.torch_layers", BaseFeaturesExtractor))
_TRUST_HINT = ("pass trust_pickled=True only for a file you trust (unpickling runs code from "
               "the file)")


class UnsafeModelFile(ValueError):
    """A saved model would need unpickling (code from the file) to load."""


# ------------------------------------------------------------------ encode
def _space_to_json(space: gym.Space) -> dict[str, Any] | None:
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(),
                "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Dict):
        parts = {k: _space_to_json(s) for k, s in space.spaces.items()}
        return None if None in parts.values() else {"type": "Dict", "spaces": parts}
    return None  # other spaces load only with trust_pickled=True


def _schedule_to_json(schedule) -> dict[str, Any] | float | None:
    if isinstance(schedule, FloatSchedule):
        schedule = schedule.value_schedule
    if isinstance(schedule, (int, float)):
        return float(schedule)
    if isinstance(schedule, ConstantSchedule):
        return float(schedule.val)
    if isinstance(schedule, LinearSchedule):
        return {"linear": [float(schedule.start), float(schedule.end),
                           float(schedule.end_fraction)]}
    return None


def _class_name(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _kwargs_to_json(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    encoded = {}
    for key, value in kwargs.items():
        if isinstance(value, type):
            encoded[key] = {"class": _class_name(value)}
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return None
        encoded[key] = value
    return encoded


def _buffer_to_json(buffer: deque | None) -> dict[str, Any] | None:
    if buffer is None:
        return None
    items = list(buffer)
    try:
        json.dumps(items, allow_nan=False)
    except (TypeError, ValueError):
        return None  # SB3 starts a fresh buffer
    return {"maxlen": buffer.maxlen, "items": items}


def safe_load_data(algo) -> dict[str, Any]:
    """Plain-JSON description of the attributes SB3 would pickle, for :func:`safe_replacements`.

    An attribute that cannot be described (a custom space, a lambda
    schedule, a policy class outside the algorithm's aliases) is left out:
    such a file then loads only with ``trust_pickled=True``.
    """
    aliases = {cls: name for name, cls in algo.policy_aliases.items()}
    spec: dict[str, Any] = {
        "observation_space": _space_to_json(algo.observation_space),
        "action_space": _space_to_json(algo.action_space),
        "policy_class": aliases.get(algo.policy_class),
        "policy_kwargs": _kwargs_to_json(algo.policy_kwargs),
        "learning_rate": _schedule_to_json(algo.learning_rate),
        "ep_info_buffer": _buffer_to_json(algo.ep_info_buffer),
        "ep_success_buffer": _buffer_to_json(algo.ep_success_buffer),
        # SB3 picks the buffer from the observation space when this is None
        "rollout_buffer_class": "default" if algo.rollout_buffer_class in (
            None, RolloutBuffer, DictRolloutBuffer) else None,
    }
    for key in ("clip_range", "clip_range_vf"):
        if getattr(algo, key, None) is not None:
            spec[key] = _schedule_to_json(getattr(algo, key))
    return {k: v for k, v in spec.items() if v is not None}


# ------------------------------------------------------------------ decode
def _space_from_json(spec, where: str) -> gym.Space:
    if not isinstance(spec, dict) or spec.get("type") not in ("Box", "Discrete", "Dict"):
        raise ValueError(f"{where}: not a Box, Discrete or Dict space description")
    if spec["type"] == "Box":
        dtype = np.dtype(str(spec.get("dtype")))
        if dtype.kind not in "fiu":
            raise ValueError(f"{where}: a Box needs a numeric dtype, got {dtype}")
        low = np.asarray(spec.get("low"), dtype=dtype)
        high = np.asarray(spec.get("high"), dtype=dtype)
        shape = tuple(int(n) for n in spec.get("shape", ()))
        if low.shape != shape or high.shape != shape:
            raise ValueError(f"{where}: low/high do not have the shape {shape}")
        return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if spec["type"] == "Discrete":
        return gym.spaces.Discrete(int(spec["n"]), start=int(spec.get("start", 0)))
    spaces = spec.get("spaces")
    if not isinstance(spaces, dict):
        raise ValueError(f"{where}: a Dict space needs its sub-spaces")
    return gym.spaces.Dict({k: _space_from_json(s, f"{where}[{k!r}]") for k, s in spaces.items()})


def _schedule_from_json(spec, where: str):
    if isinstance(spec, (int, float)) and not isinstance(spec, bool) and math.isfinite(spec):
        return FloatSchedule(float(spec))
    if (isinstance(spec, dict) and isinstance(spec.get("linear"), list)
            and len(spec["linear"]) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in spec["linear"])):
        return FloatSchedule(LinearSchedule(*(float(v) for v in spec["linear"])))
    raise ValueError(f"{where}: not a constant or linear schedule")


def _class_from_json(name, where: str) -> type:
    """A class named ``module:qualname`` from torch.optim, torch.nn or SB3's extractors only."""
    module, _, qualname = str(name).partition(":")
    for home, base in _CLASS_HOMES:
        if module == home or module.startswith(home + "."):
            # only modules inside torch / SB3, which the library imports anyway
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, type) and issubclass(obj, base):
                return obj
    raise ValueError(f"{where}: {name!r} is not an optimizer, torch.nn module or SB3 features "
                     "extractor class")


def _kwargs_from_json(spec, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: not a JSON object")
    return {k: _class_from_json(v["class"], f"{where}[{k!r}]")
            if isinstance(v, dict) and set(v) == {"class"} else v for k, v in spec.items()}


def _buffer_from_json(spec, where: str) -> deque:
    if (not isinstance(spec, dict) or not isinstance(spec.get("items"), list)
            or not (spec.get("maxlen") is None or isinstance(spec["maxlen"], int))):
        raise ValueError(f"{where}: not a buffer description")
    return deque(spec["items"], maxlen=spec["maxlen"])


def _policy_from_json(name, where: str, algo_class) -> type:
    if name not in algo_class.policy_aliases:
        raise ValueError(f"{where}: {name!r} is not one of {algo_class.__name__}'s policies "
                         f"{sorted(algo_class.policy_aliases)}")
    return algo_class.policy_aliases[name]


_DECODERS = {
    "observation_space": _space_from_json, "action_space": _space_from_json,
    "policy_kwargs": _kwargs_from_json, "learning_rate": _schedule_from_json,
    "clip_range": _schedule_from_json, "clip_range_vf": _schedule_from_json,
    "ep_info_buffer": _buffer_from_json, "ep_success_buffer": _buffer_from_json,
    "rollout_buffer_class": lambda spec, where: None,
}


def read_data_json(file) -> dict[str, Any]:
    """The ``data`` JSON of an SB3 zip, parsed as plain JSON (nothing unpickled)."""
    try:
        with zipfile.ZipFile(file) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{getattr(file, 'name', file)} is not a Stable-Baselines3 model zip "
                         f"with a 'data' entry: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{getattr(file, 'name', file)}: the zip's 'data' is not a JSON object")
    return data


def safe_replacements(data: dict[str, Any], algo_class, name: str,
                      custom_objects: dict[str, Any] | None) -> dict[str, Any]:
    """``custom_objects`` for SB3's ``load`` that replace every pickled entry of ``data``.

    Raises
    ------
    UnsafeModelFile
        If an entry is pickled and the file carries no safe description of it.
    ValueError
        If the safe description itself is malformed.
    """
    given = dict(custom_objects or {})
    spec = data.get(SAFE_DATA_KEY, {})
    if not isinstance(spec, dict):
        raise ValueError(f"{name}: {SAFE_DATA_KEY!r} is not a JSON object")
    replacements: dict[str, Any] = {}
    refused = []
    for key, item in data.items():
        if key in given or not (isinstance(item, dict) and ":serialized:" in item):
            continue
        if key in _REBUILT:
            replacements[key] = None
        elif key == "policy_class" and "policy_class" in spec:
            replacements[key] = _policy_from_json(spec[key], f"{name}: policy_class", algo_class)
        elif key in _DECODERS and key in spec:
            replacements[key] = _DECODERS[key](spec[key], f"{name}: {key}")
        else:
            refused.append(key)
    if refused:
        raise UnsafeModelFile(
            f"{name} holds pickled entries {refused} that this library did not write in a safe "
            f"form (a file from plain SB3, an older sklearn-ml3, a custom policy or schedule, "
            f"or a crafted file); {_TRUST_HINT}, or give them as custom_objects")
    return {**replacements, **given}
