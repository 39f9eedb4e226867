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
