"""The shipped loss zoo: every entry loads, is verified, and its card matches its file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sklearn_ml3 import LearnedLoss, MetaLossClassifier, MetaLossRegressor, zoo
from sklearn_ml3.cli import main as ml3

#: What the zoo promises to ship (docs/zoo.md).
REQUIRED = {"sine", "digits-binary", "digits-multiclass", "tabular-regression",
            "pointmass-model-based", "reacher-model-based"}
ENTRIES = zoo.list()


def test_the_promised_entries_are_shipped():
    assert REQUIRED <= set(ENTRIES)


def test_package_data_stays_small():
    total = sum(p.stat().st_size for p in zoo.path(ENTRIES[0]).parent.iterdir())
    assert total < 5 * 2**20


@pytest.mark.parametrize("name", ENTRIES)
def test_card_matches_its_loss(name):
    card, loss = zoo.card(name), zoo.load(name)
    assert isinstance(loss, LearnedLoss) and loss.is_meta_trained
    assert card.name == name and card.kind == loss.kind
    assert card.sha256 == zoo.sha256_of(zoo.path(name))
    assert card.meta_training["n_meta_iter"] == len(loss.meta_history_)
    assert card.meta_training["optimizer"] == loss.meta_info_.get("inner_optimizer")
    assert card.meta_training["lr"] == loss.meta_info_.get("inner_lr")
    assert card.command == f"python benchmarks/zoo.py --build {name}"
    assert {"torch", "sklearn_ml3"} <= set(card.versions)
    result = card.result
    for method in ("learned", "same_lr", "best_lr"):
        per_seed = result[method]["per_seed"]
        assert len(per_seed) >= 5, "a card's result is measured on at least 5 seeds"
        assert result[method]["mean"] == pytest.approx(np.nanmean(per_seed))
    assert len(result["tuned_lr_per_seed"]) == len(result["learned"]["per_seed"])
    for record in result["baselines"]:  # the baseline rule: tuned on validation tasks
        assert "validation" in record["selected_on"]
        assert record["best_lr"] in [float(v) for v in record["scores"]]


@pytest.mark.parametrize("name", ENTRIES)
def test_card_verdict_follows_its_numbers(name):
    card = zoo.card(name)
    tuned = card.wins["best_lr"]
    assert tuned in ("better", "tie", "worse")
    assert card.verdict.startswith("beats the hand-written loss at its tuned lr") is \
        (tuned == "better")
    words = {"better": "better than", "tie": "tied with", "worse": "worse than"}
    assert f"{words[tuned]} the hand-written loss at its tuned lr" in card.notes
    assert name in card.one_line() and card.verdict in card.to_markdown()


def test_comparison_pairs_seeds_and_counts_divergence_as_worst():
    def result(learned, other, lower=True):
        return {"lower_is_better": lower, "learned": {"per_seed": learned},
                "best_lr": {"per_seed": other}}

    assert zoo.compare(result([1.0, 2, 3, 4, 5], [1.1, 2.1, 3.1, 4.1, 5.1]), "best_lr") == \
        "better"  # a small but consistent paired gain
    assert zoo.compare(result([1.0, 2, 3, 4, 5], [1.5, 1.5, 3.5, 3.5, 5]), "best_lr") == "tie"
    assert zoo.compare(result([0.9, 0.8, 0.9], [0.95, 0.85, 0.97], lower=False), "best_lr") \
        == "worse"
    assert zoo.compare(result([1.0, 1, 1], [1.0, float("inf"), 1]), "best_lr") == "better"
    assert zoo.compare(result([1.0, 1, 1], [1.0, 1, 1]), "same_lr") is None
    with pytest.raises(ValueError, match="equal-length"):  # runs must pair up
        zoo.compare(result([1.0, 2.0], [1.0, 2.0, 3.0]), "best_lr")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # short fits
def test_regression_entries_train_estimators():
    rng = np.random.default_rng(0)
    X = rng.uniform(-5, 5, size=(100, 1))
    y = 2.0 * np.sin(X[:, 0] + 1.0)
    reg = MetaLossRegressor(loss=zoo.load("sine"), hidden_layer_sizes=(100, 10), max_iter=100,
                            random_state=0).fit(X, y)
    untrained = MetaLossRegressor(loss=zoo.load("sine"), hidden_layer_sizes=(100, 10),
                                  max_iter=1, random_state=0).fit(X, y)
    assert reg.score(X, y) > untrained.score(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_classification_entry_trains_an_estimator():
    from sklearn.datasets import load_digits

    X, y = load_digits(n_class=2, return_X_y=True)
    clf = MetaLossClassifier(loss=zoo.load("digits-binary"), hidden_layer_sizes=(100,),
                             max_iter=20, random_state=0).fit(X / 16, y)
    assert clf.score(X / 16, y) > 0.9


def test_unknown_entry_names_the_entries():
    with pytest.raises(KeyError, match="sine"):
        zoo.load("no-such-loss")


@pytest.fixture
def copied_zoo(tmp_path, monkeypatch):
    """The zoo's data copied to a temporary folder that the zoo reads instead."""
    data = tmp_path / "data"
    shutil.copytree(zoo.path("sine").parent, data)
    monkeypatch.setattr(zoo, "_data_dir", lambda: data)
    return data


def test_an_altered_loss_file_is_refused(copied_zoo):
    blob = bytearray((copied_zoo / "sine.ml3").read_bytes())
    blob[-1] ^= 0x01
    (copied_zoo / "sine.ml3").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        zoo.load("sine")


def test_a_broken_card_is_refused(copied_zoo):
    card = json.loads((copied_zoo / "sine.json").read_text())
    del card["result"]["learned"]
    (copied_zoo / "sine.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="learned"):
        zoo.card("sine")
    (copied_zoo / "sine.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        zoo.card("sine")
    card["surprise"] = 1
    (copied_zoo / "sine.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="unknown fields"):
        zoo.card("sine")
    (copied_zoo / "sine.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="a JSON object"):
        zoo.card("sine")


def test_a_card_filed_under_another_name_is_refused(copied_zoo):
    shutil.copy(copied_zoo / "sine.json", copied_zoo / "impostor.json")
    with pytest.raises(ValueError, match="card names 'sine', not 'impostor'"):
        zoo.load("impostor")


def test_ml3_zoo_lists_entries_and_shows_cards(capsys):
    assert ml3(["zoo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ENTRIES
    assert ml3(["zoo", "sine"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# sine") and "python benchmarks/zoo.py --build sine" in out
    assert ml3(["zoo", "no-such-loss"]) == 2
    assert "no zoo entry" in capsys.readouterr().err


def test_zoo_page_examples_run():
    import doctest
    from pathlib import Path

    page = Path(__file__).parents[1] / "docs" / "zoo.md"
    result = doctest.testfile(str(page), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
