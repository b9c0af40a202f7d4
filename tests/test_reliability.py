"""Reliability: bad input fails with a clear error naming the file or key and loses nothing
already computed; weights load from safetensors only, repository code runs only when the
config allows it, secrets stay out of config and results, and config names cannot make
output paths escape results/.

Several items of this list are tested where their stage is (listed in each section); this
module holds the rest.
"""

import inspect
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import PRETRAIN, ROOT, TINY, write_jsonl
from stylemerge.core.files import DataError
from stylemerge.core.job import JobSettings
from stylemerge.data.shards import DomainShards
from stylemerge.models.reference import ModelError, load_model, load_tokenizer
from stylemerge.workflow.config import ConfigError, validate_config

SECRET = "hf_reliabilityTestSecret0123456789"


def rejected(config, schema_path) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema_path)
    return str(err.value)


# --- bad input: data ----------------------------------------------------------------------------
# Tested in test_shards.py: malformed JSONL line, missing or non-string text field, non-UTF-8
# bytes in a JSONL line (file:line) and in a text file (file and byte offset), an empty domain
# after filtering (and no manifest written), long documents truncated to shards.max_chars and
# counted in the manifest.


def test_a_failed_rebuild_keeps_the_previous_shards(tmp_path, shard_settings):
    from stylemerge.data.shards import build_shards

    source = tmp_path / "docs.jsonl"
    write_jsonl(source, [{"text": f"document number {i} with some text"} for i in range(30)])
    spec = {"type": "local", "paths": [str(source)], "format": "auto", "text_field": "text"}
    out = tmp_path / "out"
    paths = (out / "train.jsonl", out / "heldout.jsonl", out / "manifest.json")
    build_shards(spec, "d", shard_settings, *paths)
    before = {p.name: p.read_bytes() for p in paths}

    with source.open("a", encoding="utf-8") as fh:  # one bad line appended to the source
        fh.write('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"docs\.jsonl:32: malformed JSON"):
        build_shards(spec, "d", shard_settings, *paths)
    assert {p.name: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no partial files


# --- bad input: config --------------------------------------------------------------------------
# Tested in test_config.py: unknown keys with a suggestion, wrong types, an unknown reward
# name (test_unknown_reward_is_named), unknown GRPOConfig fields.


def test_unknown_merge_method_is_named_at_validation(schema_path):
    config = {"merge": {"variants": {"karcher": {"method": "karcherr"}}}}
    message = rejected(config, schema_path)
    assert "config key 'merge.variants.karcher.method': 'karcherr' is not one of" in message
    assert "did you mean 'karcher'?" in message


def test_schema_lists_exactly_the_merge_methods(schema_path):
    from stylemerge.merge.run import METHODS, SPACES

    schema = yaml.safe_load(schema_path.read_text())
    variant = schema["$defs"]["merge"]["properties"]["variants"]["additionalProperties"]
    assert set(variant["properties"]["method"]["enum"]) == set(METHODS)
    assert set(variant["properties"]["space"]["enum"]) == set(SPACES)


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"merge": {"chosen": "karcher_delta"}},
            "config key 'merge.chosen': 'karcher_delta' is not one of merge.variants",
        ),
        (
            # the default `chosen` (karcher) must be among the variants the user lists
            {"merge": {"variants": {"ties": {"method": "ties", "space": "deltas"}}}},
            "config key 'merge.chosen': 'karcher' is not one of merge.variants (ties)",
        ),
        (
            {"evaluate": {"comparisons": {"wave": "org/model"}, "comparison": "wav"}},
            "config key 'evaluate.comparison': 'wav' is not one of evaluate.comparisons (wave)",
        ),
    ],
)
def test_keys_naming_another_keys_entry_are_checked_at_validation(config, expected, schema_path):
    assert expected in rejected(config, schema_path)


# --- bad input: an adapter trained on another base ------------------------------------------


MERGE_SETTINGS = {"dtype": "float32", "entropy_blocks": 2, "entropy_seq_len": 16}


def make_adapter(model_dir, out):
    """A LoRA adapter on the model at ``model_dir`` (peft records that directory)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(load_model(model_dir), lora).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base_adapter(tiny_base, tmp_path_factory):
    return make_adapter(tiny_base, tmp_path_factory.mktemp("adapter") / "adapter")


def test_adapter_applies_to_its_own_base_however_the_path_is_written(
    base_adapter, tiny_base, shards, tmp_path
):
    from stylemerge.merge.run import apply_adapter

    recorded = json.loads((base_adapter / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(tiny_base)
    metrics = apply_adapter(
        JobSettings(),
        f"{tiny_base}/",
        base_adapter,
        shards["heldout"],
        tmp_path / "m",
        MERGE_SETTINGS,
    )
    assert math.isfinite(metrics["heldout"]["loss"])
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_adapter_of_another_base_is_refused_naming_both(
    base_adapter, tiny_base, tiny_general_proxy, shards, tmp_path
):
    from stylemerge.merge.run import apply_adapter

    # the general proxy's layers have the same shapes as the base's: peft alone would
    # merge the adapter into it without a word
    with pytest.raises(ModelError) as err:
        apply_adapter(
            JobSettings(),
            tiny_general_proxy,
            base_adapter,
            shards["heldout"],
            tmp_path / "m",
            MERGE_SETTINGS,
        )
    message = str(err.value)
    assert str(base_adapter) in message
    assert f"trained on base '{tiny_base}', not on '{tiny_general_proxy}'" in message
    assert not (tmp_path / "m").exists()


def test_adapter_whose_shapes_do_not_fit_the_base_is_refused_naming_both(
    tiny_base, shards, tmp_path
):
    from transformers import AutoTokenizer

    from stylemerge.merge.run import apply_adapter
    from stylemerge.models.reference import build_tiny_model

    # the adapter is trained on a wider model in `base`; then `base` is rebuilt narrower
    base = tmp_path / "base"
    wide = build_tiny_model(AutoTokenizer.from_pretrained(tiny_base), {**TINY, "hidden_size": 64})
    wide.save_pretrained(base)
    adapter = make_adapter(base, tmp_path / "adapter")
    shutil.rmtree(base)
    shutil.copytree(tiny_base, base)

    with pytest.raises(ModelError) as err:
        apply_adapter(
            JobSettings(), base, adapter, shards["heldout"], tmp_path / "m", MERGE_SETTINGS
        )
    message = str(err.value)
    assert f"{adapter}: the adapter does not fit base '{base}'" in message
    assert "size mismatch" in message
    assert not (tmp_path / "m").exists()


def test_a_directory_that_is_not_an_adapter_is_named(tiny_base, shards, tmp_path):
    from stylemerge.merge.run import apply_adapter

    (tmp_path / "adapter").mkdir()
    with pytest.raises(ModelError, match=r"adapter: no adapter_config\.json"):
        apply_adapter(
            JobSettings(), tiny_base, tmp_path / "adapter", shards["heldout"], tmp_path / "m", {}
        )


# --- bad input: think tags a tokenizer cannot hold as single tokens ---------------------------
# Tested in test_think.py: test_tags_that_stay_several_tokens_are_refused.


# --- bad input: NaN loss or reward --------------------------------------------------------------
# Tested in test_think.py: test_a_nan_loss_stops_with_its_step (the think-token loop).


def test_a_nan_loss_in_trainer_training_stops_with_its_step(tiny_base, shards):
    """Pretraining and the style proxies (transformers' Trainer): a loss that turns NaN
    stops the run with the step and the value (Trainer's default logs the running average
    in its place).  An infinite learning rate makes every weight inf or NaN after step 1."""
    from stylemerge.core.training import fit_causal_lm, pack
    from stylemerge.data.shards import shard_texts

    tokenizer = load_tokenizer(tiny_base)
    blocks = pack(tokenizer, shard_texts(shards["train"]), 32)
    settings = {**PRETRAIN, "steps": 6, "learning_rate": math.inf, "warmup_steps": 0}
    with pytest.raises(FloatingPointError, match=r"^loss is nan, .* at step 2: training diverged"):
        fit_causal_lm(
            load_model(tiny_base), blocks, {"heldout": blocks[:4]}, settings, JobSettings(seed=1)
        )


def test_the_callback_watches_each_grpo_reward():
    from transformers import TrainerState

    from stylemerge.core.training import StopOnNonFinite

    state = TrainerState(global_step=7)
    StopOnNonFinite().on_log(None, state, None, logs={"rewards/style_contrast/std": math.nan})
    with pytest.raises(FloatingPointError, match="rewards/style_contrast/mean is nan at step 7"):
        StopOnNonFinite().on_log(
            None, state, None, logs={"reward": 0.1, "rewards/style_contrast/mean": math.nan}
        )


def test_a_proxy_with_broken_logits_stops_instead_of_scoring_invalid(bbc_proxy, tiny_base):
    from stylemerge.grpo.rewards import ProxyScorer, build_rewards

    broken = load_model(bbc_proxy)
    with torch.no_grad():
        broken.model.norm.weight.fill_(math.nan)
    domain = ProxyScorer(broken, load_tokenizer(bbc_proxy))
    general = ProxyScorer(load_model(bbc_proxy), load_tokenizer(bbc_proxy))
    funcs, _ = build_rewards({"style_contrast": {"weight": 1.0}}, domain, general)
    # blank completions are still just invalid, not an error
    assert funcs[0](prompts=["a"], completions=["  "]) == [-1.0]
    with pytest.raises(FloatingPointError) as err:
        funcs[0](prompts=["The council said"], completions=[" it would act."])
    message = str(err.value)
    assert "reward style_contrast outside training (held-out evaluation)" in message
    assert f"proxy {bbc_proxy}: log-probability is nan on a completion of" in message


def test_a_nan_reward_stops_grpo_with_its_step_and_keeps_the_checkpoints(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, monkeypatch
):
    from test_grpo import SETTINGS

    from stylemerge.grpo import rewards
    from stylemerge.grpo.train import train_adapter

    def flaky(**_):
        """Finite for the held-out evaluation and the first two steps, then NaN."""

        def flaky(prompts, completions, completion_ids=None, trainer_state=None, **kwargs):
            broken = trainer_state is not None and trainer_state.global_step >= 2
            return [math.nan if broken else 0.5 for _ in completions]

        return flaky

    monkeypatch.setitem(rewards.REWARDS, "flaky", flaky)
    settings = json.loads(json.dumps(SETTINGS))
    settings["rewards"] = {"style_contrast": {"weight": 1.0}, "flaky": {"weight": 1.0}}
    settings["trainer"].update(max_steps=4, save_steps=2, logging_steps=1)
    with pytest.raises(FloatingPointError) as err:
        train_adapter(
            JobSettings(seed=11),
            base=tiny_base,
            general_proxy=tiny_general_proxy,
            proxy=bbc_proxy,
            shards=DomainShards(
                "bbc_news", shards["bbc_news"]["train"], shards["bbc_news"]["heldout"]
            ),
            out_dir=tmp_path / "adapter",
            checkpoint_dir=tmp_path / "checkpoints",
            settings=settings,
        )
    assert str(err.value).startswith("reward flaky is nan at step 2 (completion 0;")
    assert not (tmp_path / "adapter").exists()
    # the steps done before are kept: a rerun (after the fix) resumes from them
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()


# --- safety: weights from safetensors only ------------------------------------------------------


@pytest.fixture(scope="module")
def pickle_only_model(tiny_base, tmp_path_factory):
    """The tiny base with its weights in pytorch_model.bin (a pickle) and no safetensors."""
    out = tmp_path_factory.mktemp("pickle") / "model"
    model = load_model(tiny_base)
    model.config.save_pretrained(out)
    load_tokenizer(tiny_base).save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    assert not list(out.glob("*.safetensors"))
    return out


def test_pickle_weights_are_refused_naming_the_directory_and_the_key(pickle_only_model):
    with pytest.raises(ModelError) as err:
        load_model(pickle_only_model)
    message = str(err.value)
    assert message.startswith(f"{pickle_only_model}: no safetensors weights")
    assert "only pickle weights: pytorch_model.bin" in message
    assert "set allow_pickle_weights: true in the config" in message


def test_pickle_weights_load_when_the_config_allows_them(pickle_only_model, tiny_base):
    model = load_model(pickle_only_model, allow_pickle_weights=True)
    reference = load_model(tiny_base)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_allow_pickle_weights_is_off_by_default(schema_path):
    assert validate_config({}, schema_path)["allow_pickle_weights"] is False
    for name in ("config.yaml", "paper.yaml"):
        shipped = yaml.safe_load((ROOT / "config" / name).read_text())
        assert shipped["allow_pickle_weights"] is False, name
    assert inspect.signature(load_model).parameters["allow_pickle_weights"].default is False


def library_loaders():
    """Every library function that takes the safety switches loose (a trust_remote_code
    parameter)."""
    import importlib
    import pkgutil

    import stylemerge

    found = {}
    for info in pkgutil.walk_packages(stylemerge.__path__, "stylemerge."):
        module = importlib.import_module(info.name)
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ == module.__name__:
                params = inspect.signature(func).parameters
                if "trust_remote_code" in params:
                    found[f"{module.__name__}.{name}"] = params
    return found


def test_the_safety_switches_reach_every_stage_in_its_job_settings():
    """Stages take trust_remote_code and allow_pickle_weights in their JobSettings (off unless
    the config turns them on), never loose: only the low-level loaders take them as values."""
    import ast

    from stylemerge.core.job import JobSettings

    assert set(library_loaders()) == {
        "stylemerge.models.reference.load_model",
        "stylemerge.models.reference.load_tokenizer",
        "stylemerge.merge.run.run_mergekit",
    }
    assert JobSettings().allow_pickle_weights is False and JobSettings().trust_remote_code is False
    config = validate_config(
        yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
        ROOT / "workflow" / "schemas" / "config.schema.yaml",
    )
    job = JobSettings.from_config({**config, "allow_pickle_weights": True})
    assert job.allow_pickle_weights is True and job.trust_remote_code is False
    # every script whose entry point loads a model builds the job's settings and passes them
    loading = 0
    for script in sorted((ROOT / "workflow" / "scripts").glob("*.py")):
        source = script.read_text()
        if "model_reference(" not in source:
            continue
        loading += 1
        calls = [
            node
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        ]
        entry = [c for c in calls if c.func.id not in ("model_reference", "job_settings")]
        assert any(
            c.args and ast.unparse(c.args[0]) in ("job_settings(snakemake)", "job") for c in entry
        ), f"{script.name}: the entry point does not get the job's settings"
    assert loading == 7  # proxy, adapter, apply, merge, think, lm-eval, diversity


def test_merge_models_refuses_a_pickle_only_input(pickle_only_model, tiny_base, shards, tmp_path):
    from stylemerge.merge.run import merge_models

    with pytest.raises(ModelError, match="set allow_pickle_weights: true"):
        merge_models(
            JobSettings(),
            {"method": "karcher", "space": "weights"},
            {"a": tiny_base, "b": pickle_only_model},
            tiny_base,
            {},
            shards["heldout"],
            tmp_path / "merged",
            {**MERGE_SETTINGS, "calibrate_entropy": False},
        )
    assert not (tmp_path / "merged").exists()


# --- safety: repository code runs only when the config turns it on ------------------------------

CUSTOM_CODE = """
from pathlib import Path

Path({marker!r}).write_text("custom code ran")

from transformers import Qwen3Config, Qwen3ForCausalLM


class CustomConfig(Qwen3Config):
    model_type = "custom_qwen3"


class CustomForCausalLM(Qwen3ForCausalLM):
    config_class = CustomConfig
"""


def remote_code_model(tiny_base, root, model_type):
    """The tiny base whose config.json points (auto_map) at custom.py, which writes
    ``root/marker`` when imported."""
    model = root / "model"
    shutil.copytree(tiny_base, model)
    (model / "custom.py").write_text(CUSTOM_CODE.format(marker=str(root / "marker")))
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "custom.CustomConfig",
        "AutoModelForCausalLM": "custom.CustomForCausalLM",
    }
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_custom_model_code_is_refused_by_default(tiny_base, tmp_path):
    model = remote_code_model(tiny_base, tmp_path, "custom_qwen3")
    with pytest.raises(ModelError) as err:
        load_model(model)
    message = str(err.value)
    assert message.startswith(f"{model}: cannot load model")
    assert "trust_remote_code: true" in message
    assert not (tmp_path / "marker").exists()


def test_custom_code_beside_a_known_architecture_is_not_run(tiny_base, tmp_path):
    model = remote_code_model(tiny_base, tmp_path, "qwen3")
    assert type(load_model(model)).__name__ == "Qwen3ForCausalLM"  # the library's own class
    assert not (tmp_path / "marker").exists()


def test_custom_tokenizer_code_is_not_run_by_default(tiny_base, tmp_path):
    model = remote_code_model(tiny_base, tmp_path, "custom_qwen3")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["custom.CustomTokenizer", None]}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(model)  # falls back to the library's own class
    assert "Custom" not in type(tokenizer).__name__
    assert not (tmp_path / "marker").exists()


def test_custom_model_code_runs_when_the_config_turns_it_on(tiny_base, tmp_path):
    """The control: the same directory with trust_remote_code=True does run the module, so
    the tests above would see the marker if the default changed."""
    model = remote_code_model(tiny_base, tmp_path, "custom_qwen3")
    script = (
        "from stylemerge.models.reference import load_model\n"
        f"print(type(load_model({str(model)!r}, trust_remote_code=True)).__name__)\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "CustomForCausalLM"
    assert (tmp_path / "marker").read_text() == "custom code ran"


# --- safety: secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, key",
    [
        ({"token": SECRET}, "token"),
        ({"hf_token": SECRET}, "hf_token"),
        ({"grpo": {"trainer": {"hub_token": SECRET}}}, "grpo.trainer.hub_token"),
        (
            {"domains": {"d": {"source": {"type": "hf", "path": "x/y", "token": SECRET}}}},
            "domains.d.source.token",
        ),
        (
            {
                "merge": {
                    "variants": {"k": {"method": "karcher", "parameters": {"api_key": SECRET}}}
                }
            },
            "merge.variants.k.parameters.api_key",
        ),
    ],
)
def test_token_keys_are_refused_without_echoing_the_value(config, key, schema_path):
    message = rejected(config, schema_path)
    assert f"config key '{key}': secrets do not belong in the config" in message
    assert "a hub token comes from the environment only: export HF_TOKEN" in message
    assert SECRET not in message
    assert "unknown key" not in message  # one message per mistake


def test_counts_of_tokens_are_not_secrets(schema_path):
    config = validate_config(
        {"grpo": {"prompt_tokens": 8}, "evaluate": {"diversity": {"max_new_tokens": 9}}},
        schema_path,
    )
    assert config["grpo"]["prompt_tokens"] == 8


def test_the_environment_token_stays_out_of_provenance(monkeypatch, schema_path):
    from stylemerge.workflow.provenance import provenance

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SECRET)
    config = validate_config(
        yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), schema_path
    )
    record = provenance(config, config["seed"])
    assert SECRET not in json.dumps(record, default=str)
    assert SECRET not in json.dumps(config, default=str)


def test_train_adapter_refuses_a_hub_token_in_its_settings(tmp_path):
    """The library side: settings are copied into metrics.json, so a token there would end up
    in results; refused before anything is loaded."""
    from test_grpo import SETTINGS

    from stylemerge.grpo.train import train_adapter

    settings = json.loads(json.dumps(SETTINGS))
    settings["trainer"]["hub_token"] = SECRET
    with pytest.raises(ValueError) as err:
        train_adapter(
            JobSettings(seed=1),
            base=tmp_path / "none",
            general_proxy=tmp_path / "none",
            proxy=tmp_path / "none",
            shards=DomainShards("d", tmp_path / "none.jsonl", tmp_path / "none.jsonl"),
            out_dir=tmp_path / "out",
            checkpoint_dir=tmp_path / "ckpt",
            settings=settings,
        )
    assert "may not set hub_token: a hub token comes from the environment (HF_TOKEN)" in str(
        err.value
    )
    assert SECRET not in str(err.value)


# --- safety: output paths stay under results/ ---------------------------------------------------
# Tested in test_config.py: test_domain_names_must_be_safe_path_parts (domains, '../evil').

BAD_NAMES = ["../escape", "a/b", "/abs/path", "..", "x/../../y", "C:\\win"]


def named(key: str, name: str) -> dict:
    if key == "domains":
        return {"domains": {name: {"source": {"type": "builtin"}}}}
    if key == "merge.variants":
        return {"merge": {"variants": {name: {"method": "karcher"}}, "chosen": name}}
    return {"evaluate": {"comparisons": {name: "org/model"}}}


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("key", ["domains", "merge.variants", "evaluate.comparisons"])
def test_names_that_become_paths_cannot_escape_results(key, name, schema_path):
    message = rejected(named(key, name), schema_path)
    assert f"config key '{key}': name {name!r} is not allowed" in message
    assert "no '/', '..' or absolute paths" in message


def test_every_name_keyed_mapping_in_the_schema_has_the_safe_pattern(schema_path):
    """Mappings whose keys the user chooses and the workflow turns into paths."""
    schema = yaml.safe_load(schema_path.read_text())
    props = schema["properties"]
    keyed = {
        "domains": props["domains"],
        "merge.variants": schema["$defs"]["merge"]["properties"]["variants"],
        "evaluate.comparisons": props["evaluate"]["properties"]["comparisons"],
    }
    for key, node in keyed.items():
        assert node["propertyNames"]["pattern"] == "^[a-z0-9][a-z0-9_]*$", key
    # beside GRPO's results/<run>/checkpoints/<domain>: the proxies' and think rows' own
    assert props["domains"]["propertyNames"]["not"] == {"enum": ["proxies", "think"]}
    for name in ("proxies", "think"):
        message = rejected({"domains": {name: {"source": {"type": "builtin"}}}}, schema_path)
        assert "domains" in message and name in message, message


def test_model_roles_are_fixed_names(schema_path):
    message = rejected({"models": {"../base": {"ref": "x"}}}, schema_path)
    assert "config key 'models.../base': unknown key" in message
