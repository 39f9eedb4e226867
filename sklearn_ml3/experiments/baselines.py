"""The hand-written-loss baseline at its best learning rate (the protocols' baseline rule).

The best lr is chosen on validation data kept apart from the scored data,
from a x3 grid that is extended until the best value is interior or the next
value diverges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

#: Most grid values tried before giving up on an interior best.
MAX_GRID = 12


def grid_lr(index: int) -> float:
    """The ``index``-th value of the grid ..., 1e-3, 3e-3, 1e-2, 3e-2, ... (1e-3 is -6)."""
    return float(f"{(1, 3)[index % 2]}e{index // 2}")


def grid_index(lr: float) -> int:
    """The index of the grid value nearest to ``lr``."""
    return round(2 * math.log10(lr))


def tune_lr(validation_score: Callable[[float], float], start_lr: float, *,
            higher_is_better: bool, name: str = "hand-written loss",
            selected_on: str = "validation split") -> dict[str, Any]:
    """Search a x3 grid around ``start_lr`` for the best ``validation_score(lr)``.

    Parameters
    ----------
    validation_score : callable
        ``lr -> score`` on validation data; NaN or inf marks divergence.
    start_lr : float
        The grid (1e-3, 3e-3, 1e-2, ...) starts at the three values around
        the grid value nearest to ``start_lr``.
    higher_is_better : bool
        Whether larger scores are better (accuracy, R^2) or smaller (MSE).

    Returns
    -------
    record : dict
        ``name``, ``lr_grid``, ``scores``, ``best_lr``, ``selected_on`` and,
        when the best stays at an edge, ``edge_reason`` (the protocols'
        results.json fields).
    """
    scores: dict[int, float] = {}  # grid index -> validation score (NaN: diverged)

    def score(index: int) -> float:
        if index not in scores:
            value = float(validation_score(grid_lr(index)))
            scores[index] = value if math.isfinite(value) else math.nan
        return scores[index]

    def badness(index: int) -> float:
        value = score(index)
        if math.isnan(value):
            return math.inf
        return -value if higher_is_better else value

    centre = grid_index(start_lr)
    for index in (centre - 1, centre, centre + 1):
        score(index)
    edge_reason = None
    while True:  # a diverging outer value makes the best interior and ends the search
        grid = sorted(scores)
        best = min(grid, key=badness)
        if grid[0] < best < grid[-1]:
            break
        if len(scores) >= MAX_GRID:
            edge_reason = f"still at the grid's edge after {MAX_GRID} values"
            break
        score(grid[0] - 1 if best == grid[0] else grid[-1] + 1)
    grid = sorted(scores)
    record = {"name": name, "lr_grid": [grid_lr(i) for i in grid],
              "scores": [scores[i] for i in grid], "best_lr": grid_lr(best),
              "selected_on": selected_on}
    if edge_reason is not None:
        record["edge_reason"] = edge_reason
    return record
