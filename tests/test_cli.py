"""The ml3 command line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import sklearn_ml3
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
    captured = capsys.readouterr()
    assert "learned loss" in captured.out and "evaluate" in captured.err  # a progress bar
    for baseline in ("MSE, same lr", "MSE, tuned lr", "MSE, standardised targets, tuned lr"):
        assert baseline in captured.out


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


@pytest.mark.slow
def test_meta_train_killed_resumes_to_the_uninterrupted_weights(tmp_path, capsys):
    """SIGKILL ``ml3 meta-train --checkpoint`` mid-run; the rerun ends where one run would."""
    n_iter = "240"  # checkpoints at iterations 60, 120, 180 (every 50, at optimizee resets)
    reference = tmp_path / "reference.ml3"
    assert main(["meta-train", "sine", "--out", str(reference), "--n-meta-iter", n_iter]) == 0

    out, ckpt = tmp_path / "run.ml3", tmp_path / "run.ckpt"
    command = ["meta-train", "sine", "--out", str(out), "--n-meta-iter", n_iter,
               "--checkpoint", str(ckpt)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "sklearn_ml3.cli", *command], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    assert not out.exists()
    assert torch.load(ckpt, weights_only=True)["iteration"] < int(n_iter)

    assert main(command) == 0  # resumes from the checkpoint (the dead run's lock is gone)
    resumed, uninterrupted = LearnedLoss.load(out), LearnedLoss.load(reference)
    np.testing.assert_array_equal(resumed.meta_history_, uninterrupted.meta_history_)
    for (name, a), b in zip(resumed.network_.state_dict().items(),
                            uninterrupted.network_.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def write_csv(path, X, y, target="target"):
    columns = [f"x{j}" for j in range(X.shape[1])]
    lines = [",".join([*columns, target])]
    lines += [",".join([*(f"{v:.5f}" for v in row), str(label)])
              for row, label in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def csv_tasks(tmp_path):
    rng = np.random.default_rng(0)
    regression, classification = [], []
    for i in range(3):
        X = rng.standard_normal((60, 3))
        w = rng.standard_normal(3)
        regression.append(write_csv(tmp_path / f"reg{i}.csv", X, 100 + 20 * X @ w))
        labels = np.where(X @ w > 0, "spam", "ham")
        classification.append(write_csv(tmp_path / f"clf{i}.csv", X, labels, "label"))
    return regression, classification


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ml3 {sklearn_ml3.__version__}"


def test_meta_train_and_evaluate_on_csv_files(tmp_path, csv_tasks, capsys):
    regression, classification = csv_tasks
    out = tmp_path / "reg.ml3"
    assert main(["meta-train", "--csv", *map(str, regression[:2]), "--target", "target",
                 "--out", str(out), "--n-meta-iter", "6", "--inner-steps", "3",
                 "--inner-lr", "0.01", "--tasks-per-iter", "2", "--hidden", "8",
                 "--loss-hidden", "6", "6"]) == 0
    assert "2 regression task(s)" in capsys.readouterr().out  # inferred from the target
    loss = LearnedLoss.load(out)
    info = loss.meta_info_
    assert (info["n_meta_iter"], info["inner_steps"], info["tasks_per_iter"]) == (6, 3, 2)
    assert info["inner_lr"] == 0.01 and loss.hidden_layer_sizes == (6, 6)
    assert info["problem"]["target_scaling"] == "standard"
    assert info["csv"] == {"files": ["reg0.csv", "reg1.csv"], "target": "target",
                           "optimizee_hidden_layer_sizes": [8]}

    assert main(["evaluate", str(out), "--csv", str(regression[2]), "--target", "target",
                 "--seeds", "2", "--max-iter", "5"]) == 0
    captured = capsys.readouterr()
    assert "evaluate" in captured.err  # the progress bar
    rows = [line for line in captured.out.splitlines() if line.startswith("reg2.csv")]
    assert "learned loss" in rows[0]
    assert any("squared_error, same lr" in r for r in rows)
    assert any("squared_error, tuned lr (validation)" in r for r in rows)

    out = tmp_path / "clf.ml3"
    assert main(["meta-train", "--csv", *map(str, classification), "--target", "label",
                 "--out", str(out), "--n-meta-iter", "3", "--hidden", "8"]) == 0
    assert "classes ['ham', 'spam']" in capsys.readouterr().out
    assert LearnedLoss.load(out).kind == "classification"


def test_evaluation_tunes_on_a_validation_split_never_on_the_test_split(csv_tasks, monkeypatch):
    from sklearn_ml3 import cli

    regression, _ = csv_tasks
    X, y = cli.read_csv_table(regression[0], "target")
    seen = []
    original = cli.split_task

    def recording_split(X_, y_, fraction, seed, kind):
        parts = original(X_, y_, fraction, seed, kind)
        seen.append((len(X_), fraction, len(parts[0]), len(parts[2])))
        return parts

    monkeypatch.setattr(cli, "split_task", recording_split)
    from sklearn_ml3 import meta

    tuned_sizes = []
    real_tune = meta.tune_lr

    def recording_tune(score, lr_grid, **kwargs):
        return real_tune(lambda lr_: (tuned_sizes.append(len(seen)), score(lr_))[1], lr_grid,
                         **kwargs)

    monkeypatch.setattr(meta, "tune_lr", recording_tune)
    loss = LearnedLoss(hidden_layer_sizes=(4,), random_state=0)
    rows = cli.evaluate_on_tables(loss, [(X, y)], [regression[0]], "regression", seeds=[0],
                                  max_iter=2, test_fraction=0.3, hidden=[4])
    # the test split (18 of 60) is cut first; tuning sees only the 42 training rows, split 31/11
    assert seen[0] == (60, 0.3, 42, 18) and seen[1] == (42, 0.25, 31, 11)
    assert tuned_sizes and {row["method"] for row in rows} == {
        "learned loss", "squared_error, same lr", "squared_error, tuned lr (validation)"}


def test_inputs_and_output_are_checked_before_training(tmp_path, csv_tasks, capsys, monkeypatch):
    regression, _ = csv_tasks

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(LearnedLoss, "meta_fit", no_training)
    base = ["meta-train", "--csv", str(regression[0]), "--target", "target"]
    cases = [
        (["--out", str(tmp_path / "missing" / "x.ml3")], "does not exist"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(regression[1])], "pass --force"),
        (["--out", str(tmp_path / "x.ml3"), "--hidden", "0"], "hidden_layer_sizes"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert regression[1].read_text().startswith("x0,")  # the existing file is untouched

    bad = write_csv(tmp_path / "bad.csv", np.zeros((5, 1)), ["a"] * 5)
    bad.write_text(bad.read_text().replace("0.00000,a", "oops,a", 1))
    for csv_file, target, message in [
        (tmp_path / "none.csv", "target", "no CSV file"),
        (regression[0], "price", "no column 'price'"),
        (bad, "target", "column 'x0' is not a number"),
    ]:
        assert main(["meta-train", "--csv", str(csv_file), "--target", target,
                     "--out", str(tmp_path / "y.ml3")]) == 2
        assert message in capsys.readouterr().err
    assert main(["meta-train", "--csv", str(bad), "--target", "target", "--kind", "regression",
                 "--out", str(tmp_path / "y.ml3")]) == 2
    assert main(["meta-train", "--out", str(tmp_path / "y.ml3")]) == 2
    assert "either a named task" in capsys.readouterr().err
