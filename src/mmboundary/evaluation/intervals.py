"""Uncertainty of the reported numbers: bootstrap intervals over questions, mean +- sd over seeds.

A calibration table is an estimate from a few hundred questions: every metric is reported with a
95% percentile bootstrap interval over *questions* (a question's steps move together, since they
are not independent), and a result over several seeds as mean +- sample standard deviation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_interval(n_items: int, statistic: Callable[[np.ndarray], float | None], *,
                       n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` over items resampled with replacement.

    ``statistic(indices)`` computes the metric from the items at ``indices`` (an int array of
    length ``n_items``, repeats allowed); a replicate where it is undefined (``None``, e.g. AUROC
    with one class) is skipped. Returns ``(lo, hi)``, the ``(1-level)/2`` and ``(1+level)/2``
    quantiles of the replicates, or None when fewer than half of them are defined.

    >>> lo, hi = bootstrap_interval(100, lambda ix: float(np.mean(ix < 50)), n_boot=200)
    >>> 0.35 < lo < 0.5 < hi < 0.65
    True
    """
    if n_items <= 0:
        return None
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        value = statistic(rng.integers(0, n_items, size=n_items))
        if value is not None and np.isfinite(value):
            values.append(float(value))
    if len(values) < n_boot / 2:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_sd(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """(mean, sample sd (ddof=1; 0 for one value), n) of the defined values, or None if none."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return None
    sd = float(np.std(known, ddof=1)) if len(known) > 1 else 0.0
    return float(np.mean(known)), sd, len(known)
