"""stylemerge.intervals against reference computations (scipy, where it has one)."""

import math

import numpy as np
import pytest
from scipy import stats

from stylemerge.intervals import (
    bootstrap,
    excludes_zero,
    jackknife,
    mcnemar,
    mcnemar_exact,
    paired_bootstrap,
    wilson,
    z_value,
)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (27, 30), (29, 30), (30, 30), (512, 1319)])
@pytest.mark.parametrize("ci", [0.9, 0.95, 0.99])
def test_wilson_is_scipys(k, n, ci):
    ours = wilson(k, n, ci)
    reference = stats.binomtest(k, n).proportion_ci(confidence_level=ci, method="wilson")
    assert ours["value"] == pytest.approx(k / n)
    assert ours["ci_low"] == pytest.approx(reference.low, abs=1e-12)
    assert ours["ci_high"] == pytest.approx(reference.high, abs=1e-12)
    assert (ours["n"], ours["successes"], ours["ci_method"]) == (n, k, "wilson")


def test_wilson_without_trials_has_no_interval():
    assert wilson(0, 0)["ci_low"] is None and wilson(0, 0)["value"] is None
    with pytest.raises(ValueError):
        wilson(3, 2)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 2), (2, 0), (1, 5), (3, 3), (10, 25), (0, 9)])
def test_exact_mcnemar_is_the_binomial_test_of_the_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_counts_discordant_pairs():
    before = [1] * 27 + [0] * 3  # 27/30 -> 29/30: two problems gained, none lost
    after = [1] * 29 + [0]
    result = mcnemar(before, after)
    assert (result["b"], result["c"], result["n"]) == (0, 2, 30)
    assert result["p_value"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unpaired"):
        mcnemar([1, 0], [1])


def test_bootstrap_mean_is_close_to_scipys_percentile_bootstrap():
    data = np.random.default_rng(1).normal(3.0, 2.0, 80)
    ours = bootstrap(lambda x: x.mean(axis=-1), data, iters=20_000, seed=3)
    reference = stats.bootstrap(
        (data,), np.mean, n_resamples=20_000, method="percentile", random_state=3
    ).confidence_interval
    assert ours["value"] == pytest.approx(data.mean())
    se = data.std(ddof=1) / math.sqrt(len(data))
    assert ours["ci_low"] == pytest.approx(reference.low, abs=0.05 * se)
    assert ours["ci_high"] == pytest.approx(reference.high, abs=0.05 * se)
    # and the normal-theory interval, which it approaches for a mean
    assert ours["ci_low"] == pytest.approx(data.mean() - 1.96 * se, abs=0.1 * se)


def test_paired_bootstrap_resamples_pairs_together():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 5, 60)  # large item-to-item spread, common to both
    b = a + 0.5 + rng.normal(0, 0.1, 60)

    def diff(x, y):
        return (y - x).mean(axis=-1)

    ours = paired_bootstrap(diff, a, b, iters=5000, seed=1)
    reference = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: (y - x).mean(axis=axis),
        paired=True,
        n_resamples=5000,
        method="percentile",
        random_state=1,
    ).confidence_interval
    assert ours["ci_method"] == "paired_bootstrap" and ours["n"] == 60
    assert ours["ci_low"] == pytest.approx(reference.low, abs=0.01)
    assert ours["ci_high"] == pytest.approx(reference.high, abs=0.01)
    assert 0.4 < ours["ci_low"] < 0.5 < ours["ci_high"] < 0.6  # narrow: the spread cancels
    assert excludes_zero(ours) is True
    with pytest.raises(ValueError, match="unpaired"):
        paired_bootstrap(diff, a, b[:-1])


def test_bootstrap_is_deterministic_chunked_and_needs_two_items():
    data = np.arange(10.0)

    def mean(x):
        return x.mean(axis=-1)

    assert bootstrap(mean, data, seed=4) == bootstrap(mean, data, seed=4)
    assert bootstrap(mean, data, seed=4) != bootstrap(mean, data, seed=5)
    one = bootstrap(mean, [2.0])
    assert one["value"] == 2.0 and one["ci_low"] is None
    assert bootstrap(mean, [])["value"] is None
    # many items: the replicates come in chunks, the interval is still the mean's
    big = np.random.default_rng(2).normal(0, 1, 300_000)
    result = bootstrap(mean, big, iters=40)
    assert abs(result["ci_low"]) < 0.01 and abs(result["ci_high"]) < 0.01


def test_jackknife_of_a_mean_is_the_standard_error_interval():
    data = np.random.default_rng(5).normal(1.0, 1.0, 30)
    loo = [(data.sum() - x) / (len(data) - 1) for x in data]
    result = jackknife(float(data.mean()), loo)
    se = stats.sem(data)  # the jackknife se of a mean is the usual standard error
    assert result["ci_low"] == pytest.approx(data.mean() - z_value(0.95) * se)
    assert result["ci_high"] == pytest.approx(data.mean() + z_value(0.95) * se)
    assert jackknife(1.0, [1.0])["ci_low"] is None


def test_z_value_and_excludes_zero():
    assert z_value(0.95) == pytest.approx(stats.norm.ppf(0.975))
    assert excludes_zero({"ci_low": -1.0, "ci_high": 2.0}) is False
    assert excludes_zero({"ci_low": -3.0, "ci_high": -2.0}) is True
    assert excludes_zero({"ci_low": None, "ci_high": None}) is None
