"""The LearnedLoss file format: safetensors tensors + JSON metadata, validated before use.

A file is read in three stages so that nothing is allocated or applied
before it is known to be consistent: (1) the metadata is checked against a
schema (allowed keys, types, ranges); (2) the tensors' names, shapes and
dtypes, read from the safetensors header, are compared with those the
config implies (computed on torch's ``meta`` device, which allocates
nothing); (3) the tensors are read and their checksum (over names, dtypes,
shapes and bytes) and finiteness are verified. Every failure is a
``ValueError`` naming the file and the field.

Format version 1 (files written before the checksum existed) has no
``checksum`` field; those files pass stages 1-3 except the checksum.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .networks import ACTIVATIONS, OUTPUTS

FORMAT_NAME = "sklearn-ml3.learned-loss"
FORMAT_VERSION = 2
#: The first format version whose files carry a checksum.
CHECKSUM_SINCE = 2
HISTORY_KEY = "__meta_history__"
INPUT_KINDS = ("regression", "classification", "features")
METADATA_FIELDS = ("format", "format_version", "config", "meta_info", "dtype", "checksum")
#: Constructor arguments stored in ``config``; ``learned_lr`` is absent from older files.
CONFIG_FIELDS = ("kind", "hidden_layer_sizes", "activation", "bias", "output", "n_inputs",
                 "n_extra_inputs", "learned_lr", "structure")
#: The key sets a loss ``structure`` may have: a score-weighted loss, a quadratic
#: (controller) loss, a score-weighted loss with a quadratic weight, or a
#: feedback loss (a learned gain on error columns).
STRUCTURE_KEYS = ({"score_column"}, {"action_columns", "state_columns"},
                  {"score_column", "action_columns", "state_columns"},
                  {"action_columns", "error_columns", "state_columns"})
# files written before these options existed
_CONFIG_DEFAULTS = {"learned_lr": False, "structure": None}
_DTYPES = {"float32": ("F32", torch.float32), "float64": ("F64", torch.float64),
           "float16": ("F16", torch.float16), "bfloat16": ("BF16", torch.bfloat16)}
# meta_info is free-form JSON; the keys the library reads must have these types
_META_INFO_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{k: ("a positive integer", lambda v: _is_int(v) and v >= 1) for k in (
        "inner_steps", "unroll", "tasks_per_iter", "n_meta_iter", "n_meta_iter_done")},
    **{k: ("a finite positive number", lambda v: _is_number(v) and v > 0)
       for k in ("inner_lr", "meta_lr")},
    "grad_clip": ("null or a finite positive number",
                  lambda v: v is None or (_is_number(v) and v > 0)),
    "inner_optimizer": ("a string", lambda v: isinstance(v, str)),
    "vectorized": ("a boolean", lambda v: isinstance(v, bool)),
    **{k: ("a JSON object", lambda v: isinstance(v, dict)) for k in (
        "problem", "policy", "dynamics", "versions", "meta_train_time_s")},
}


POLICY_PARADIGMS = ("model_free", "model_based", "shaping")
_POSITIVE = ("null or a positive integer", lambda v: v is None or _is_int(v) and v >= 1, False)
_STRING = ("null or a string", lambda v: v is None or isinstance(v, str), False)
#: ``meta_info["policy"]``: what a policy loss was meta-trained with (the typed view is
#: ``rl.meta.info.PolicyLossInfo``). Field -> (description, check, required).
POLICY_INFO_FIELDS: dict[str, tuple[str, Callable[[Any], bool], bool]] = {
    "env_id": ("a string", lambda v: isinstance(v, str), True),
    "paradigm": (f"one of {POLICY_PARADIGMS}", lambda v: v in POLICY_PARADIGMS, True),
    "hidden_sizes": ("a list of positive integers",
                     lambda v: _is_list(v, lambda h: _is_int(h) and h >= 1), True),
    "features": _STRING,
    "horizon": _POSITIVE,
    "obs_dim": _POSITIVE,
    "act_dim": _POSITIVE,
    "goal_dim": ("null or a non-negative integer", lambda v: v is None or _is_int(v) and v >= 0,
                 False),
    "inputs": ("null or a list of strings",
               lambda v: v is None or _is_list(v, lambda x: isinstance(x, str)), False),
    "loss_structure": _STRING,
    "simulator": _STRING,
    "log_std_init": ("null or a finite number", lambda v: v is None or _is_number(v), False),
    "rollout_steps": _POSITIVE,
    "batch_size": _POSITIVE,
    "n_epochs": _POSITIVE,
    "rollouts_per_policy": _POSITIVE,
    "input_shift": ("null or a list of finite numbers",
                    lambda v: v is None or _is_list(v, _is_number), False),
    "input_scale": ("null or a list of finite positive numbers",
                    lambda v: v is None or _is_list(v, lambda x: _is_number(x) and x > 0), False),
}
#: Spellings written by earlier versions (model-based losses) -> the field they mean.
POLICY_INFO_ALIASES = {"hidden_layer_sizes": "hidden_sizes", "feature_set": "features"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_list(value, ok: Callable[[Any], bool]) -> bool:
    return isinstance(value, (list, tuple)) and all(ok(v) for v in value)


def _error(source, field: str, why: str) -> ValueError:
    return ValueError(f"{source}: field {field!r}: {why}")


def check_config(config, source="LearnedLoss config") -> dict[str, Any]:
    """The validated constructor config (``hidden_layer_sizes`` as a tuple).

    Raises
    ------
    ValueError
        Naming ``source`` and the field, for unknown or missing keys, wrong
        types, or values the constructor would refuse.
    """
    if not isinstance(config, dict):
        raise _error(source, "config", f"must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise _error(source, "config", f"unknown keys {unknown}; allowed: {list(CONFIG_FIELDS)}")
    config = {**_CONFIG_DEFAULTS, **config}
    missing = [k for k in CONFIG_FIELDS if k not in config]
    if missing:
        raise _error(source, "config", f"missing keys {missing}")

    def need(key, ok: bool, what: str):
        if not ok:
            raise _error(source, f"config.{key}", f"must be {what}, got {config[key]!r}")

    need("kind", config["kind"] in INPUT_KINDS, f"one of {INPUT_KINDS}")
    hidden = config["hidden_layer_sizes"]
    need("hidden_layer_sizes", isinstance(hidden, (list, tuple))
         and all(_is_int(h) and h >= 1 for h in hidden), "a list of positive integers")
    need("activation", config["activation"] in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")
    need("output", config["output"] in OUTPUTS, f"one of {sorted(OUTPUTS)}")
    for key in ("bias", "learned_lr"):
        need(key, isinstance(config[key], bool), "a boolean")
    features = config["kind"] == "features"
    need("n_inputs", (_is_int(config["n_inputs"]) and config["n_inputs"] >= 1) if features
         else config["n_inputs"] is None,
         "a positive integer for kind='features'" if features else "null unless kind='features'")
    need("n_extra_inputs", _is_int(config["n_extra_inputs"]) and config["n_extra_inputs"] >= 0
         and (config["kind"] == "regression" or config["n_extra_inputs"] == 0),
         "a non-negative integer (non-zero only for kind='regression')")
    need("structure", _valid_structure(config["structure"], config["n_inputs"]),
         "null, or for kind='features' an object with an integer 'score_column', with "
         "both 'action_columns' and 'state_columns', with those two and 'score_column' or "
         "'error_columns' (distinct column indices below n_inputs)")
    return {**config, "hidden_layer_sizes": tuple(hidden)}


def _valid_structure(structure, n_inputs) -> bool:
    if structure is None:
        return True
    if not isinstance(structure, dict) or not _is_int(n_inputs):
        return False
    keys = set(structure)
    if keys not in STRUCTURE_KEYS:
        return False
    columns = [structure["score_column"]] if "score_column" in keys else []
    for key in ("action_columns", "error_columns", "state_columns"):
        value = structure.get(key, [])
        if not isinstance(value, list) or (key in structure and not value):
            return False
        columns += value
    return (all(_is_int(c) and 0 <= c < n_inputs for c in columns)
            and len(set(columns)) == len(columns))


def check_meta_info(meta_info, kind: str, source) -> dict[str, Any]:
    """Validate the types of the ``meta_info`` entries the library reads."""
    if not isinstance(meta_info, dict):
        raise _error(source, "meta_info",
                     f"must be a JSON object, got {type(meta_info).__name__}")
    for key, (what, ok) in _META_INFO_TYPES.items():
        if key in meta_info and not ok(meta_info[key]):
            raise _error(source, f"meta_info.{key}", f"must be {what}, got {meta_info[key]!r}")
    if meta_info.get("input_kind", kind) != kind:
        raise _error(source, "meta_info.input_kind",
                     f"{meta_info['input_kind']!r} contradicts config.kind {kind!r}")
    if "policy" in meta_info:
        check_policy_info(meta_info["policy"], source, "meta_info.policy")
    return meta_info


def check_policy_info(policy, source="policy info", field: str = "") -> dict[str, Any]:
    """The validated ``meta_info["policy"]`` of a policy loss, in today's spelling.

    Parameters
    ----------
    policy : dict
        As written by ``rl.meta_train_policy_loss`` or
        ``rl.meta.meta_train_model_based_loss`` (any version).
    source : str
        Named first in errors (a file, or what is being read).
    field : str, default=""
        The dotted name of ``policy`` in errors (``"meta_info.policy"`` in a
        file); errors name ``field.key``, or ``key`` alone by default.

    Returns
    -------
    dict
        Every field of :data:`POLICY_INFO_FIELDS` (``None`` for the optional
        ones that are absent). Earlier spellings are translated
        (:data:`POLICY_INFO_ALIASES`); a dict without ``paradigm`` is from an
        earlier version: ``"model_based"`` when it uses those spellings, else
        ``"model_free"``. The first model-based losses recorded a description
        of their inputs under ``features`` (not a feature set); it is dropped.

    Raises
    ------
    ValueError
        Naming ``source`` and the field, for unknown or missing keys, a field
        given under both spellings, or a value of the wrong type.
    """
    def name(key):
        return f"{field}.{key}" if field else key

    if not isinstance(policy, dict):
        raise _error(source, field or "policy",
                     f"must be a JSON object, got {type(policy).__name__}")
    unknown = sorted(set(policy) - set(POLICY_INFO_FIELDS) - set(POLICY_INFO_ALIASES))
    if unknown:
        raise _error(source, field or "policy",
                     f"unknown keys {unknown}; allowed: {list(POLICY_INFO_FIELDS)}")
    policy = dict(policy)
    if "paradigm" not in policy:  # written by an earlier version
        policy["paradigm"] = ("model_based" if set(policy) & set(POLICY_INFO_ALIASES)
                              else "model_free")
        if "hidden_layer_sizes" in policy and "feature_set" not in policy:
            policy.pop("features", None)  # a description of the inputs, not a feature set
    for old, new in POLICY_INFO_ALIASES.items():
        if old in policy:
            if new in policy:
                raise _error(source, name(new), f"given twice (also as {old!r})")
            policy[new] = policy.pop(old)
    for key, (what, ok, required) in POLICY_INFO_FIELDS.items():
        if key not in policy:
            if required:
                raise _error(source, name(key), "missing")
            policy[key] = None
        elif not ok(policy[key]):
            raise _error(source, name(key), f"must be {what}, got {policy[key]!r}")
    return {key: policy[key] for key in POLICY_INFO_FIELDS}


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def artifact_metadata(config: dict, meta_info: dict, dtype: torch.dtype,
                      tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The safetensors metadata (str -> str) of a file holding ``tensors``."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "meta_info": json.dumps(meta_info),
        "dtype": str(dtype).removeprefix("torch."),
        "checksum": tensors_checksum(tensors),
    }


def _json_field(metadata, field, source, default=None):
    if field not in metadata:
        if default is not None:
            return default
        raise _error(source, field, "missing")
    try:
        return json.loads(metadata[field])
    except (TypeError, json.JSONDecodeError) as exc:
        raise _error(source, field, f"is not valid JSON ({exc})") from exc


def read_artifact(path: str | os.PathLike,
                  expected_shapes: Callable[[dict], dict[str, tuple[int, ...]]]):
    """Read and verify a LearnedLoss file.

    Parameters
    ----------
    path : path-like
    expected_shapes : callable
        ``expected_shapes(config) -> {name: shape}`` of the loss network's
        tensors for a validated config (must allocate nothing).

    Returns
    -------
    config, meta_info, tensors, dtype
        ``tensors`` holds the network's state dict and, for a meta-trained
        loss, the history under :data:`HISTORY_KEY`.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LearnedLoss file at {path}")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable LearnedLoss file (corrupt, truncated or "
                         f"another format): {exc}") from exc
    with handle as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is a safetensors file but not a sklearn-ml3 LearnedLoss "
                             f"(format tag {metadata.get('format')!r})")
        unknown = sorted(set(metadata) - set(METADATA_FIELDS))
        if unknown:
            raise _error(path, "metadata", f"unknown keys {unknown}")
        version = metadata.get("format_version", "1")
        if not version.isdigit() or int(version) < 1:
            raise _error(path, "format_version", f"must be a positive integer, got {version!r}")
        if int(version) > FORMAT_VERSION:
            raise _error(path, "format_version", f"{version} is newer than this sklearn-ml3 "
                         f"reads ({FORMAT_VERSION}); upgrade the library to read it")
        config = check_config(_json_field(metadata, "config", path), path)
        meta_info = check_meta_info(_json_field(metadata, "meta_info", path, {}),
                                    config["kind"], path)
        dtype_name = metadata.get("dtype", "float32")
        if dtype_name not in _DTYPES:
            raise _error(path, "dtype", f"must be one of {sorted(_DTYPES)}, got {dtype_name!r}")
        code, dtype = _DTYPES[dtype_name]
        checksum = metadata.get("checksum")
        if int(version) >= CHECKSUM_SINCE and checksum is None:
            raise _error(path, "checksum", f"missing (required from format version "
                         f"{CHECKSUM_SINCE})")

        # stage 2: the header must describe exactly the tensors the config implies
        expected = {name: (shape, code) for name, shape in expected_shapes(config).items()}
        names = set(f.keys())
        if HISTORY_KEY in names:
            expected[HISTORY_KEY] = (None, "F64")
        if names != set(expected):
            raise _error(path, "tensors", f"names {sorted(names)} do not match the config, "
                         f"which needs {sorted(expected)}")
        for name, (shape, tensor_code) in expected.items():
            header = f.get_slice(name)
            got_shape, got_code = tuple(header.get_shape()), header.get_dtype()
            if got_code != tensor_code:
                raise _error(path, f"tensors.{name}",
                             f"dtype {got_code} where {tensor_code} is expected")
            if shape is None:  # the history: any non-empty vector
                if len(got_shape) != 1 or got_shape[0] < 1:
                    raise _error(path, f"tensors.{name}",
                                 f"must be a non-empty vector, got shape {got_shape}")
            elif got_shape != tuple(shape):
                raise _error(path, f"tensors.{name}",
                             f"shape {got_shape} where the config implies {tuple(shape)}")
        tensors = {name: f.get_tensor(name) for name in expected}

    # stage 3: contents
    if checksum is not None and tensors_checksum(tensors) != checksum:
        raise _error(path, "checksum", "does not match the stored tensors (the file was "
                     "changed or damaged after it was written)")
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise _error(path, f"tensors.{name}", "holds NaN or infinite values")
    history = tensors.get(HISTORY_KEY)
    done = meta_info.get("n_meta_iter_done")
    if history is not None and done is not None and done != len(history):
        raise _error(path, "meta_info.n_meta_iter_done",
                     f"{done} contradicts the {len(history)} stored history entries")
    return config, meta_info, tensors, dtype
