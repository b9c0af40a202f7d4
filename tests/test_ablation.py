"""The MARA ablation table (stylemerge.report.ablation) on hand-made results."""

import math

import pytest

from stylemerge.core.files import write_json, write_jsonl
from stylemerge.report.ablation import change_difference, judge_family, mara_ablation_table, verdict
from stylemerge.report.tables import diversity_table

PROMPTS = [f"prompt {i}" for i in range(8)]


def adapter(style_after, fluency_after):
    before = {"style_contrast": [0.0] * 8, "fluency_logprob": [-2.0] * 8}
    after = {"style_contrast": style_after, "fluency_logprob": fluency_after}

    def summary(component):
        changes = [a - b for a, b in zip(after[component], before[component], strict=True)]
        mean = sum(changes) / len(changes)
        return {"change": {"mean": mean, "se": 0.01, "n": len(changes)}}

    return {
        "heldout": {c: summary(c) for c in before},
        "heldout_per_prompt": {"before": before, "after": after},
    }


def generations(tmp_path, model, texts_per_prompt):
    directory = tmp_path / model
    write_jsonl(
        directory / "generations.jsonl",
        [
            {
                "domain": "bbc_news",
                "prompt_index": p,
                "prompt": PROMPTS[p],
                "sample_index": k,
                "text": text,
            }
            for p, texts in enumerate(texts_per_prompt)
            for k, text in enumerate(texts)
        ],
    )
    # the per-model values the diversity table copies (not what this table compares)
    value = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_prompts": len(texts_per_prompt)}
    write_json(
        directory / "metrics.json",
        {"domains": {"bbc_news": dict.fromkeys(("distinct_1", "ead_1", "self_diversity"), value)}},
    )
    return directory


def varied(p):  # four samples per prompt, each of distinct words
    return [" ".join(f"w{p}_{k}_{j}" for j in range(6)) for k in range(4)]


def collapsed(p):  # four copies of one sentence
    return ["the same words again and again"] * 4


def test_mara_keeping_diversity_at_no_style_cost_is_reported_as_such(tmp_path):
    adapters = {
        "bbc_news": adapter([0.30, 0.32, 0.28, 0.31, 0.29, 0.30, 0.33, 0.27], [-2.1] * 8),
        "bbc_news-mara": adapter([0.29, 0.33, 0.27, 0.32, 0.30, 0.29, 0.32, 0.28], [-2.3] * 8),
    }
    dirs = {
        "base": generations(tmp_path, "base", [varied(p) for p in range(8)]),
        "domain_bbc_news": generations(tmp_path, "plain", [collapsed(p) for p in range(8)]),
        "domain_bbc_news-mara": generations(tmp_path, "mara", [varied(p) for p in range(8)]),
    }
    table = mara_ablation_table(adapters, dirs, diversity_table(dirs), {}, chosen=None)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["domain"] == "bbc_news" and row["prompts"] == 8
    assert row["distinct_1_mara_vs_plain_pct"] > 100  # collapsed text has far fewer types
    assert row["diversity_verdict"] == "MARA keeps more"
    assert row["distinct_1_vs_base_pct_mara"] == pytest.approx(0.0)
    assert row["distinct_1_vs_base_pct_plain"] < -50
    assert row["style_verdict"] == "no significant cost"
    # the pre-registered criterion: more distinct-1 (Holm over the domain models) and at
    # least half of plain GRPO's style gain (reported.yaml's ablation_family)
    assert row["family"] == "primary" and row["distinct_1_mara_vs_plain_p_holm"] < 0.05
    assert row["style_margin"] == pytest.approx(-0.5 * row["style_change_plain"])
    assert row["style_noninferior"] and row["criterion"] == "met"
    assert row["fluency_mara_minus_plain"] == pytest.approx(-0.2)
    assert row["fluency_mara_minus_plain_ci"] is not None


def test_change_difference_is_paired_over_prompts():
    plain = adapter([0.1 * i for i in range(8)], [-2.0] * 8)
    mara = adapter([0.1 * i - 0.05 for i in range(8)], [-2.0] * 8)
    diff = change_difference(plain, mara, "style_contrast")
    # the prompts differ a lot, the arms by a constant: a paired interval is tight
    assert diff["value"] == pytest.approx(-0.05)
    assert diff["ci_high"] - diff["ci_low"] < 1e-9
    assert verdict(diff, "gain", "cost") == "cost"
    assert change_difference({"heldout": {}}, mara, "style_contrast") is None
    assert verdict(None, "gain", "cost") == "not measured"


def test_prompts_without_a_value_are_left_out_of_both_arms():
    plain = adapter([0.1] * 8, [-2.0] * 8)
    mara = adapter([0.2] * 7 + [math.nan], [-2.0] * 8)
    assert change_difference(plain, mara, "style_contrast")["n"] == 7


def test_each_arms_completion_length_and_share_cut_are_shown(tmp_path):
    adapters = {
        "bbc_news": {**adapter([0.3] * 8, [-2.0] * 8),
                     "completions": {"mean_length": 32.0, "clipped_ratio": 1.0}},
        "bbc_news-mara": {**adapter([0.3] * 8, [-2.0] * 8),
                          "completions": {"mean_length": 27.5, "clipped_ratio": 0.75}},
    }  # fmt: skip
    dirs = {
        "base": generations(tmp_path, "base", [varied(p) for p in range(8)]),
        "domain_bbc_news": generations(tmp_path, "plain", [varied(p) for p in range(8)]),
        "domain_bbc_news-mara": generations(tmp_path, "mara", [varied(p) for p in range(8)]),
    }
    row = mara_ablation_table(adapters, dirs, diversity_table(dirs), {}, chosen=None).iloc[0]
    assert (row["completion_length_plain"], row["completion_length_mara"]) == (32.0, 27.5)
    assert (row["clipped_ratio_plain"], row["clipped_ratio_mara"]) == (1.0, 0.75)


def test_the_arms_difference_resamples_documents_where_recorded():
    """Prompts 0-3 from one document, 4-7 from another: the interval is over 2 documents."""
    plain = adapter([0.1] * 8, [-2.0] * 8)
    mara = adapter([0.2, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0], [-2.0] * 8)
    documents = ["a"] * 4 + ["b"] * 4
    plain["heldout_documents"] = mara["heldout_documents"] = documents
    diff = change_difference(plain, mara, "style_contrast")
    assert diff["ci_method"] == "cluster_bootstrap" and diff["n"] == 2
    assert diff["ci_low"] < 0 < diff["ci_high"]  # one document each way: nothing shown


def family_row(p, style_plain, style_low, unit="domain model", value=5.0):
    return {
        "unit": unit,
        "distinct_1_mara_vs_plain_pct": value,
        "distinct_1_mara_vs_plain_p": p,
        "style_change_plain": style_plain,
        "_style_low": style_low,
    }


def test_the_ablation_family_is_holm_adjusted_with_a_style_margin():
    """Three domain models (p 0.01, 0.04, 0.045: Holm keeps only the first) and the merge
    (secondary, unadjusted); a margin of half plain GRPO's style gain (0.2 -> -0.1)."""
    rows = judge_family(
        [
            family_row(0.01, 0.2, -0.05),  # more distinct-1, style within the margin
            family_row(0.04, 0.2, -0.05),  # p 0.04 alone, 0.08 adjusted
            family_row(0.045, 0.2, -0.15, value=-3.0),
            family_row(0.001, -0.1, 0.0),  # plain GRPO gained no style: no margin
            family_row(0.04, None, None, unit="merge karcher"),
        ],
        {"alpha": 0.05, "retain": 0.5},
    )
    assert [r["distinct_1_mara_vs_plain_p_holm"] for r in rows[:4]] == pytest.approx(
        [0.03, 0.08, 0.08, 0.004]
    )
    assert [r["diversity_verdict"] for r in rows] == [
        "MARA keeps more", "not significant", "not significant", "MARA keeps more",
        "MARA keeps more",  # secondary: its own p, unadjusted
    ]  # fmt: skip
    assert rows[0]["style_margin"] == pytest.approx(-0.1) and rows[0]["style_noninferior"]
    assert rows[2]["style_noninferior"] is False
    assert [r["criterion"] for r in rows] == [
        "met",
        "not met (distinct-1: not significant)",
        "not met (distinct-1: not significant; style below the non-inferiority margin)",
        "not assessable: plain GRPO gained no style (no margin)",
        "secondary (a merge of the domain models: not in the family)",
    ]
    assert [r["family"] for r in rows] == ["primary"] * 4 + ["secondary"]
    assert all("_style_low" not in r for r in rows)
