"""One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) over numpy arrays of any shape.

A first-order low-pass filter whose cutoff frequency rises with the speed of the signal: at rest the cutoff is
``min_cutoff`` (strong smoothing, no jitter); when the signal moves, the cutoff grows by ``beta`` times the
(low-passed) speed, so the lag shrinks. Every element of the array is filtered independently.
"""

from __future__ import annotations

import math

import numpy as np


def smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential-smoothing weight ``alpha`` in (0, 1] of a first-order low-pass filter with the given cutoff
    frequency (Hz) sampled ``dt`` seconds after the previous sample: ``alpha = 1 / (1 + tau / dt)`` with
    ``tau = 1 / (2 pi cutoff)``. Works element-wise on arrays of cutoffs."""
    tau = 1.0 / (2.0 * math.pi * np.maximum(cutoff, 1e-9))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Stateful One-Euro filter for a numpy array whose shape stays the same from call to call.

    ``min_cutoff`` (Hz): cutoff at rest; lower = smoother but laggier. ``beta`` (Hz per unit/s): how fast the
    cutoff rises with speed; 0 = a plain low-pass filter. ``d_cutoff`` (Hz): cutoff of the filter on the speed
    estimate. Speeds are in the array's units per second, so ``beta`` depends on those units.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError("min_cutoff and d_cutoff must be positive")
        if beta < 0:
            raise ValueError("beta must be >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: np.ndarray | None = None  # last filtered value
        self._dx: np.ndarray | None = None  # last filtered speed
        self._t: float | None = None

    def reset(self) -> None:
        """Forget all history: the next call behaves like the first one."""
        self._x = None
        self._dx = None
        self._t = None

    @property
    def last(self) -> np.ndarray | None:
        """The last filtered value (a copy), or None before the first call."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t`` (seconds) and return the filtered value as a new float64 array
        of x's shape. The first call (or the first after ``reset``) returns x unchanged. ``t`` must be strictly
        greater than the previous call's, and x must keep its shape; otherwise ValueError."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or self._dx is None:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            self._t = float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"shape changed from {self._x.shape} to {x.shape}; call reset() first")
        dt = float(t) - self._t
        if not dt > 0:
            raise ValueError(f"timestamps must strictly increase (got {t} after {self._t})")
        a_d = smoothing_factor(self.d_cutoff, dt)
        dx = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(dx)
        a = smoothing_factor(cutoff, dt)
        out = a * x + (1.0 - a) * self._x
        self._x, self._dx, self._t = out, dx, float(t)
        return out.copy()
