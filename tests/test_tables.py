import json

import pandas as pd
import pytest

from stylemerge.tables import (
    adapters_table,
    bpb_table,
    cost_table,
    diversity_table,
    gsm8k_table,
    lambada_table,
    make_tables,
    merges_table,
    pct_change,
    reported,
    think_table,
)


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


def think(before, after):
    return {
        "heldout_ce_before": {"overall": before, "think_tags": 9.0},
        "heldout_ce_after": {"overall": after, "think_tags": 1.0},
        "steps": 30,
        "frozen_max_abs_change_overall": 0.0,
    }


def test_pct_change():
    assert pct_change(90.37, 100.0) == pytest.approx(-9.63)
    assert pct_change(1.0, 0.0) is None and pct_change(None, 1.0) is None


def test_reported_figures_are_the_cards():
    card = reported()
    assert card["lambada_perplexity_change_vs_base"] == -9.63
    assert card["distinct_1_change_vs_base"] == {"ao3_english": 10.5, "bbc_news": 3.6}
    assert card["gsm8k_3shot_accuracy"] == {"original": 90.0, "optimised": 96.7}


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


def lm_eval(ppl, acc, gsm8k=None, bpb=None, paper=False):
    """An lm_eval.json as evaluate_lm writes it (embedded task names, or the harness's)."""
    lambada = "lambada_openai" if paper else "stylemerge_lambada"
    tasks = {lambada: {"metrics": {"perplexity": {"none": ppl}, "acc": {"none": acc}}}}
    if gsm8k is not None:
        tasks["stylemerge_gsm8k"] = {"metrics": {"exact_match": {"strict-match": gsm8k}}}
    for domain, value in (bpb or {}).items():
        tasks[f"stylemerge_bpb_{domain}"] = {"metrics": {"bits_per_byte": {"none": value}}}
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
    assert frame.iloc[0].to_dict() == {
        "model": "base",
        "bbc_news": 1.2,
        "ao3_english": 1.4,
        "missing": None,
    }


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
    thinks = [result("think", "karcher", think(2.0, 1.9))]
    evals = []
    for model, metrics in (
        ("base", lm_eval(20.0, 0.3, 0.5, {"bbc_news": 1.3})),
        ("karcher", lm_eval(19.0, 0.3, 0.5, {"bbc_news": 1.2})),
        ("think_karcher", lm_eval(19.0, 0.3, 0.6, {"bbc_news": 1.2})),
    ):
        (tmp_path / "eval" / model).mkdir(parents=True)
        evals.append(tmp_path / "eval" / model / "lm_eval.json")
        evals[-1].write_text(json.dumps(metrics))
    frames = make_tables(
        adapters,
        merges,
        thinks,
        evals,
        [],
        tmp_path / "none",
        tmp_path / "tables",
        domains=["bbc_news"],
        figures_dir=tmp_path / "figures",
        chosen="karcher",
        provenance={"seed": 7},
    )
    assert set(frames) == {
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
    assert frames["lambada"].set_index("model").loc[
        "karcher", "ppl_change_vs_base_pct"
    ] == pytest.approx(-5.0)
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
