"""benchmarks/summary.py: the README table is built from the benchmarks' headline rows."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "summary.py"


@pytest.fixture
def summary():
    spec = importlib.util.spec_from_file_location("summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stat(mean, std=0.1):
    return {"mean": mean, "std": std, "per_seed": [mean] * 5}


def test_rows_come_from_results_files_and_the_best_is_bold(summary, tmp_path):
    (tmp_path / "sine").mkdir()
    (tmp_path / "sine" / "results.json").write_text(json.dumps({
        "benchmark": "sine_regression", "headline": [{
            "experiment": "sine, test MSE", "lower_is_better": True, "learned": stat(1.2),
            "same_lr": stat(3.3), "best_lr": stat(0.96), "step_size_control": stat(1.23),
            "note": "raw targets: 1.4"}]}))
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "results.json").write_text(json.dumps({
        "benchmark": "digit_pairs", "headline": [{
            "experiment": "digits, accuracy", "lower_is_better": False, "learned": stat(0.98),
            "same_lr": stat(0.5), "best_lr": stat(0.97)}]}))
    (tmp_path / "no_headline").mkdir()
    (tmp_path / "no_headline" / "results.json").write_text(json.dumps({"benchmark": "x"}))
    lines = summary.main(["--results", str(tmp_path)]).splitlines()
    assert len(lines) == 4  # header, rule, two rows
    digits, sine = lines[2], lines[3]
    assert "**0.98 ± 0.1**" in digits and "`digit_pairs`" in digits
    assert "**0.96 ± 0.1**" in sine and "1.2 ± 0.1 |" in sine
    assert "| raw targets: 1.4 |" in sine and digits.count("|") == sine.count("|")


def test_no_results_is_a_clear_error(summary, tmp_path):
    with pytest.raises(SystemExit, match="run the benchmarks first"):
        summary.main(["--results", str(tmp_path)])
