"""The README's results table from the benchmarks' ``results.json`` files.

Every benchmark on the harness writes ``results["headline"]``: rows with the
experiment, the metric, the learned loss and the hand-written loss at the
same and at the tuned lr (``{"mean", "std", ...}`` each) and, where measured,
the step-size control, and a ``note`` with the context a row needs. This
script collects them from ``results/*/`` and prints one Markdown table (mean
± std over seeds), so the README quotes what the runs wrote, not numbers
typed by hand.

    python benchmarks/summary.py                  # every results/*/results.json
    python benchmarks/summary.py --results DIR    # another results folder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (("learned", "learned loss"), ("same_lr", "hand-written, same lr"),
           ("best_lr", "hand-written, tuned lr"), ("step_size_control", "step-size control"))


def cell(summary: dict | None, bold: bool = False) -> str:
    if not summary:
        return ""
    text = f"{summary['mean']:.3g} ± {summary['std']:.2g}"
    return f"**{text}**" if bold else text


def best_column(row: dict) -> str | None:
    """The column with the best mean (bold in the table)."""
    present = [k for k, _ in COLUMNS if row.get(k)]
    if not present:
        return None
    sign = 1 if row.get("lower_is_better", True) else -1
    return min(present, key=lambda k: sign * row[k]["mean"])


def collect(results_dir: Path) -> list[tuple[str, dict]]:
    """``(benchmark, headline row)`` for every results file that has headline rows."""
    rows = []
    for path in sorted(results_dir.glob("*/results.json")):
        data = json.loads(path.read_text())
        for row in data.get("headline", []):
            rows.append((data.get("benchmark", path.parent.name), row))
    return rows


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| experiment | " + " | ".join(label for _, label in COLUMNS)
             + " | notes | benchmark |", "|---|" + "---|" * (len(COLUMNS) + 2)]
    for benchmark, row in rows:
        best = best_column(row)
        cells = [cell(row.get(k), bold=k == best) for k, _ in COLUMNS]
        lines.append(f"| {row['experiment']} | " + " | ".join(cells)
                     + f" | {row.get('note', '')} | `{benchmark}` |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    rows = collect(args.results)
    if not rows:
        raise SystemExit(f"no results.json with headline rows under {args.results}/; run the "
                         "benchmarks first")
    text = table(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
