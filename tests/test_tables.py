import json
import math

import numpy as np
import pandas as pd
import pytest

from stylemerge.report.build import RunResults, TableSettings, make_tables
from stylemerge.report.claims import card_table, verdict
from stylemerge.report.tables import (
    adapters_table,
    bpb_table,
    diversity_table,
    gsm8k_table,
    lambada_table,
    merges_table,
    think_table,
)
from stylemerge.report.values import pct_change, reported
from stylemerge.resources.benchmarks import cost_table
from stylemerge.stats.intervals import holm


def summary(before, after, change, se, n=8):
    return {
        "before": {"mean": before, "se": 0.1, "n": n},
        "after": {"mean": after, "se": 0.1, "n": n},
        "change": {"mean": change, "se": se, "n": n},
    }


def adapter(change, se):
    return {
        "heldout": {
            "style_contrast": summary(-0.2, -0.2 + change, change, se),
            "fluency_logprob": summary(-4.5, -4.4, 0.1, 0.05),
        },
        "steps": 60,
    }


def merge(entropies, merged, base, calibration=None):
    inputs = {f"d{i}": {"entropy": e, "loss": 5.0 + i} for i, e in enumerate(entropies)}
    return {
        "method": "karcher",
        "space": "weights",
        "entropy": {
            "inputs": inputs,
            "inputs_mean": sum(entropies) / len(entropies),
            "base": {"entropy": base, "loss": 5.5},
            "merged": {"entropy": merged, "loss": 5.2},
        },
        "calibration": calibration,
    }


def think(before, after, traces=None):
    """A think stage's metrics.json; ``traces``: per held-out trace (nats before, nats
    after, tokens), which then set the overall means."""
    metrics = {
        "heldout_ce_before": {"overall": before, "think_tags": 9.0},
        "heldout_ce_after": {"overall": after, "think_tags": 1.0},
        "steps": 30,
        "frozen_max_abs_change_overall": 0.0,
    }
    if traces is not None:
        tokens = [t for _, _, t in traces]
        for key, column in (("heldout_ce_before", 0), ("heldout_ce_after", 1)):
            nats = [trace[column] for trace in traces]
            metrics[key]["overall"] = sum(nats) / sum(tokens)
            metrics[key]["per_document"] = {"nats": nats, "tokens": tokens}
        metrics["heldout_traces"] = len(traces)
    return metrics


def test_pct_change():
    assert pct_change(90.37, 100.0) == pytest.approx(-9.63)
    assert pct_change(1.0, 0.0) is None and pct_change(None, 1.0) is None


# The card's claims in words, independent of reported.yaml's numbers: lower lambada
# perplexity than the base and than GRPO-Wave, more distinct-1 on its two domains, higher
# gsm8k accuracy with the optimised think rows, lower held-out cross-entropy on the traces.
CLAIMED_DIRECTION = {
    "lambada_perplexity_change_vs_base": -1,
    "lambada_perplexity_change_vs_comparison": -1,
    "distinct_1_change_vs_base.ao3_english": 1,
    "distinct_1_change_vs_base.bbc_news": 1,
    "gsm8k_3shot_accuracy.optimised - original": 1,
    "think_heldout_ce_change": -1,
}
GSM8K_CLAIM = "gsm8k 3-shot accuracy, original -> optimised think tokens (90.0 -> 96.7 %)"


def reported_changes(card) -> dict[str, float]:
    """Each figure of reported.yaml as a change (gsm8k: optimised - original), by path."""
    changes = {}
    for key, value in card.items():
        if key in ("family", "ablation_family"):  # test settings, not figures of the card
            continue
        if key == "gsm8k_3shot_accuracy":
            changes[f"{key}.optimised - original"] = value["optimised"] - value["original"]
        elif isinstance(value, dict):
            changes.update({f"{key}.{name}": figure for name, figure in value.items()})
        else:
            changes[key] = value
    return changes


def test_reported_figures_point_the_way_the_card_claims():
    changes = reported_changes(reported())
    assert {key: math.copysign(1, value) for key, value in changes.items()} == CLAIMED_DIRECTION
    accuracy = reported()["gsm8k_3shot_accuracy"]
    assert 0 <= accuracy["original"] <= 100 and 0 <= accuracy["optimised"] <= 100


def test_every_reported_figure_is_the_card_figure_of_one_claim():
    from stylemerge.report.claims import card_table

    card = reported()
    frame = card_table({}, card, "karcher", comparison="wave")
    figures = dict(zip(frame["claim"], frame["card"], strict=True))
    changes = reported_changes(card)
    expected = {
        "lambada perplexity vs base": changes["lambada_perplexity_change_vs_base"],
        "lambada perplexity vs wave": changes["lambada_perplexity_change_vs_comparison"],
        "distinct-1 vs base, ao3_english": changes["distinct_1_change_vs_base.ao3_english"],
        "distinct-1 vs base, bbc_news": changes["distinct_1_change_vs_base.bbc_news"],
        GSM8K_CLAIM: changes["gsm8k_3shot_accuracy.optimised - original"],
        "think tokens: held-out cross-entropy": changes["think_heldout_ce_change"],
    }
    assert {c: f for c, f in figures.items() if pd.notna(f)} == pytest.approx(expected)
    # the only claims without a figure are the card's "more diverse sampling", in words
    assert all(c.startswith("pairwise diversity") for c, f in figures.items() if pd.isna(f))


def moving(card, factor: float) -> dict[str, pd.DataFrame]:
    """Frames in which the chosen merge moves ``factor`` times each of the card's figures,
    with an interval of +-50 % around it (pairwise diversity: by ``factor`` points)."""

    def around(value):
        return sorted((0.5 * value, 1.5 * value))

    lambada = {"model": "karcher", "passages": 50}
    for prefix, key in (("vs_base", "base"), ("vs_comparison", "comparison")):
        value = factor * card[f"lambada_perplexity_change_vs_{key}"]
        lambada[f"ppl_change_{prefix}_pct"] = value
        lambada[f"{prefix}_ci_low_pct"], lambada[f"{prefix}_ci_high_pct"] = around(value)
    diversity = []
    for domain, figure in card["distinct_1_change_vs_base"].items():
        low, high = around(factor * figure)
        pair_low, pair_high = around(factor)
        diversity.append(
            {"domain": domain, "model": "karcher", "prompts": 16,
             "distinct_1_change_vs_base_pct": factor * figure, "change_ci_low_pct": low,
             "change_ci_high_pct": high, "self_diversity_change_vs_base_pct": factor,
             "self_diversity_change_ci_low_pct": pair_low,
             "self_diversity_change_ci_high_pct": pair_high}
        )  # fmt: skip
    gsm = card["gsm8k_3shot_accuracy"]
    change = factor * (gsm["optimised"] - gsm["original"])
    low, high = around(change)
    think_change = factor * card["think_heldout_ce_change"]
    think_low, think_high = around(think_change)
    return {
        "lambada": pd.DataFrame([lambada]),
        "diversity": pd.DataFrame(diversity),
        "gsm8k_think": pd.DataFrame(
            [
                {
                    "model": "karcher",
                    "problems": 30,
                    "correct_original": 27,
                    "correct_optimised": 29,
                    "change_points": change,
                    "change_ci_low": low,
                    "change_ci_high": high,
                    "mcnemar_p": 0.01,
                }
            ]
        ),
        "think": pd.DataFrame(
            [
                {
                    "model": "karcher",
                    "ce_change_pct": think_change,
                    "ce_change_ci_low_pct": think_low,
                    "ce_change_ci_high_pct": think_high,
                    "heldout_traces": 24,
                }
            ]
        ),
    }


def test_a_result_that_moves_as_the_card_says_agrees_with_every_claim():
    from stylemerge.report.claims import card_table

    card = reported()
    same = card_table(moving(card, 1.0), card, "karcher", comparison="wave")
    assert set(same["verdict"]) == {"agrees"}, same[["claim", "verdict"]]
    assert len(same) == 2 + 2 * len(card["distinct_1_change_vs_base"]) + 2
    other = card_table(moving(card, -1.0), card, "karcher", comparison="wave")
    assert set(other["verdict"]) == {"opposite"}, other[["claim", "verdict"]]


def test_adapters_table_marks_changes_beyond_two_se():
    frame = adapters_table({"b": adapter(0.1, 0.02), "a": adapter(0.03, 0.02)})
    assert list(frame["domain"]) == ["a", "b"]
    assert list(frame["style_change_z"]) == pytest.approx([1.5, 5.0])
    assert list(frame["improved_2se"]) == [False, True]
    assert frame.loc[1, "style_after"] == pytest.approx(-0.1)


def test_merges_table_entropy_change_and_calibration():
    plain = merge([4.0, 5.0], merged=4.05, base=4.8)
    calibrated = merge(
        [4.0, 5.0],
        merged=4.05,
        base=4.8,
        calibration={
            "logit_scale": 0.9,
            "before": {"entropy": 4.05, "loss": 5.2},
            "after": {"entropy": 4.5, "loss": 5.1},
        },
    )
    frame = merges_table({"karcher": plain, "karcher_cal": calibrated})
    assert frame.loc[0, "entropy_change_vs_inputs_pct"] == pytest.approx((4.05 - 4.5) / 4.5 * 100)
    assert frame.loc[0, "loss_inputs_mean"] == pytest.approx(5.5)
    assert pd.isna(frame.loc[0, "entropy_calibrated"])
    assert frame.loc[1, "entropy_calibrated"] == 4.5 and frame.loc[1, "logit_scale"] == 0.9


def test_think_table_percent_change_beside_the_card():
    frame = think_table({"karcher": think(2.0, 1.844)})
    assert frame.loc[0, "ce_change_pct"] == pytest.approx(-7.8)
    assert frame.loc[0, "ce_change_pct_reported"] == -7.8


def test_cost_table_reads_snakemake_benchmarks(tmp_path):
    (tmp_path / "train_adapter").mkdir()
    (tmp_path / "train_adapter" / "bbc_news.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "61.5\t0:01:01\t812.3\t2600\t700\t710\t1\t0\t90\t110.2\n"
    )
    frame = cost_table(tmp_path)
    assert frame.to_dict("records") == [
        {
            "rule": "train_adapter",
            "job": "bbc_news",
            "wall_s": 61.5,
            "max_rss_mb": 812.3,
            "cpu_s": 110.2,
        }
    ]


def test_cost_table_flags_a_job_above_its_memory_request(tmp_path, caplog):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "evaluate_lm").mkdir()
    for job, rss in (("base", 11800.0), ("karcher", 900.0)):
        (tmp_path / "evaluate_lm" / f"{job}.tsv").write_text(
            header + f"10\t0:00:10\t{rss}\t1\t1\t1\t0\t0\t90\t9\n"
        )
    (tmp_path / "build_shards").mkdir()  # a rule that requests no memory: nothing to flag
    (tmp_path / "build_shards" / "notes.tsv").write_text(
        header + "1\t0:00:01\t50\t1\t1\t1\t0\t0\t90\t1\n"
    )
    requests = {"evaluate_lm": {"base": 4000, "karcher": 4000}}
    with caplog.at_level("WARNING", logger="stylemerge.report.tables"):
        frame = cost_table(tmp_path, requests)
    rows = {(r["rule"], r["job"]): r for r in frame.to_dict("records")}
    assert rows[("evaluate_lm", "base")]["mem_mb_requested"] == 4000
    assert rows[("evaluate_lm", "base")]["over_request"]
    assert not rows[("evaluate_lm", "karcher")]["over_request"]
    assert not rows[("build_shards", "notes")]["over_request"]
    assert pd.isna(rows[("build_shards", "notes")]["mem_mb_requested"])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "evaluate_lm base" in warnings[0] and "4000" in warnings[0]


def per_doc(metric, filter_, values, documents=None):
    result = {"doc_id": list(range(len(values))), "values": {metric: {filter_: list(values)}}}
    if documents is not None:
        result["document"] = list(documents)
    return result


def lm_eval(
    ppl, acc, gsm8k=None, bpb=None, paper=False, lls=None, correct=None, bpb_docs=None, docs=None
):
    """An lm_eval.json as evaluate_lm writes it (embedded task names, or the harness's).
    With per-document values (``lls``: lambada targets' log-likelihoods, ``correct``: gsm8k
    0/1 per problem, ``bpb_docs``: {domain: [[log-likelihood, bytes], ...]}), the metrics
    are computed from them as the harness does; without, the result is an older one."""
    lambada = "lambada_openai" if paper else "stylemerge_lambada"
    if lls is not None:
        ppl = math.exp(-sum(lls) / len(lls))
    tasks = {lambada: {"metrics": {"perplexity": {"none": ppl}, "acc": {"none": acc}}}}
    tasks[lambada]["n_samples"] = {"effective": 100 if lls is None else len(lls)}
    if lls is not None:
        tasks[lambada]["per_document"] = per_doc("perplexity", "none", lls, docs)
    if correct is not None:
        gsm8k = sum(correct) / len(correct)
    if gsm8k is not None:
        tasks["stylemerge_gsm8k"] = {
            "metrics": {"exact_match": {"strict-match": gsm8k}},
            "n_samples": {"original": 30, "effective": 30},
        }
    if correct is not None:
        tasks["stylemerge_gsm8k"]["per_document"] = per_doc(
            "exact_match", "strict-match", [float(c) for c in correct]
        )
    for domain, value in (bpb or {}).items():
        tasks[f"stylemerge_bpb_{domain}"] = {"metrics": {"bits_per_byte": {"none": value}}}
    for domain, pairs in (bpb_docs or {}).items():
        value = -sum(p[0] for p in pairs) / sum(p[1] for p in pairs) / math.log(2)
        tasks[f"stylemerge_bpb_{domain}"] = {
            "metrics": {"bits_per_byte": {"none": value}},
            "per_document": per_doc("bits_per_byte", "none", pairs),
        }
    return {"tasks": tasks}


def test_lambada_change_vs_base_and_comparison():
    evals = {
        "base": lm_eval(20.0, 0.30),
        "karcher": lm_eval(18.074, 0.35),
        "wave": lm_eval(18.673, 0.33),
    }
    frame = lambada_table(evals, comparison="wave").set_index("model")
    assert frame.loc["karcher", "ppl_change_vs_base_pct"] == pytest.approx(-9.63)
    assert frame.loc["karcher", "ppl_change_vs_comparison_pct"] == pytest.approx(-3.2078, abs=1e-3)
    assert frame.loc["base", "ppl_change_vs_base_pct"] == 0.0
    assert frame.loc["karcher", "reported_vs_base_pct"] == -9.63
    assert frame.loc["karcher", "acc"] == 0.35
    paper = lambada_table(
        {"base": lm_eval(10.0, 0.6, paper=True), "m": lm_eval(9.0, 0.6, paper=True)}
    )
    assert paper.set_index("model").loc["m", "ppl_change_vs_base_pct"] == pytest.approx(-10.0)
    assert paper["ppl_change_vs_comparison_pct"].isna().all()


def test_gsm8k_original_vs_optimised_think_tokens():
    evals = {"karcher": lm_eval(1, 0, gsm8k=0.9), "think_karcher": lm_eval(1, 0, gsm8k=0.967)}
    frame = gsm8k_table(evals, {"karcher": "think_karcher"})
    row = frame.iloc[0]
    assert (row["accuracy_original"], row["accuracy_optimised"]) == pytest.approx((90.0, 96.7))
    assert row["change_points"] == pytest.approx(6.7)
    assert (row["reported_original"], row["reported_optimised"]) == (90.0, 96.7)


def test_bits_per_byte_per_model_and_domain():
    evals = {"base": lm_eval(1, 0, bpb={"bbc_news": 1.2, "ao3_english": 1.4})}
    frame = bpb_table(evals, ["bbc_news", "ao3_english", "missing"])
    assert frame.iloc[0][["model", "bbc_news", "ao3_english", "missing"]].to_dict() == {
        "model": "base",
        "bbc_news": 1.2,
        "ao3_english": 1.4,
        "missing": None,
    }
    assert frame.iloc[0][["bbc_news_ci_low", "missing_ci_high"]].isna().all()  # older result


def test_make_tables_writes_csv_markdown_and_latex(tmp_path):
    def result(kind, name, metrics):
        path = tmp_path / kind / name
        path.mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps(metrics))
        return path

    adapters = [result("adapters", "bbc_news", adapter(0.1, 0.02))]
    pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.2]}).to_csv(
        adapters[0] / "log_history.csv", index=False
    )
    merges = [result("merges", "karcher", merge([4.0, 5.0], 4.4, 4.8))]
    thinks = [result("think", "karcher", think(2.0, 1.9, [(20.0, 19.0, 10), (18.0, 17.2, 9)]))]
    evals = []
    base_lls = noisy_lls(n=50, seed=8)
    for model, metrics in (
        ("base", lm_eval(None, 0.3, None, {"bbc_news": 1.3}, lls=base_lls, correct=[1, 0] * 3)),
        ("karcher", lm_eval(19.0, 0.3, 0.5, {"bbc_news": 1.2})),  # an older result
        ("think_karcher", lm_eval(19.0, 0.3, 0.6, {"bbc_news": 1.2})),
    ):
        (tmp_path / "eval" / model).mkdir(parents=True)
        evals.append(tmp_path / "eval" / model / "lm_eval.json")
        evals[-1].write_text(json.dumps(metrics))
    frames = make_tables(
        RunResults(adapters, merges, thinks, evals, [], tmp_path / "none"),
        TableSettings(domains=["bbc_news"], chosen="karcher"),
        tmp_path / "tables",
        figures_dir=tmp_path / "figures",
        provenance={"seed": 7},
    )
    assert list(frames)[0] == "card"
    assert set(frames) == {
        "card",
        "diversity",
        "adapters",
        "merges",
        "think",
        "cost",
        "lambada",
        "gsm8k_think",
        "bits_per_byte",
    }
    assert frames["gsm8k_think"].iloc[0]["change_points"] == pytest.approx(10.0)
    base_ppl = math.exp(-sum(base_lls) / len(base_lls))
    assert frames["lambada"].set_index("model").loc[
        "karcher", "ppl_change_vs_base_pct"
    ] == pytest.approx(pct_change(19.0, base_ppl))
    card = frames["card"].set_index("claim")
    assert card.loc["lambada perplexity vs base", "verdict"] == "not measured"  # older result
    assert card.loc["think tokens: held-out cross-entropy", "n"] == 2
    assert card.loc["think tokens: held-out cross-entropy", "ours"] == pytest.approx(
        pct_change(36.2 / 19, 38.0 / 19)
    )
    assert (tmp_path / "tables" / "card.md").read_text().startswith("The model card's claims")
    for name in frames:
        for suffix in (".csv", ".md", ".tex"):
            assert (tmp_path / "tables" / f"{name}{suffix}").is_file()
    again = pd.read_csv(tmp_path / "tables" / "adapters.csv")
    assert again.loc[0, "domain"] == "bbc_news" and bool(again.loc[0, "improved_2se"])
    assert "bbc_news" in (tmp_path / "tables" / "adapters.md").read_text()
    assert json.loads((tmp_path / "tables" / "provenance.json").read_text()) == {"seed": 7}
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "reward_curves.png",
        "perplexity_by_model.png",
        "style_fluency.png",  # the adapters table
        "bits_per_byte.png",
    }


def test_diversity_table_pairs_models_on_the_same_prompts(tmp_path):
    def write(model, samples):
        out = tmp_path / model / "diversity"
        out.mkdir(parents=True)
        lines = [
            json.dumps(
                {
                    "domain": "bbc_news",
                    "prompt_index": p,
                    "prompt": f"prompt {p}",
                    "sample_index": k,
                    "text": text,
                }
            )
            for p, group in enumerate(samples)
            for k, text in enumerate(group)
        ]
        (out / "generations.jsonl").write_text("\n".join(lines) + "\n")
        value = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
        metrics = {
            "domains": {"bbc_news": {"distinct_1": value, "ead_1": value, "self_diversity": value}}
        }
        (out / "metrics.json").write_text(json.dumps(metrics))
        return out

    base = write("base", [["a a b", "a b b"], ["c c d", "c d d"], ["e e f", "e f f"]])
    merged = write("karcher", [["a b g", "a b h"], ["c d i", "c d j"], ["e f k", "e f l"]])
    frame = diversity_table({"base": base, "karcher": merged}).set_index("model")
    # base: 6 distinct of 18 tokens; merged: 12 distinct of 18 -> +100 %
    assert frame.loc["karcher", "distinct_1_change_vs_base_pct"] == pytest.approx(100.0)
    assert frame.loc["base", "distinct_1_change_vs_base_pct"] == pytest.approx(0.0)
    assert frame.loc["karcher", "reported_change_pct"] == 3.6
    low, high = frame.loc["karcher", ["change_ci_low_pct", "change_ci_high_pct"]]
    assert low <= 100.0 <= high


def noisy_lls(n=200, shift=0.0, seed=0, base=None):
    """Per-passage target log-likelihoods: a wide spread across passages (common to every
    model when ``base`` is given) plus a small model-specific part."""
    rng = np.random.default_rng(seed)
    common = rng.normal(-3.0, 1.5, n) if base is None else np.asarray(base)
    return list(common + shift + rng.normal(0, 0.05, n))


def test_lambada_paired_intervals_over_passages(caplog):
    base = noisy_lls(seed=1)
    evals = {
        "base": lm_eval(None, 0.3, lls=base),
        "karcher": lm_eval(None, 0.35, lls=noisy_lls(shift=0.1, seed=2, base=base)),
        "wave": lm_eval(None, 0.3, lls=noisy_lls(shift=0.07, seed=3, base=base)),
        "old": lm_eval(18.0, 0.3),  # written before per-document values were kept
    }
    frame = lambada_table(evals, comparison="wave").set_index("model")
    karcher = frame.loc["karcher"]
    # the paired change: exp(mean(ll_base - ll_karcher)) - 1, about -9.5 %
    diff = np.asarray(base) - np.asarray(evals["karcher"]["tasks"]["stylemerge_lambada"][
        "per_document"]["values"]["perplexity"]["none"])  # fmt: skip
    assert karcher["ppl_change_vs_base_pct"] == pytest.approx(100 * math.expm1(diff.mean()))
    low, high = karcher["vs_base_ci_low_pct"], karcher["vs_base_ci_high_pct"]
    assert low < karcher["ppl_change_vs_base_pct"] < high < 0
    se = 100 * diff.std(ddof=1) / math.sqrt(len(diff))  # the passages' spread cancels
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert karcher["vs_comparison_ci_low_pct"] < karcher["ppl_change_vs_comparison_pct"] < 0
    assert karcher["passages"] == 200
    assert karcher["perplexity_ci_low"] < karcher["perplexity"] < karcher["perplexity_ci_high"]
    # an older result keeps its point values, without intervals, and says why
    assert frame.loc["old", "perplexity"] == 18.0 and frame.loc["old", "passages"] == 100
    assert frame.loc["old", ["perplexity_ci_low", "vs_base_ci_low_pct"]].isna().all()
    assert "old: stylemerge_lambada has no per-document values" in caplog.text


def test_lambada_intervals_resample_the_documents_passages_were_cut_from():
    """Eight passages from each of 12 documents, the model's gain varying by document: the
    interval is over documents (n = 12), wider than one that takes the 96 passages as
    independent."""
    rng = np.random.default_rng(4)
    documents = [f"ao3_english/{d}" for d in np.repeat(np.arange(12), 8)]
    base = noisy_lls(n=96, seed=5)
    gain = rng.normal(0.1, 0.15, 12).repeat(8)
    other = list(np.asarray(base) + gain + rng.normal(0, 0.02, 96))
    clustered = lambada_table(
        {"base": lm_eval(None, 0.3, lls=base, docs=documents),
         "karcher": lm_eval(None, 0.3, lls=other, docs=documents)}
    ).set_index("model").loc["karcher"]  # fmt: skip
    flat = (
        lambada_table(
            {"base": lm_eval(None, 0.3, lls=base), "karcher": lm_eval(None, 0.3, lls=other)}
        )
        .set_index("model")
        .loc["karcher"]
    )
    assert (clustered["documents"], clustered["passages"]) == (12, 96)
    assert (flat["documents"], flat["passages"]) == (96, 96)
    assert clustered["ppl_change_vs_base_pct"] == pytest.approx(flat["ppl_change_vs_base_pct"])
    width = clustered["vs_base_ci_high_pct"] - clustered["vs_base_ci_low_pct"]
    assert width > 2 * (flat["vs_base_ci_high_pct"] - flat["vs_base_ci_low_pct"])


def with_out_of_domain(result: dict, lls: list) -> dict:
    """``result`` with an out-of-domain lambada task (stylemerge_lambada_ood) beside its own."""
    ood = lm_eval(None, 0.3, lls=lls)["tasks"]["stylemerge_lambada"]
    return {"tasks": {**result["tasks"], "stylemerge_lambada_ood": ood}}


def test_lambada_rows_per_text_and_the_card_reads_the_out_of_domain_one():
    """In-domain text gains 30 %, out-of-domain text 2 %: the table shows both, labelled; the
    card's lambada_openai claim (book text no adapter trained on) reads the out-of-domain
    row, and without one the in-domain row is not comparable, outside the Holm family."""
    base, ood_base = noisy_lls(seed=1), noisy_lls(seed=6)
    evals = {
        "base": with_out_of_domain(lm_eval(None, 0.3, lls=base), ood_base),
        "karcher": with_out_of_domain(
            lm_eval(None, 0.3, lls=noisy_lls(shift=0.36, seed=2, base=base)),
            noisy_lls(shift=0.02, seed=3, base=ood_base),
        ),
    }
    frame = lambada_table(evals)
    assert list(zip(frame["text"], frame["model"], strict=True)) == [
        ("out-of-domain", "base"), ("out-of-domain", "karcher"),
        ("in-domain", "base"), ("in-domain", "karcher"),
    ]  # fmt: skip
    change = frame.set_index(["text", "model"])["ppl_change_vs_base_pct"]
    assert change["out-of-domain", "karcher"] == pytest.approx(-2, abs=0.5)
    assert change["in-domain", "karcher"] == pytest.approx(-30, abs=1)
    card = card_table({"lambada": frame}, reported(), "karcher").set_index("claim")
    claim = card.loc["lambada perplexity vs base"]
    assert claim["ours"] == change["out-of-domain", "karcher"]
    assert claim["verdict"] != "not comparable" and claim["p_holm"] is not None
    assert claim["detail"].startswith("out-of-domain text")
    in_domain = frame[frame["text"] == "in-domain"]
    claim = (
        card_table({"lambada": in_domain}, reported(), "karcher")
        .set_index("claim")
        .loc["lambada perplexity vs base"]
    )
    assert claim["ours"] == change["in-domain", "karcher"] and claim["verdict"] == "not comparable"
    assert pd.isna(claim["p_holm"]) and "no out-of-domain row" in claim["detail"]


def test_gsm8k_wilson_intervals_and_exact_mcnemar():
    before = [1] * 27 + [0] * 3  # the card's 90.0 -> 96.7 %: 27/30 -> 29/30
    after = [1] * 29 + [0]
    evals = {
        "karcher": lm_eval(1, 0, correct=before),
        "think_karcher": lm_eval(1, 0, correct=after),
    }
    row = gsm8k_table(evals, {"karcher": "think_karcher"}).iloc[0]
    assert (row["correct_original"], row["correct_optimised"], row["problems"]) == (27, 29, 30)
    assert (row["mcnemar_b"], row["mcnemar_c"]) == (0, 2)
    assert row["mcnemar_p"] == pytest.approx(0.5)  # 2 of 2 discordant: P = 2 * 0.5**2
    assert row["original_ci_low"] == pytest.approx(74.38, abs=0.01)  # Wilson, 27/30
    assert row["original_ci_high"] == pytest.approx(96.54, abs=0.01)
    assert row["change_ci_low"] == 0.0 and row["change_ci_high"] > row["change_points"]
    # an older result: Wilson from the accuracy and the number of problems, no pairing
    old = gsm8k_table(
        {"karcher": lm_eval(1, 0, gsm8k=0.9), "think_karcher": lm_eval(1, 0, gsm8k=29 / 30)},
        {"karcher": "think_karcher"},
    ).iloc[0]
    assert old["original_ci_low"] == pytest.approx(row["original_ci_low"])
    assert pd.isna(old["mcnemar_p"]) and pd.isna(old["change_ci_low"])


def test_bits_per_byte_interval_over_documents():
    rng = np.random.default_rng(4)
    pairs = [[-float(b) * rng.uniform(0.6, 0.8), float(b)] for b in rng.integers(200, 900, 40)]
    row = bpb_table({"base": lm_eval(1, 0, bpb_docs={"bbc_news": pairs})}, ["bbc_news"]).iloc[0]
    assert row["bbc_news"] == pytest.approx(0.7 / math.log(2), rel=0.05)
    assert row["bbc_news_ci_low"] < row["bbc_news"] < row["bbc_news_ci_high"]
    assert row["bbc_news_ci_high"] - row["bbc_news_ci_low"] < 0.1


def test_think_change_has_a_paired_interval_over_traces(caplog):
    rng = np.random.default_rng(6)
    traces = [(n, n * 0.92 + rng.normal(0, 1), t) for t in rng.integers(50, 200, 24)
              for n in [float(t) * rng.uniform(1.5, 2.5)]]  # fmt: skip
    frame = think_table({"karcher": think(0, 0, traces), "old": think(2.0, 1.9)})
    row = frame.set_index("model").loc["karcher"]
    assert row["ce_change_pct"] == pytest.approx(-8.0, abs=0.5)
    assert row["ce_change_ci_low_pct"] < row["ce_change_pct"] < row["ce_change_ci_high_pct"] < 0
    assert row["heldout_traces"] == 24
    assert frame.set_index("model").loc["old", ["ce_change_ci_low_pct"]].isna().all()
    assert "think/old: think held-out cross-entropy has no per-document values" in caplog.text


@pytest.mark.parametrize(
    "card,value,low,high,significant,expected",
    [
        (-9.63, -5.0, -8.0, -2.0, None, "agrees"),
        (-9.63, 4.0, 1.0, 7.0, None, "opposite"),
        (10.5, -3.0, -9.0, 3.0, None, "not significant"),
        (10.5, 0.0, 0.0, 0.0, None, "not significant"),
        (-3.21, None, None, None, None, "not measured"),
        (-3.21, -2.0, None, None, None, "not measured"),  # an older result: no interval
        (None, -2.0, -3.0, -1.0, None, "not measured"),  # the card has no sign
        (6.7, 6.7, 0.0, 16.7, False, "not significant"),  # McNemar p >= 0.05
        (6.7, 20.0, 10.0, 30.0, True, "agrees"),
    ],
)
def test_verdicts(card, value, low, high, significant, expected):
    assert verdict(card, value, low, high, significant) == expected


def card_frames():
    """Hand-made frames, one claim per verdict."""
    lambada = pd.DataFrame(
        [
            {"model": "karcher", "ppl_change_vs_base_pct": -5.0, "vs_base_ci_low_pct": -8.0,
             "vs_base_ci_high_pct": -2.0, "ppl_change_vs_comparison_pct": 2.0,
             "vs_comparison_ci_low_pct": 1.0, "vs_comparison_ci_high_pct": 3.0, "passages": 63},
        ]
    )  # fmt: skip
    diversity = pd.DataFrame(
        [
            {"domain": "ao3_english", "model": "karcher", "distinct_1_change_vs_base_pct": -7.3,
             "change_ci_low_pct": -17.1, "change_ci_high_pct": 2.6, "prompts": 16,
             "self_diversity_change_vs_base_pct": 4.0, "self_diversity_change_ci_low_pct": 2.0,
             "self_diversity_change_ci_high_pct": 6.0},
            # narrow enough to have seen the card's +3.6 %: not significant says something
            {"domain": "bbc_news", "model": "karcher", "distinct_1_change_vs_base_pct": -0.5,
             "change_ci_low_pct": -1.5, "change_ci_high_pct": 0.5, "prompts": 16,
             "self_diversity_change_vs_base_pct": 0.1, "self_diversity_change_ci_low_pct": -0.5,
             "self_diversity_change_ci_high_pct": 0.7},
        ]
    )  # fmt: skip
    gsm8k = pd.DataFrame(
        [
            {"model": "karcher", "problems": 30, "correct_original": 27, "correct_optimised": 29,
             "change_points": 6.67, "change_ci_low": 0.0, "change_ci_high": 16.7,
             "mcnemar_p": 0.5},
        ]
    )  # fmt: skip
    thinks = pd.DataFrame(
        [{"model": "karcher", "ce_change_pct": -7.0, "ce_change_ci_low_pct": None,
          "ce_change_ci_high_pct": None, "heldout_traces": 24}]
    )  # fmt: skip
    return {"lambada": lambada, "diversity": diversity, "gsm8k_think": gsm8k, "think": thinks}


def test_holm_turns_a_lone_nominal_result_into_not_significant():
    """Seven claims of the family at p about 0.2 and one at 0.03: alone it would be
    'agrees', adjusted for eight claims it is not."""
    from stylemerge.report.claims import card_table

    frames = moving(reported(), 1.0)
    frames["lambada"]["vs_base_p"] = 0.03
    frames["lambada"]["vs_comparison_p"] = 0.2
    for column in ("change_p", "self_diversity_change_p"):
        frames["diversity"][column] = 0.2
    frames["gsm8k_think"]["mcnemar_p"] = 0.2
    frames["think"]["ce_change_p"] = 0.2
    rows = card_table(frames, reported(), "karcher", comparison="wave").set_index("claim")
    row = rows.loc["lambada perplexity vs base"]
    assert row["p"] == 0.03 and row["p_holm"] == pytest.approx(0.24)
    assert row["verdict"] == "not significant"
    unadjusted = card_table(
        frames, {**reported(), "family": {"alpha": 0.05, "power": 0.8, "claims": ["x"]}},
        "karcher", comparison="wave",
    ).set_index("claim")  # fmt: skip
    assert unadjusted.loc["lambada perplexity vs base", "verdict"] == "agrees"


def test_think_rows_added_by_the_run_are_not_comparable_and_a_floor_is_uninformative():
    from stylemerge.report.claims import card_table

    frames = moving(reported(), 1.0)
    frames["think"]["tags_added"] = True
    frames["gsm8k_think"] = frames["gsm8k_think"].assign(
        correct_original=0, correct_optimised=0, problems=24, change_points=0.0,
        change_ci_low=0.0, change_ci_high=0.0, mcnemar_p=1.0,
    )  # fmt: skip
    rows = card_table(frames, reported(), "karcher", comparison="wave").set_index("claim")
    think = rows.loc["think tokens: held-out cross-entropy"]
    assert think["verdict"] == "not comparable" and "added the <think> tokens" in think["detail"]
    assert pd.isna(think["p_holm"])  # not part of the tested family
    gsm = rows[rows.index.str.startswith("gsm8k")].iloc[0]
    assert gsm["verdict"] == "uninformative" and "floor" in gsm["detail"]
    # near the floor: 1/24 -> 1/24, no discordant problem, a zero-width interval
    frames["gsm8k_think"] = frames["gsm8k_think"].assign(correct_original=1, correct_optimised=1)
    rows = card_table(frames, reported(), "karcher", comparison="wave").set_index("claim")
    gsm = rows[rows.index.str.startswith("gsm8k")].iloc[0]
    assert gsm["verdict"] == "uninformative" and "zero-width interval" in gsm["detail"]


def test_card_table_one_row_per_claim_with_its_verdict():
    from stylemerge.report.claims import card_table

    frame = card_table(card_frames(), reported(), "karcher", comparison="wave")
    verdicts = dict(zip(frame["claim"], frame["verdict"], strict=True))
    assert verdicts == {
        "lambada perplexity vs base": "agrees",
        "lambada perplexity vs wave": "opposite",
        # could not have detected the card's +10.5 % (interval +-9.85: detects 14.1)
        "distinct-1 vs base, ao3_english": "uninformative",
        "distinct-1 vs base, bbc_news": "not significant",
        "pairwise diversity (1 - self-BLEU) vs base, ao3_english": "agrees",
        "pairwise diversity (1 - self-BLEU) vs base, bbc_news": "not significant",
        "gsm8k 3-shot accuracy, original -> optimised think tokens (90.0 -> 96.7 %)":
            "uninformative",
        "think tokens: held-out cross-entropy": "not measured",  # no interval
    }  # fmt: skip
    rows = frame.set_index("claim")
    assert rows.loc["lambada perplexity vs base", "card"] == -9.63
    assert rows.loc["lambada perplexity vs base", "n"] == 63
    gsm = rows.iloc[6]
    assert gsm["card"] == pytest.approx(6.7) and gsm["unit"] == "points"
    assert "27/30 -> 29/30" in gsm["detail"] and "McNemar p = 0.5" in gsm["detail"]
    assert "no interval" in rows.loc["think tokens: held-out cross-entropy", "detail"]
    ao3 = rows.loc["distinct-1 vs base, ao3_english"]
    assert "smallest change this run detects (14.1 %" in ao3["detail"]
    assert ao3["card_in_interval"] == "outside"  # +10.5 is outside [-17.1, +2.6]
    assert rows.loc["lambada perplexity vs base", "card_in_interval"] == "outside"
    assert gsm["card_in_interval"] == "inside" and gsm["p"] == 0.5
    # the family's p-values are Holm-adjusted: 7 tested claims (the think row has no interval)
    tested = frame.dropna(subset=["p_holm"])
    assert len(tested) == 7
    assert list(tested["p_holm"]) == pytest.approx(holm(list(tested["p"])))
    # no comparison model: that claim is not measured, and says why
    alone = card_table(card_frames(), reported(), "karcher").set_index("claim")
    row = alone.loc["lambada perplexity vs the comparison model"]
    assert row["verdict"] == "not measured" and "no comparison model" in row["detail"]
