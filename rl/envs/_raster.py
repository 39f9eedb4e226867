"""Tiny numpy rasteriser for the ``rgb_array`` render mode of the torch-dynamics envs.

It avoids a pygame dependency: a frame is a white canvas with filled discs and
polylines in world coordinates.
"""

from __future__ import annotations

import numpy as np


class Canvas:
    """RGB canvas mapping the world box ``[x0, x1] x [y0, y1]`` to ``size`` pixels."""

    def __init__(self, bounds: tuple[float, float, float, float], size: int = 256) -> None:
        self.x0, self.x1, self.y0, self.y1 = bounds
        self.size = size
        self.image = np.full((size, size, 3), 255, dtype=np.uint8)
        scale = size / max(self.x1 - self.x0, self.y1 - self.y0)
        self._scale = scale
        cols, rows = np.meshgrid(np.arange(size), np.arange(size))
        self._wx = self.x0 + (cols + 0.5) / scale
        self._wy = self.y1 - (rows + 0.5) / scale

    def disc(self, x: float, y: float, radius: float, color: tuple[int, int, int]) -> None:
        """Fill a disc of world radius ``radius`` centred at ``(x, y)``."""
        mask = (self._wx - x) ** 2 + (self._wy - y) ** 2 <= radius**2
        self.image[mask] = color

    def polyline(self, xs: np.ndarray, ys: np.ndarray, width: float, color: tuple[int, int, int]):
        """Draw a polyline as a chain of discs of world radius ``width``."""
        for x, y in zip(xs, ys, strict=True):
            self.disc(float(x), float(y), width, color)
