"""Mean and 95 % confidence interval of a metric over the rows of one method and setting.

The interval is Student's t-interval of the mean: ``mean +- t_{0.975, n-1} * s / sqrt(n)``, ``s`` the
sample standard deviation (``n - 1`` in the denominator). It assumes the rows are independent draws;
rows that share an input are not, so with few inputs the interval is optimistic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
"""Coverage of the intervals the tables report."""


@dataclass(frozen=True)
class Summary:
    """Mean and confidence interval of some values.

    Attributes:
        count: finite values summarised (NaN values, e.g. an undefined correlation, are left out).
        mean: their mean (NaN when there are none).
        low, high: the interval's ends (NaN when there are fewer than 2 values).
    """

    count: int
    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN when it is undefined)."""
        return (self.high - self.low) / 2.0


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> Summary:
    """The mean of the finite ``values`` and its Student-t interval of coverage ``confidence``."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return Summary(1, mean, math.nan, math.nan)
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Summary(int(x.size), mean, mean - half, mean + half)
