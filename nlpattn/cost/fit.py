"""Power-law fits (y ≈ c·x^p by least squares on log-log) and crossover points of two curves."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PowerLaw:
    """y ≈ coefficient · x ** exponent over [x_min, x_max]; r2 is on the log-log scale."""

    exponent: float
    coefficient: float
    r2: float
    x_min: float
    x_max: float

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        """The fitted curve at x."""
        return self.coefficient * np.asarray(x, dtype=float) ** self.exponent


def fit_power_law(xs: list[float], ys: list[float]) -> PowerLaw:
    """Least-squares line through (log x, log y); needs at least two points with y > 0."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x > 0 and y is not None and y > 0]
    if len(pairs) < 2:
        raise ValueError(f"a power-law fit needs two positive points, got {len(pairs)}")
    lx = np.log([p[0] for p in pairs])
    ly = np.log([p[1] for p in pairs])
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    spread = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / spread if spread > 0 else 1.0
    return PowerLaw(float(slope), float(math.exp(intercept)), r2, float(min(p[0] for p in pairs)),
                    float(max(p[0] for p in pairs)))


def fit_tail(xs: list[float], ys: list[float], x_from: float | None = None) -> PowerLaw:
    """Fit over x >= x_from (None: the largest half of the points plus one, at least 3, where
    fixed per-call overheads no longer dominate)."""
    pts = sorted(zip(xs, ys))
    if x_from is None:
        keep = pts[-min(len(pts), max(3, len(pts) // 2 + 1)):]
    else:
        keep = [p for p in pts if p[0] >= x_from]
    return fit_power_law([p[0] for p in keep], [p[1] for p in keep])


def crossover(xs: list[float], a: list[float], b: list[float]) -> dict:
    """Where curve a first rises above curve b: {'x': log-interpolated x, or None, 'status': ...}.

    status is 'crossed' (x between two measured points), 'below-range' (a > b from the first
    point on) or 'above-range' (a <= b everywhere measured).
    """
    pts = sorted(zip(xs, a, b))
    if pts[0][1] > pts[0][2]:
        return {"x": None, "status": "below-range", "range": [pts[0][0], pts[-1][0]]}
    for (x0, a0, b0), (x1, a1, b1) in zip(pts, pts[1:]):
        if a1 > b1:
            g0, g1 = math.log(a0 / b0), math.log(a1 / b1)  # log-ratio goes from <= 0 to > 0
            t = g0 / (g0 - g1) if g0 != g1 else 0.0
            x = math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
            return {"x": x, "status": "crossed", "range": [x0, x1]}
    return {"x": None, "status": "above-range", "range": [pts[0][0], pts[-1][0]]}
