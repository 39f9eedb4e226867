"""The ml3 command line."""

import json

import pytest

from sklearn_ml3 import LearnedLoss
from sklearn_ml3.cli import main


def test_meta_train_info_and_evaluate(tmp_path, capsys):
    out = tmp_path / "sine.ml3"
    assert main(["meta-train", "sine", "--out", str(out), "--n-meta-iter", "5"]) == 0
    loss = LearnedLoss.load(out)
    assert loss.meta_info_["n_meta_iter"] == 5
    assert loss.meta_info_["problem"]["target_scaling"] == "standard"

    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    info = json.loads(printed[printed.index("{"):])
    assert info["meta_info"]["inner_lr"] == 0.001
    assert info["config"]["kind"] == "regression"

    assert main(["evaluate", str(out), "--tasks", "2"]) == 0
    table = capsys.readouterr().out
    assert "learned loss" in table and "MSE, lr 0.01" in table


def test_demo_writes_its_report(tmp_path, capsys):
    out = tmp_path / "sine"
    assert main(["demo", "--n-meta-iter", "5", "--tasks", "2", "--out", str(out)]) == 0
    assert {"results.json", "curves.png", "landscape.png", "report.md"} <= {
        p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert results["n_test_tasks"] == 2
    assert set(results["test_mse"]["learned"]) == {"k=0", "k=10", "k=50", "k=100"}
    assert "learned loss, lr 0.001" in capsys.readouterr().out


def test_bad_files_and_tasks_get_clear_errors(tmp_path, capsys):
    junk = tmp_path / "junk.ml3"
    junk.write_text("hello")
    assert main(["info", str(junk)]) == 2
    assert "not a readable LearnedLoss file" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.ml3")]) == 2
    assert "no LearnedLoss file" in capsys.readouterr().err

    clf = LearnedLoss(kind="classification", random_state=0).save(tmp_path / "clf.ml3")
    assert main(["evaluate", str(clf)]) == 2
    assert "kind='classification'" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["meta-train", "tetris", "--out", str(tmp_path / "x.ml3")])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
