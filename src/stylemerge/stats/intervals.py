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
- :func:`jackknife`: a delete-one jackknife interval from the leave-one-out estimates
  (normal approximation, or Student t with n - 1 degrees of freedom where n is small);
- :func:`hierarchical_bootstrap`: a bootstrap of clustered data (seeds, then documents),
  resampling the units that are independent rather than the rows: nested where each seed has
  documents of its own, crossed where every seed scores the same documents;
- :func:`holm`: Holm's step-down adjustment of a family's p-values.

Every interval also carries a two-sided ``p_value`` against 0 (``None`` where there is none):
the bootstraps' from the share of replicates on either side of 0, the jackknife's from its
normal or t statistic; :func:`holm` adjusts a family of them.
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
    """``value`` (a number, or a CSV cell's text) as a float; None when missing, not a
    number, or not finite."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
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
    low = high = p_value = None
    if n >= 2 and value is not None and math.isfinite(value):
        rng = np.random.default_rng(seed)
        rows = max(1, _CHUNK_ELEMENTS // n)
        replicates = []
        for start in range(0, iters, rows):
            index = rng.integers(0, n, size=(min(rows, iters - start), n))
            replicates.append(np.asarray(stat(*(a[index] for a in arrays)), dtype=float))
        low, high, p_value = percentile_interval(np.concatenate(replicates), ci)
    return interval(value, low, high, method, n, iters=iters, seed=seed, p_value=p_value)


def percentile_interval(replicates: np.ndarray, ci: float) -> tuple:
    """``(low, high, p_value)`` of bootstrap replicates: the ``(1 - ci)/2`` and
    ``(1 + ci)/2`` quantiles of the finite ones, and :func:`replicate_p_value`."""
    values = replicates[np.isfinite(replicates)]
    if not len(values):
        return None, None, None
    alpha = 1 - ci
    low, high = (float(q) for q in np.quantile(values, [alpha / 2, 1 - alpha / 2]))
    return low, high, replicate_p_value(values)


def replicate_p_value(replicates: np.ndarray, null: float = 0.0) -> float | None:
    """Two-sided p-value of ``null`` from bootstrap replicates: twice the smaller share of
    replicates at or beyond it on either side, counted as ``(k + 1) / (B + 1)`` so that it is
    never 0 (the percentile interval at level ``1 - alpha`` excludes ``null`` roughly when
    this is below ``alpha``)."""
    replicates = np.asarray(replicates, dtype=float)
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return None
    below = (np.count_nonzero(replicates <= null) + 1) / (len(replicates) + 1)
    above = (np.count_nonzero(replicates >= null) + 1) / (len(replicates) + 1)
    return min(1.0, 2.0 * min(below, above))


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


def t_cdf(x: float, df: int) -> float:
    """Student t's distribution function with ``df`` degrees of freedom (Simpson's rule on
    the density from 0 to ``|x|``: the tables environment has no scipy)."""
    if df < 1:
        raise ValueError(f"t_cdf: df must be at least 1, got {df}")
    if not math.isfinite(x):
        return 0.0 if x < 0 else 1.0
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # the density falls like |t|^-(df+1): integrate in u = atan(t), whose range is finite
    u = np.linspace(0.0, math.atan(abs(x)), 4001)
    t = np.tan(u)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df)) * (1 + t * t)
    h = u[1] - u[0]
    inner = 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()
    area = h / 3 * (density[0] + density[-1] + inner)
    return 0.5 + math.copysign(float(area), x)


def t_value(ci: float, df: int) -> float:
    """Student t's two-sided ``ci`` quantile with ``df`` degrees of freedom (bisection on
    :func:`t_cdf`)."""
    z_value(ci)  # checks ci
    target = 0.5 + ci / 2
    low, high = 0.0, 1.0
    while t_cdf(high, df) < target:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < target else (low, mid)
    return (low + high) / 2


def jackknife(
    estimate: float, leave_one_out: Sequence[float], ci: float = 0.95, t: bool = False
) -> dict:
    """``estimate`` with a delete-one jackknife interval: standard error
    ``sqrt((n - 1) / n * sum((t_i - mean(t))**2))`` over the ``n`` leave-one-out estimates
    ``t_i``, interval ``estimate -/+ q * se`` with ``q`` the normal quantile, or with ``t``
    Student t's with ``n - 1`` degrees of freedom (few units: documents rather than
    prompts).  ``p_value``: of 0, from the same distribution."""
    n = len(leave_one_out)
    low = high = p_value = None
    if n >= 2 and math.isfinite(estimate) and all(math.isfinite(x) for x in leave_one_out):
        centre = math.fsum(leave_one_out) / n
        se = math.sqrt((n - 1) / n * math.fsum((x - centre) ** 2 for x in leave_one_out))
        q = t_value(ci, n - 1) if t else z_value(ci)
        low, high = estimate - q * se, estimate + q * se
        if se > 0:
            tail = (
                t_cdf(-abs(estimate) / se, n - 1)
                if t
                else (statistics.NormalDist().cdf(-abs(estimate) / se))
            )
            p_value = min(1.0, 2.0 * tail)
        else:
            p_value = 1.0 if estimate == 0 else 0.0
    method = "jackknife_t" if t else "jackknife_normal"
    return interval(estimate, low, high, method, n, p_value=p_value)


# --- clustered data ----------------------------------------------------------------------------

WeightedStatistic = Callable[..., np.ndarray]


def cluster_weights(levels: Sequence[Sequence], iters: int, rng: np.random.Generator) -> np.ndarray:
    """``iters`` rows of bootstrap weights for the rows of clustered data: how often each row
    is drawn when the outermost clusters (``levels[0]``: a label per row, e.g. the seed) are
    resampled with replacement, then within each drawn cluster its sub-clusters
    (``levels[1]``, e.g. the document), and so on.  Rows of one innermost cluster are kept
    whole (Ren et al. 2010: resampling the lowest level as well counts its variance twice).
    A cluster drawn k times draws its sub-clusters k times independently: a multinomial of
    ``k * m`` draws over its ``m`` sub-clusters."""
    if not levels:
        raise ValueError("cluster_weights: no level")
    n = len(levels[0])
    # every row's path of labels, outermost first; a sub-cluster is known by its whole path
    paths = list(zip(*[list(level) for level in levels], strict=True)) if n else []
    counts = {(): np.ones(iters, dtype=np.int64)}  # the root is drawn once per replicate
    for depth in range(len(levels)):
        children: dict[tuple, list[tuple]] = {}
        for path in paths:
            node = path[: depth + 1]
            siblings = children.setdefault(path[:depth], [])
            if node not in siblings:
                siblings.append(node)
        next_counts = {}
        for parent, nodes in children.items():
            m = len(nodes)
            if depth == 0:
                drawn = rng.multinomial(m, np.full(m, 1 / m), size=iters)
            else:
                drawn = rng.multinomial(counts[parent] * m, np.full(m, 1 / m))
            next_counts.update({node: drawn[:, k] for k, node in enumerate(nodes)})
        counts = next_counts
    return np.stack([counts[path] for path in paths], axis=1).astype(float)


def crossed_weights(
    outer: Sequence, inner: Sequence, iters: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap weights for two crossed factors (every seed scores the same documents): seeds
    and documents each resampled with replacement, independently, a row weighted by its
    seed's count times its document's (Owen 2007, "the pigeonhole bootstrap"). A document
    effect shared by every seed then counts once, not once per seed as in the nested
    resampling of :func:`cluster_weights`, which would take k seeds' copies of one document
    for k independent documents; the rows of a document (its passages) stay whole."""
    counts = []
    for labels in (outer, inner):
        names = list(dict.fromkeys(labels))
        index = {name: i for i, name in enumerate(names)}
        m = len(names)
        drawn = rng.multinomial(m, np.full(m, 1 / m), size=iters)
        counts.append(drawn[:, [index[label] for label in labels]])
    return (counts[0] * counts[1]).astype(float)


def hierarchical_bootstrap(
    stat: WeightedStatistic,
    *samples: Sequence[float],
    levels: Sequence[Sequence],
    iters: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
    crossed: bool = False,
) -> dict:
    """``stat(weights, *samples)`` with a percentile interval from resampling clusters
    (:func:`cluster_weights`): the units that are independent (seeds, then the documents
    within each) rather than the rows (prompts, passages, samples) cut from them.

    ``stat`` takes row weights (``(n,)`` of ones for the estimate, ``(b, n)`` for a batch of
    replicates) and the samples, and reduces over the last axis, e.g.
    ``lambda w, a: (w * a).sum(-1) / w.sum(-1)``.  ``n`` in the result is the number of
    innermost clusters, ``units`` the count at each level.  Fewer than two outermost
    clusters with one level, fewer than two innermost ones, or ``iters`` 0 (the point
    estimate alone): no interval.  ``crossed`` (two levels, the inner labels the same
    documents in every outer cluster): :func:`crossed_weights` in place of the nested ones."""
    if crossed and len(levels) != 2:
        raise ValueError(f"hierarchical_bootstrap: crossed needs two levels, got {len(levels)}")
    arrays = [np.asarray(s, dtype=float) for s in samples]
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays) or any(len(level) != n for level in levels):
        raise ValueError(
            f"hierarchical_bootstrap: samples and levels of lengths "
            f"{[len(a) for a in arrays]}, {[len(level) for level in levels]}"
        )
    paths = list(zip(*[list(level) for level in levels], strict=True))
    units = [len({path[: k + 1] for path in paths}) for k in range(len(levels))]
    if crossed:  # the documents are the same in every seed: counted once
        units = [len(set(level)) for level in levels]
    value = float(stat(np.ones(n), *arrays)) if n else None
    low = high = p_value = None
    if iters > 0 and units and units[-1] >= 2 and value is not None and math.isfinite(value):
        rng = np.random.default_rng(seed)
        rows = max(1, _CHUNK_ELEMENTS // n)
        replicates = []
        for start in range(0, iters, rows):
            draws = min(rows, iters - start)
            weights = (
                crossed_weights(*levels, draws, rng)
                if crossed
                else cluster_weights(levels, draws, rng)
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                replicates.append(np.asarray(stat(weights, *arrays), dtype=float))
        low, high, p_value = percentile_interval(np.concatenate(replicates), ci)
    method = "cluster_bootstrap"
    if len(levels) > 1:
        method = "crossed_bootstrap" if crossed else "hierarchical_bootstrap"
    return interval(
        value,
        low,
        high,
        method,
        units[-1] if units else 0,
        units=units,
        iters=iters,
        seed=seed,
        p_value=p_value,
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of a family (``None`` stays ``None`` and is not
    counted): the i-th smallest of m is ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def excludes_zero(result: dict | None) -> bool | None:
    """Whether an interval lies wholly on one side of 0 (None when there is none)."""
    if not result or result.get("ci_low") is None or result.get("ci_high") is None:
        return None
    return result["ci_low"] > 0 or result["ci_high"] < 0
