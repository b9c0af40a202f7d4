"""Interval estimates shared by every table: one place for the statistics.

Every function returns (or is wrapped into) one shape, ``{"value", "ci_low", "ci_high",
"ci_method", "n"}``, with ``None`` for what cannot be computed (too few values, a non-finite
estimate).  Only numpy and the standard library are used (the tables environment has no scipy;
the tests check these against scipy's own).

- :func:`wilson`: a binomial proportion's Wilson score interval;
- :func:`mcnemar_exact`: the exact (binomial) McNemar test of two paired binary outcomes, and
  :func:`mcnemar` from the per-item outcomes;
- :func:`bootstrap`: a percentile bootstrap of any statistic of one or more *paired* samples
  (the same resampled indices for every sample), so a change between two models measured on
  the same items is a paired bootstrap: :func:`paired_bootstrap`;
- :func:`jackknife`: a delete-one jackknife interval (normal approximation) from the
  leave-one-out estimates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import numpy as np

# resampled values held at once: a chunk of bootstrap rows is at most this many elements
_CHUNK_ELEMENTS = 2_000_000


def z_value(ci: float) -> float:
    """The standard normal quantile of a two-sided ``ci`` interval (1.96 for 0.95)."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    return statistics.NormalDist().inv_cdf(0.5 + ci / 2)


def finite(value) -> float | None:
    """``value`` as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def interval(value, low, high, method: str, n: int, **extra) -> dict:
    """The common result shape (non-finite values become None)."""
    return {
        "value": finite(value),
        "ci_low": finite(low),
        "ci_high": finite(high),
        "ci_method": method,
        "n": n,
        **extra,
    }


def wilson(successes: int, n: int, ci: float = 0.95) -> dict:
    """Proportion ``successes / n`` with the Wilson score interval (no continuity correction):
    centre ``(p + z²/2n) / (1 + z²/n)``, half-width ``z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)``.
    No interval for ``n == 0``."""
    if not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return interval(None, None, None, "wilson", 0, successes=0)
    z = z_value(ci)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return interval(
        p, max(0.0, centre - half), min(1.0, centre + half), "wilson", n, successes=successes
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of the exact McNemar test: ``b`` and ``c`` are the discordant pairs
    (only the first, only the second outcome a success); under the null each discordant pair
    is either with probability 1/2, so p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2).
    1.0 when there is no discordant pair."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: negative counts {b}, {c}")
    m = b + c
    if m == 0:
        return 1.0
    tail = math.fsum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2.0**m
    return min(1.0, 2.0 * tail)


def mcnemar(before: Sequence[bool], after: Sequence[bool]) -> dict:
    """Exact McNemar test of paired binary outcomes (the same items, before and after):
    ``{"b": right before only, "c": right after only, "n": pairs, "p_value"}``."""
    if len(before) != len(after):
        raise ValueError(f"mcnemar: unpaired, {len(before)} outcomes against {len(after)}")
    b = sum(1 for x, y in zip(before, after, strict=True) if x and not y)
    c = sum(1 for x, y in zip(before, after, strict=True) if y and not x)
    return {"b": b, "c": c, "n": len(before), "p_value": mcnemar_exact(b, c)}


Statistic = Callable[..., np.ndarray | float]


def bootstrap(
    stat: Statistic,
    *samples: Sequence[float],
    iters: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "bootstrap_percentile",
) -> dict:
    """``stat(*samples)`` with a percentile bootstrap interval.

    The samples are paired: item i of every sample belongs to one unit (a document, a prompt),
    and each bootstrap replicate draws ``n`` units with replacement (numpy
    ``default_rng(seed).integers``) and takes those rows of every sample.  ``stat`` gets
    arrays whose last axis is the ``n`` items (a batch of replicates has a leading axis) and
    must reduce over that last axis, e.g. ``lambda a, b: a.mean(-1) / b.mean(-1)``.  The
    interval lies between the ``(1 - ci)/2`` and ``(1 + ci)/2`` quantiles of the replicates
    that are finite.  Fewer than two units: no interval."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays:
        raise ValueError("bootstrap: no sample")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap: unpaired samples of lengths {[len(a) for a in arrays]}")
    value = float(stat(*arrays)) if n else None
    low = high = None
    if n >= 2 and value is not None and math.isfinite(value):
        rng = np.random.default_rng(seed)
        rows = max(1, _CHUNK_ELEMENTS // n)
        replicates = []
        for start in range(0, iters, rows):
            index = rng.integers(0, n, size=(min(rows, iters - start), n))
            replicates.append(np.asarray(stat(*(a[index] for a in arrays)), dtype=float))
        values = np.concatenate(replicates)
        values = values[np.isfinite(values)]
        if len(values):
            alpha = 1 - ci
            low, high = (float(q) for q in np.quantile(values, [alpha / 2, 1 - alpha / 2]))
    return interval(value, low, high, method, n, iters=iters, seed=seed)


def paired_bootstrap(
    stat: Statistic,
    a: Sequence[float],
    b: Sequence[float],
    iters: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict:
    """:func:`bootstrap` of ``stat(a, b)`` over items measured twice (``a[i]`` and ``b[i]``
    belong to the same item): both resampled with the same indices."""
    return bootstrap(stat, a, b, iters=iters, ci=ci, seed=seed, method="paired_bootstrap")


def jackknife(estimate: float, leave_one_out: Sequence[float], ci: float = 0.95) -> dict:
    """``estimate`` with a delete-one jackknife interval: standard error
    ``sqrt((n - 1) / n * sum((t_i - mean(t))**2))`` over the ``n`` leave-one-out estimates
    ``t_i``, interval ``estimate -/+ z * se``."""
    n = len(leave_one_out)
    low = high = None
    if n >= 2 and math.isfinite(estimate) and all(math.isfinite(t) for t in leave_one_out):
        centre = math.fsum(leave_one_out) / n
        se = math.sqrt((n - 1) / n * math.fsum((t - centre) ** 2 for t in leave_one_out))
        low, high = estimate - z_value(ci) * se, estimate + z_value(ci) * se
    return interval(estimate, low, high, "jackknife_normal", n)


def excludes_zero(result: dict | None) -> bool | None:
    """Whether an interval lies wholly on one side of 0 (None when there is none)."""
    if not result or result.get("ci_low") is None or result.get("ci_high") is None:
        return None
    return result["ci_low"] > 0 or result["ci_high"] < 0
