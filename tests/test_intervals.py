"""stylemerge.stats.intervals against reference computations (scipy, where it has one)."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from stylemerge.stats.intervals import (
    bootstrap,
    cluster_weights,
    excludes_zero,
    hierarchical_bootstrap,
    holm,
    jackknife,
    mcnemar,
    mcnemar_exact,
    paired_bootstrap,
    replicate_p_value,
    t_cdf,
    t_value,
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


@pytest.mark.parametrize("df", [1, 2, 3, 5, 11, 30, 200])
def test_t_quantile_and_distribution_are_scipys(df):
    assert t_value(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    assert t_value(0.9, df) == pytest.approx(stats.t.ppf(0.95, df), rel=1e-9)
    for x in (-4.0, -1.3, 0.0, 0.7, 2.5):
        assert t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), abs=1e-10)


def test_jackknife_with_t_quantiles_is_the_one_sample_t_interval():
    data = np.random.default_rng(6).normal(0.4, 1.0, 8)
    loo = [(data.sum() - x) / (len(data) - 1) for x in data]
    result = jackknife(float(data.mean()), loo, t=True)
    reference = stats.ttest_1samp(data, 0.0)
    low, high = reference.confidence_interval(0.95)
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-8)
    assert result["ci_method"] == "jackknife_t"


@pytest.mark.parametrize("seed", range(5))
def test_holm_is_statsmodels(seed):
    p = np.random.default_rng(seed).uniform(0, 0.2, 8).tolist()
    expected = multipletests(p, alpha=0.05, method="holm")[1]
    assert holm(p) == pytest.approx(list(expected), abs=1e-15)
    # missing p-values are not part of the family
    with_gaps = p[:3] + [None] + p[3:]
    adjusted = holm(with_gaps)
    assert adjusted[3] is None
    assert [a for a in adjusted if a is not None] == pytest.approx(list(expected))


def test_replicate_p_value_counts_both_tails():
    assert replicate_p_value(np.r_[np.full(99, 1.0)]) == pytest.approx(2 / 100)
    assert replicate_p_value(np.r_[np.full(50, -1.0), np.full(50, 1.0)]) == 1.0
    assert replicate_p_value(np.array([np.nan])) is None


def _weighted_mean(w, x):
    return (w * x).sum(-1) / w.sum(-1)


def test_cluster_weights_draw_clusters_whole_and_subclusters_per_draw():
    seeds = [0, 0, 0, 0, 1, 1, 1, 1]
    docs = [0, 0, 1, 1, 0, 0, 1, 1]  # document labels repeat across seeds: known by path
    w = cluster_weights([seeds, docs], 2000, np.random.default_rng(0))
    assert w.shape == (2000, 8)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 6] == w[:, 7]).all()  # a document whole
    # each replicate draws 2 seeds and, within a seed drawn k times, 2k documents
    assert (w.sum(1) == 8).all()
    seed0 = w[:, [0, 2]].sum(1)  # documents drawn from seed 0 (one row of each)
    assert set(np.unique(seed0)) <= {0, 2, 4}
    assert not (w[:, 0] == w[:, 4]).all()  # the two seeds' documents are drawn apart


def test_clustered_interval_is_wider_than_the_row_level_one_on_clustered_data():
    rng = np.random.default_rng(3)
    documents = np.repeat(np.arange(12), 8)  # 12 documents, 8 passages each
    values = rng.normal(0, 1, 12)[documents] + rng.normal(0, 0.3, len(documents))
    rows = bootstrap(lambda x: x.mean(-1), values, iters=4000, seed=1)
    clustered = hierarchical_bootstrap(_weighted_mean, values, levels=[documents], iters=4000)
    assert clustered["n"] == 12 and clustered["ci_method"] == "cluster_bootstrap"
    assert clustered["value"] == pytest.approx(values.mean())
    width = clustered["ci_high"] - clustered["ci_low"]
    assert width > 2 * (rows["ci_high"] - rows["ci_low"])


def test_hierarchical_bootstrap_covers_the_mean_when_seeds_differ():
    """Seeds with a real between-seed effect: the interval over seeds then documents must
    cover the true mean about as often as it claims, where one over documents alone (seeds
    pooled as if one) would be too narrow."""
    rng = np.random.default_rng(11)
    covered = covered_docs_only = 0
    trials = 60
    for trial in range(trials):
        seed_effect = rng.normal(0, 1.0, 5)  # 5 seeds, between-seed SD 1
        seeds = np.repeat(np.arange(5), 12)
        docs = np.tile(np.arange(12), 5)
        values = seed_effect[seeds] + rng.normal(0, 0.5, 60)
        both = hierarchical_bootstrap(
            _weighted_mean, values, levels=[seeds, docs], iters=1000, seed=trial
        )
        flat = hierarchical_bootstrap(
            _weighted_mean, values, levels=[seeds * 100 + docs], iters=1000, seed=trial
        )
        covered += both["ci_low"] <= 0 <= both["ci_high"]
        covered_docs_only += flat["ci_low"] <= 0 <= flat["ci_high"]
        assert both["units"] == [5, 60] and both["ci_method"] == "hierarchical_bootstrap"
    # a percentile bootstrap over 5 seeds under-covers a little (n = 5); documents alone
    # cover far less
    assert covered / trials > 0.75
    assert covered_docs_only / trials < 0.5


def test_two_seeds_of_opposite_sign_are_not_significant_pooled():
    rng = np.random.default_rng(2)
    seeds = np.repeat([0, 1], 16)
    docs = np.tile(np.arange(16), 2)
    values = np.where(seeds == 0, 1.0, -1.0) + rng.normal(0, 0.1, 32)
    each = [
        hierarchical_bootstrap(_weighted_mean, values[seeds == s], levels=[docs[seeds == s]])
        for s in (0, 1)
    ]
    assert each[0]["ci_low"] > 0 and each[1]["ci_high"] < 0  # each seed alone: significant
    pooled = hierarchical_bootstrap(_weighted_mean, values, levels=[seeds, docs])
    assert pooled["ci_low"] < 0 < pooled["ci_high"]
    assert pooled["p_value"] > 0.05


def test_a_hierarchical_bootstrap_of_no_iterations_is_the_point_estimate():
    """iters 0: the estimate alone (each seed's own, in the pooled tables), no interval."""
    result = hierarchical_bootstrap(
        lambda w, a: (w * a).sum(-1) / w.sum(-1), [1.0, 2.0, 4.0, 5.0], levels=[list("aabb")],
        iters=0,
    )  # fmt: skip
    assert result["value"] == 3.0 and result["ci_low"] is None and result["p_value"] is None


def test_seeds_scoring_the_same_documents_are_crossed_not_nested():
    """Two seeds score the same 20 documents (3 passages each), whose effects they share:
    with no seed effect at all, pooling the seeds adds no information about the documents,
    so the crossed interval is as wide as one seed's, where the nested one (each seed's
    copy of a document drawn as if another document) is about 1/sqrt(2) as wide."""
    rng = np.random.default_rng(5)
    docs = np.repeat(np.arange(20), 3)
    values = rng.normal(0, 1, 20)[docs] + rng.normal(0, 0.01, 60)
    one = hierarchical_bootstrap(_weighted_mean, values, levels=[docs], iters=4000)
    two = np.concatenate([values, values + rng.normal(0, 0.01, 60)])
    seeds, both_docs = np.repeat([1234, 7], 60), np.tile(docs, 2)
    crossed = hierarchical_bootstrap(
        _weighted_mean, two, levels=[seeds, both_docs], iters=4000, crossed=True
    )
    nested = hierarchical_bootstrap(_weighted_mean, two, levels=[seeds, both_docs], iters=4000)

    def width(r):
        return r["ci_high"] - r["ci_low"]

    assert crossed["ci_method"] == "crossed_bootstrap" and crossed["units"] == [2, 20]
    assert crossed["n"] == 20
    assert width(crossed) == pytest.approx(width(one), rel=0.15)
    assert width(nested) < 0.8 * width(one)


def test_the_crossed_bootstrap_covers_a_mean_with_shared_document_effects():
    """Coverage by simulation: 3 seeds x 15 shared documents, document effects (SD 1) shared
    by the seeds, seed effects (SD 0.3): the crossed interval covers the true mean about as
    often as it claims; the nested one, too narrow, far less often."""
    rng = np.random.default_rng(12)
    seeds, docs = np.repeat(np.arange(3), 15), np.tile(np.arange(15), 3)
    trials, crossed_hits, nested_hits = 80, 0, 0
    for trial in range(trials):
        values = rng.normal(0, 1, 15)[docs] + rng.normal(0, 0.3, 3)[seeds]
        values = values + rng.normal(0, 0.2, 45)
        for crossed in (True, False):
            r = hierarchical_bootstrap(
                _weighted_mean, values, levels=[seeds, docs], iters=800, seed=trial,
                crossed=crossed,
            )  # fmt: skip
            hit = r["ci_low"] <= 0 <= r["ci_high"]
            crossed_hits += hit and crossed
            nested_hits += hit and not crossed
    assert crossed_hits / trials > 0.85
    assert nested_hits / trials < crossed_hits / trials - 0.1
