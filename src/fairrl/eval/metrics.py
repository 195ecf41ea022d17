"""Generic statistics of the evaluation suites: percentile bootstrap intervals over items.

Intervals are 95% percentile bootstrap intervals over items (Efron & Tibshirani 1993, ch. 13). The BBQ
scores built on them live with BBQ, in :mod:`fairrl.eval.bbq`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Bootstrap resamples are drawn in blocks of about this many indices to bound memory on large sets.
_BLOCK = 2_000_000


def bootstrap_indices(n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """``n_boot`` resamples of ``range(n)`` with replacement, as blocks of ``[b, n]`` index arrays."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK // max(n, 1))
    return [rng.integers(0, n, size=(min(block, n_boot - s), n)) for s in range(0, n_boot, block)]


def percentile_interval(stats: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of bootstrap statistics (linear interpolation)."""
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[Any],
    statistic: Callable[[list[Any]], float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (default: mean) over ``values`` drawn with replacement.

    Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), sec. 13.3. The mean is computed
    vectorised; any other ``statistic`` is called on each resample (a list of the original items).
    Empty ``values`` give (NaN, NaN).
    """
    if len(values) == 0:
        return math.nan, math.nan
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    blocks = bootstrap_indices(len(values), n_boot, seed)
    if statistic is None:
        arr = np.asarray(values, dtype=np.float64)
        stats = np.concatenate([arr[idx].mean(-1) for idx in blocks])  # [n_boot]
    else:
        items = list(values)
        stats = np.array([statistic([items[i] for i in row]) for idx in blocks for row in idx])
    return percentile_interval(stats, level)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927; Brown, Cai & DasGupta 2001, eq. 4).

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes / n``. Unlike the
    bootstrap it stays informative at 0 or n successes (an attack that never succeeded on 20 items still
    has an upper bound, 0.16). ``n = 0`` gives (NaN, NaN).
    """
    if n == 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))
