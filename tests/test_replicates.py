"""Pooling the card's figures over seeds (stylemerge.report.replicates) on hand-made results."""

import math

import numpy as np
import pandas as pd
import pytest
from test_tables import lm_eval, noisy_lls

from stylemerge.evaluate.diversity.scores import distinct_change
from stylemerge.report.replicates import (
    pooled_distinct,
    pooled_frames,
    pooled_lambada,
    seed_summary,
)

DOCUMENTS = [f"bbc_news/{d}" for d in np.repeat(np.arange(6), 4)]  # 6 documents x 4 passages


def seed_evals(shift: float, seed: int) -> dict:
    base = noisy_lls(n=24, seed=1)  # the same held-out passages in every seed
    rng = np.random.default_rng(seed)
    karcher = list(np.asarray(base) + shift + rng.normal(0, 0.02, 24))
    return {
        "base": lm_eval(None, 0.3, lls=base, docs=DOCUMENTS),
        "karcher": lm_eval(None, 0.3, lls=karcher, docs=DOCUMENTS),
    }


def test_seed_summary_counts_the_seeds_that_agree():
    summary = seed_summary(-2.0, {1: -4.0, 7: -1.0, 42: 3.0})
    assert summary["seeds"] == 3 and summary["seeds_same_sign"] == 2
    assert summary["seed_sd"] == pytest.approx(np.std([-4.0, -1.0, 3.0], ddof=1))
    assert summary["seed_estimates"] == "1: -4; 7: -1; 42: +3"


def test_pooled_lambada_is_the_mean_effect_with_each_seeds_own():
    evals = {7: seed_evals(0.1, 7), 11: seed_evals(0.1, 11)}
    [row] = pooled_lambada(evals, "karcher", None)  # one text: the in-domain mirror
    assert row["text"] == "in-domain"
    assert row["vs_base_seeds"] == 2 and row["vs_base_seeds_same_sign"] == 2
    assert row["documents"] == 6 and row["passages"] == 48
    # both seeds gain about 10 % in log-likelihood: perplexity falls about 9.5 %
    assert row["ppl_change_vs_base_pct"] == pytest.approx(100 * math.expm1(-0.1), abs=0.5)
    assert row["vs_base_ci_low_pct"] < row["ppl_change_vs_base_pct"] < row["vs_base_ci_high_pct"]
    assert row["vs_base_p"] < 0.05


def test_two_seeds_of_opposite_sign_pool_to_not_significant():
    evals = {7: seed_evals(0.1, 7), 11: seed_evals(-0.1, 11)}
    for evals_ in evals.values():  # the same passages as out-of-domain text: the card's row
        for result in evals_.values():
            result["tasks"]["stylemerge_lambada_ood"] = result["tasks"]["stylemerge_lambada"]
    row, in_domain = pooled_lambada(evals, "karcher", None)
    assert (row["text"], in_domain["text"]) == ("out-of-domain", "in-domain")
    estimates = row["vs_base_seed_estimates"]
    assert "7: -" in estimates and "11: +" in estimates  # each seed alone: clear, opposite
    assert row["vs_base_ci_low_pct"] < 0 < row["vs_base_ci_high_pct"]
    assert row["vs_base_p"] > 0.05
    frames = pooled_frames(evals, {7: {}, 11: {}}, {7: {}, 11: {}}, "karcher", None)
    from stylemerge.report.claims import card_table
    from stylemerge.report.values import reported

    card = card_table(frames, reported(), "karcher").set_index("claim")
    claim = card.loc["lambada perplexity vs base"]
    assert claim["seeds"] == 2 and claim["verdict"] in ("not significant", "uninformative")
    assert "1 of 2 with the pooled sign" in claim["detail"]


def words(rng, n, vocabulary):
    return " ".join(f"w{int(i)}" for i in rng.integers(0, vocabulary, n))


def diversity_pair(rng, richer: bool):
    """8 prompts (2 per document) x 3 samples; the other model draws from a larger or
    smaller vocabulary than the base."""
    base = [[words(rng, 30, 60) for _ in range(3)] for _ in range(8)]
    other = [[words(rng, 30, 90 if richer else 40) for _ in range(3)] for _ in range(8)]
    return base, other, [str(p // 2) for p in range(8)]


def test_pooled_distinct_of_agreeing_and_of_opposite_seeds():
    rng = np.random.default_rng(0)
    agree = pooled_distinct({s: diversity_pair(rng, True) for s in (1, 2, 3)})
    assert agree["value"] > 0 and agree["ci_low"] > 0 and agree["seeds_same_sign"] == 3
    mixed = pooled_distinct({1: diversity_pair(rng, True), 2: diversity_pair(rng, False)})
    assert mixed["ci_low"] < 0 < mixed["ci_high"] and mixed["p_value"] > 0.05
    # one seed: the pooled value is that seed's length-controlled change
    base, other, documents = diversity_pair(rng, True)
    single = pooled_distinct({1: (base, other, documents)})
    alone = distinct_change(base, other, documents=documents, length_controlled=True)
    assert single["value"] == pytest.approx(100 * alone["value"])


def test_pooled_frames_have_the_columns_the_card_reads():
    frames = pooled_frames({7: seed_evals(0.1, 7)}, {7: {}}, {7: {}}, "karcher", None)
    assert set(frames) == {"lambada", "diversity", "gsm8k_think", "think"}
    assert isinstance(frames["lambada"], pd.DataFrame)
    assert {"ppl_change_vs_base_pct", "vs_base_ci_low_pct", "vs_base_p"} <= set(
        frames["lambada"].columns
    )


def with_data(evals: dict, sha: str) -> dict:
    """Every result of ``evals`` scored on the lambada data file with hash ``sha``."""
    task = {"stylemerge_lambada": {"test": {"sha256": sha}}}
    return {model: {**result, "task_data": task} for model, result in evals.items()}


def test_seeds_scoring_one_data_file_pool_as_crossed_documents():
    """Two seeds on the same passages (one data file): a document counts once, so the pooled
    interval is about as wide as one seed's, not 1/sqrt(2) of it; each seed on a data file of
    its own (problems drawn with the seed): nested, narrower."""
    one = seed_evals(0.1, 7)
    alone = pooled_lambada({7: with_data(one, "a")}, "karcher", None)[0]
    same = {7: with_data(one, "a"), 11: with_data(one, "a")}
    own = {7: with_data(one, "a"), 11: with_data(one, "b")}
    crossed = pooled_lambada(same, "karcher", None)[0]
    nested = pooled_lambada(own, "karcher", None)[0]

    def width(row):
        return row["vs_base_ci_high_pct"] - row["vs_base_ci_low_pct"]

    assert crossed["ppl_change_vs_base_pct"] == pytest.approx(alone["ppl_change_vs_base_pct"])
    assert width(crossed) == pytest.approx(width(alone), rel=0.2)
    assert width(nested) < 0.85 * width(alone)


def arm(style_changes, documents):
    """A GRPO adapter's metrics.json: held-out style and fluency, before and after."""
    n = len(style_changes)
    before = {"style_contrast": [0.0] * n, "fluency_logprob": [-2.0] * n}
    after = {"style_contrast": list(style_changes), "fluency_logprob": [-2.1] * n}
    mean = sum(style_changes) / n
    return {
        "heldout": {"style_contrast": {"change": {"mean": mean, "se": 0.01, "n": n}}},
        "heldout_per_prompt": {"before": before, "after": after},
        "heldout_documents": documents,
    }


def test_the_ablation_pooled_over_seeds_is_judged_by_its_family():
    """Two seeds, one domain: MARA samples from a much richer vocabulary in both (+50 %
    distinct-1 in each seed) and loses 0.03 of plain GRPO's 0.3 style gain: the criterion
    is met; losing 0.25 of it (more than half) is not."""
    from stylemerge.report.replicates import pooled_ablation

    rng = np.random.default_rng(3)
    documents = [str(p // 2) for p in range(8)]
    prompts = [f"prompt {p}" for p in range(8)]
    generations, styles = {}, {}
    for seed in (7, 11):
        base, richer, _ = diversity_pair(rng, True)
        generations[seed] = {
            "domain_bbc_news": {"bbc_news": {"prompts": prompts, "documents": documents,
                                             "samples": base}},
            "domain_bbc_news-mara": {"bbc_news": {"prompts": prompts, "documents": documents,
                                                  "samples": richer}},
        }  # fmt: skip
        styles[seed] = (rng.normal(0.3, 0.02, 8), rng.normal(0, 0.01, 8))

    def pooled(cost):
        adapters = {
            seed: {
                "bbc_news": arm(style, documents),
                "bbc_news-mara": arm(style - cost + noise, documents),
            }
            for seed, (style, noise) in styles.items()
        }
        [row] = pooled_ablation(adapters, generations, chosen=None).to_dict("records")
        return row

    row = pooled(0.03)
    assert row["seeds"] == 2 and row["distinct_1_seeds_same_sign"] == 2
    assert row["distinct_1_mara_vs_plain_pct"] == pytest.approx(50)
    assert row["family"] == "primary" and row["diversity_verdict"] == "MARA keeps more"
    assert row["style_change_plain"] == pytest.approx(0.3, abs=0.02)
    assert row["style_mara_minus_plain"] == pytest.approx(-0.03, abs=0.01)
    assert row["style_margin"] == pytest.approx(-0.5 * row["style_change_plain"])
    assert row["style_noninferior"] and row["criterion"] == "met"
    row = pooled(0.25)
    assert not row["style_noninferior"]
    assert row["criterion"] == "not met (style below the non-inferiority margin)"
