"""The README's Python example runs as written."""

import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)  # it writes sine.ml3 to the working folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 100 epochs end on max_iter (ConvergenceWarning)
        for code in blocks:
            exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "sine.ml3").is_file()
    r2 = float(capsys.readouterr().out.strip().rsplit(" ", 1)[-1])
    assert r2 > 0  # the learned loss trains the new task better than the mean
