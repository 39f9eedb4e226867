"""A corpus of crafted LearnedLoss files, generated here: each is refused with a ValueError.

Every crafted file is refused before anything larger than the file is
allocated, with a message naming the file and the field at fault.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sklearn_ml3 import LearnedLoss
from sklearn_ml3._artifact import HISTORY_KEY, tensors_checksum
from sklearn_ml3.cli import main
from sklearn_ml3.tasks import SineTasks, SupervisedProblem


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    problem = SupervisedProblem(SineTasks(n_points=10),
                                lambda n_in, n_out: torch.nn.Linear(n_in, n_out))
    loss = LearnedLoss(hidden_layer_sizes=(6,), random_state=0)
    loss.meta_fit(problem, n_meta_iter=3, inner_lr=0.01, verbose=0)
    return loss.save(tmp_path_factory.mktemp("good") / "good.ml3")


def read_parts(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def edit_json(field, **changes):
    """Update entries of a JSON metadata field (``config`` or ``meta_info``)."""
    def edit(meta, tensors):
        meta[field] = json.dumps({**json.loads(meta[field]), **changes})
    return edit


def edit_config(**changes):
    return edit_json("config", **changes)


def edit_meta_info(**changes):
    return edit_json("meta_info", **changes)


def set_field(field, value):
    def edit(meta, tensors):
        meta[field] = value
    return edit


def drop_field(field):
    def edit(meta, tensors):
        del meta[field]
    return edit


def change_tensors(change, rehash=True):
    """Change the tensors; ``rehash`` writes a matching checksum (a forger's best effort)."""
    def edit(meta, tensors):
        change(tensors)
        if rehash:
            meta["checksum"] = tensors_checksum(tensors)
    return edit


def first_weight(tensors):
    return next(k for k in tensors if k != HISTORY_KEY)


CORPUS = {
    # metadata that parses but has the wrong type
    "config empty object": (set_field("config", "{}"), "field 'config': missing keys"),
    "config a list": (set_field("config", "[]"), "field 'config': must be a JSON object"),
    "config not JSON": (set_field("config", "{kind"), "field 'config': is not valid JSON"),
    "meta_info null": (set_field("meta_info", "null"), "field 'meta_info': must be a JSON"),
    "meta_info a list": (set_field("meta_info", "[]"), "field 'meta_info': must be a JSON"),
    "dtype unknown": (set_field("dtype", "nonexistent"), "field 'dtype': must be one of"),
    "dtype a torch attribute": (set_field("dtype", "load"), "field 'dtype'"),
    "format_version text": (set_field("format_version", "abc"), "field 'format_version'"),
    "format_version negative": (set_field("format_version", "-1"), "field 'format_version'"),
    "format_version newer": (set_field("format_version", "99"), "upgrade the library"),
    "unknown metadata key": (set_field("loader", "os.system"), "field 'metadata': unknown"),
    # config values
    "kind bogus": (edit_config(kind="bogus"), "field 'config.kind'"),
    "hidden negative": (edit_config(hidden_layer_sizes=[-5]), "config.hidden_layer_sizes"),
    "hidden zero": (edit_config(hidden_layer_sizes=[0]), "config.hidden_layer_sizes"),
    "hidden float": (edit_config(hidden_layer_sizes=[1e6, 1e6]), "config.hidden_layer_sizes"),
    "hidden bool": (edit_config(hidden_layer_sizes=[True]), "config.hidden_layer_sizes"),
    "hidden a number": (edit_config(hidden_layer_sizes=6), "config.hidden_layer_sizes"),
    "hidden huge": (edit_config(hidden_layer_sizes=[20000]),
                    r"field 'tensors\.[^']+': shape \(6, 2\) where the config implies"),
    "hidden huge, deeper": (edit_config(hidden_layer_sizes=[20000, 20000]),
                            "field 'tensors': names"),
    "activation a name": (edit_config(activation="os.system"), "field 'config.activation'"),
    "output bogus": (edit_config(output="bogus"), "field 'config.output'"),
    "bias a string": (edit_config(bias="yes"), "field 'config.bias'"),
    "learned_lr a string": (edit_config(learned_lr="true"), "field 'config.learned_lr'"),
    "n_inputs on regression": (edit_config(n_inputs=3), "field 'config.n_inputs'"),
    "n_extra_inputs negative": (edit_config(n_extra_inputs=-1), "config.n_extra_inputs"),
    "features without n_inputs": (edit_config(kind="features"), "field 'config.n_inputs'"),
    "structure without state columns": (
        edit_config(kind="features", n_inputs=2, structure={"action_columns": [1]}),
        "field 'config.structure'"),
    "structure columns overlap": (
        edit_config(kind="features", n_inputs=2,
                    structure={"action_columns": [0], "state_columns": [0]}),
        "field 'config.structure'"),
    "structure column out of range": (
        edit_config(kind="features", n_inputs=2,
                    structure={"action_columns": [2], "state_columns": [0]}),
        "field 'config.structure'"),
    "feedback structure, error overlaps the action": (
        edit_config(kind="features", n_inputs=3, structure={
            "action_columns": [2], "error_columns": [2], "state_columns": [0]}),
        "field 'config.structure'"),
    "feedback structure, empty error": (
        edit_config(kind="features", n_inputs=3, structure={
            "action_columns": [2], "error_columns": [], "state_columns": [0]}),
        "field 'config.structure'"),
    "unknown config key": (edit_config(meta_history_=[1.0, 2.0]),
                           r"field 'config': unknown keys \['meta_history_'\]"),
    # meta_info the library reads
    "inner_lr text": (edit_meta_info(inner_lr="fast"), "field 'meta_info.inner_lr'"),
    "inner_lr negative": (edit_meta_info(inner_lr=-1.0), "field 'meta_info.inner_lr'"),
    "inner_lr NaN": (edit_meta_info(inner_lr=float("nan")), "field 'meta_info.inner_lr'"),
    "inner_steps zero": (edit_meta_info(inner_steps=0), "field 'meta_info.inner_steps'"),
    "problem a string": (edit_meta_info(problem="x"), "field 'meta_info.problem'"),
    "iterations contradict history": (edit_meta_info(n_meta_iter_done=1000),
                                      "field 'meta_info.n_meta_iter_done'"),
    "input_kind contradicts kind": (edit_meta_info(input_kind="classification"),
                                    "field 'meta_info.input_kind'"),
    # checksum and tensors
    "checksum wrong": (set_field("checksum", "sha256:00"), "field 'checksum': does not match"),
    "checksum missing": (drop_field("checksum"), "field 'checksum': missing"),
    "weights changed": (change_tensors(lambda t: t[first_weight(t)].add_(1), rehash=False),
                        "field 'checksum': does not match"),
    "weights NaN, rehashed": (change_tensors(lambda t: t[first_weight(t)].fill_(float("nan"))),
                              "holds NaN or infinite"),
    "extra tensor": (change_tensors(lambda t: t.update(extra=torch.zeros(2))),
                     "field 'tensors': names"),
    "missing tensor": (change_tensors(lambda t: t.pop(first_weight(t))), "field 'tensors'"),
    "history empty": (change_tensors(lambda t: t.update({HISTORY_KEY: torch.zeros(0).double()})),
                      "must be a non-empty vector"),
    "history float32": (change_tensors(lambda t: t.update({HISTORY_KEY: t[HISTORY_KEY].float()})),
                        "dtype F32 where F64"),
    "weights float64, metadata float32": (
        change_tensors(lambda t: t.update({k: v.double() for k, v in t.items()})),
        "dtype F64 where F32"),
}


def write_crafted(good, path, edit):
    meta, tensors = read_parts(good)
    edit(meta, tensors)
    save_file(tensors, str(path), metadata=meta)
    return path


def flip_data_byte(good, path):
    raw = bytearray(good.read_bytes())
    raw[-3] ^= 0x40  # in the last tensor's bytes
    path.write_bytes(bytes(raw))
    return path


def relabel_header(good, path, old=b'"F32"', new=b'"I32"'):
    """Same bytes, another dtype in the header (same length, so offsets stay valid)."""
    raw = good.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + header_len]
    assert old in header
    path.write_bytes(raw[:8] + header.replace(old, new) + raw[8 + header_len:])
    return path


@pytest.fixture
def allocation_spy(monkeypatch):
    """Largest real (not ``meta``) loss network built while loading, in bytes.

    Tensors read from the file are bounded by its size; a network built from a
    crafted config is what could be larger.
    """
    largest = [0]
    build = LearnedLoss._build_network

    def spy(self, generator):
        network = build(self, generator)
        largest[0] = max(largest[0], sum(p.numel() * p.element_size()
                                         for p in network.parameters() if not p.is_meta))
        return network

    monkeypatch.setattr(LearnedLoss, "_build_network", spy)
    return largest


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_crafted_metadata_is_refused(good_file, tmp_path, allocation_spy, case):
    edit, message = CORPUS[case]
    path = write_crafted(good_file, tmp_path / "crafted.ml3", edit)
    with pytest.raises(ValueError, match=message) as info:
        LearnedLoss.load(path)
    assert str(path) in str(info.value)
    assert allocation_spy[0] <= path.stat().st_size


@pytest.mark.parametrize("craft, message", [
    (flip_data_byte, "field 'checksum': does not match"),
    (relabel_header, "dtype I32 where F32"),
])
def test_damaged_bytes_are_refused(good_file, tmp_path, craft, message):
    path = craft(good_file, tmp_path / "damaged.ml3")
    with pytest.raises(ValueError, match=message):
        LearnedLoss.load(path)


def test_files_without_checksum_still_load(good_file, tmp_path):
    """Format version 1 (before the checksum): loads, still checked for shape and NaN."""
    def as_version_1(meta, tensors):
        meta["format_version"] = "1"
        del meta["checksum"]

    old = LearnedLoss.load(write_crafted(good_file, tmp_path / "v1.ml3", as_version_1))
    new = LearnedLoss.load(good_file)
    y_pred, y = torch.randn(20), torch.randn(20)
    assert old(y_pred, y).item() == new(y_pred, y).item()
    np.testing.assert_array_equal(old.meta_history_, new.meta_history_)

    def nan_version_1(meta, tensors):
        as_version_1(meta, tensors)
        tensors[first_weight(tensors)][0, 0] = float("nan")

    with pytest.raises(ValueError, match="holds NaN"):
        LearnedLoss.load(write_crafted(good_file, tmp_path / "v1nan.ml3", nan_version_1))


def test_float64_loss_reloads_as_float64(tmp_path):
    loss = LearnedLoss(hidden_layer_sizes=(5,), random_state=0).to(torch.float64)
    loaded = LearnedLoss.load(loss.save(tmp_path / "f64.ml3"))
    assert loaded.dtype == torch.float64
    for a, b in zip(loss.parameters(), loaded.parameters(), strict=True):
        assert a.dtype == b.dtype == torch.float64 and torch.equal(a, b)


def test_unknown_config_key_never_marks_a_loss_trained(tmp_path):
    """A crafted ``meta_history_`` key would make a random loss look meta-trained."""
    untrained = LearnedLoss(hidden_layer_sizes=(5,), random_state=0).save(tmp_path / "u.ml3")
    path = write_crafted(untrained, tmp_path / "forged.ml3", edit_config(meta_history_=[0.1]))
    with pytest.raises(ValueError, match="unknown keys"):
        LearnedLoss.load(path)
    assert not LearnedLoss.load(untrained).is_meta_trained


def test_cli_info_reports_crafted_file_cleanly(good_file, tmp_path, capsys):
    path = write_crafted(good_file, tmp_path / "crafted.ml3", set_field("config", "[]"))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ml3 info: error:") and "field 'config'" in err
    assert "Traceback" not in err
