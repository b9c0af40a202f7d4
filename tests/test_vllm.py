"""vLLM on the paper path, checked without vLLM (it needs CUDA): the arguments of lm-eval's
vLLM model, the clear failure where vllm is missing, GRPO's vLLM context length, and the
model directory trl's colocated vLLM loads (the pinned revision's local snapshot)."""

import ast
import dataclasses
import json
import shutil
import types
from pathlib import Path

import lm_eval
import pytest
import trl
from test_config import load, rejected

from stylemerge.core.job import JobSettings
from stylemerge.evaluate.harness import evaluate_lm, run_lm_eval
from stylemerge.generation.vllm import INSTALL, VLLMMissing, vllm_available, vllm_model_args
from stylemerge.grpo.trl_compat import trl_default
from stylemerge.grpo.vllm import PROMPT_MARGIN, grpo_trainer_settings
from stylemerge.models.reference import ModelError, ModelReference
from stylemerge.workflow.config import deep_merge, stage_settings, validate_config

VLLM_SOURCE = Path(lm_eval.__file__).parent / "models" / "vllm_causallms.py"
needs_no_vllm = pytest.mark.skipif(vllm_available(), reason="vllm is installed here")
SETTINGS = {
    "tasks": [{"name": "gsm8k"}],
    "batch_size": "auto",
    "max_length": 4096,
    "limit": None,
    "bootstrap_iters": 0,
    "samples": 0,
}


def vllm_constructor() -> tuple[set[str], bool]:
    """The parameters of lm-eval's VLLM.__init__ (read from its source: importing the module
    imports vllm) and whether it passes the rest (**kwargs) on to vllm.LLM."""
    tree = ast.parse(VLLM_SOURCE.read_text(encoding="utf-8"))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VLLM"]
    (init,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    names = {a.arg for a in init.args.args + init.args.kwonlyargs} - {"self"}
    forwards = "self.model_args.update(kwargs)" in ast.unparse(init)
    return names, init.args.kwarg is not None and forwards


# --- lm-eval's vLLM model -----------------------------------------------------------------------


def test_vllm_model_args_keep_the_hf_paths_guarantees():
    job = JobSettings(seed=11, device="cuda", trust_remote_code=False)
    ref = ModelReference("Qwen/Qwen3-4B-Base", revision="abc123")
    args = vllm_model_args(job, ref, SETTINGS)
    assert args == {
        "pretrained": "Qwen/Qwen3-4B-Base",
        "revision": "abc123",  # weights and tokenizer at the config's revision
        "tokenizer_revision": "abc123",
        "trust_remote_code": False,
        "dtype": "auto",  # the checkpoint's own, as load_model's dtype="auto"
        "load_format": "safetensors",  # never a pickle file
        "batch_size": "auto",
        "seed": 11,
        "max_model_len": 4096,  # vLLM reserves memory for this context, not the model's 32k
    }
    # no think_end_token: it would cut the think block off every generation
    assert "think_end_token" not in args and "enable_thinking" not in args
    # the job's bf16 precision: vLLM computes in its weights' dtype, so it loads them in bf16
    bf16 = vllm_model_args(dataclasses.replace(job, precision="bf16"), ref, SETTINGS)
    assert bf16["dtype"] == "bfloat16"


def test_vllm_model_args_follow_the_jobs_switches():
    job = JobSettings(trust_remote_code=True, allow_pickle_weights=True)
    args = vllm_model_args(job, "some/model", {**SETTINGS, "batch_size": 16, "max_length": None})
    assert args["trust_remote_code"] is True
    assert args["load_format"] == "auto"  # safetensors first, pickle files where none
    assert args["revision"] is None and args["batch_size"] == 16
    assert "max_model_len" not in args  # null: the model's own context


def test_every_vllm_model_arg_is_one_lm_evals_vllm_model_takes():
    """Against lm-eval 0.4.13's own constructor: a misspelled name would reach vllm.LLM
    through **kwargs and fail only on a GPU node."""
    params, forwards_rest = vllm_constructor()
    args = vllm_model_args(JobSettings(), ModelReference("m", "r"), SETTINGS)
    assert set(args) - params == {"load_format"}  # vllm.LLM's own, passed on by **kwargs
    assert forwards_rest
    assert {"max_length", "think_end_token"} <= params  # the ones we must not pass
    # lm-eval decodes generations keeping special tokens (think tags), unless a task says not
    assert '"skip_special_tokens": False' in VLLM_SOURCE.read_text(encoding="utf-8")


@needs_no_vllm
def test_the_vllm_backend_fails_at_once_naming_itself_and_the_install(tmp_path):
    out = tmp_path / "lm_eval.json"
    # an unknown task: loading the tasks first would fail with another error
    settings = {**SETTINGS, "backend": "vllm", "tasks": [{"name": "stylemerge_nope"}]}
    with pytest.raises(VLLMMissing) as err:
        evaluate_lm(JobSettings(), "no/model", out, settings, include_path=tmp_path)
    assert "evaluate.lm_eval.backend: vllm" in str(err.value) and INSTALL in str(err.value)
    assert not out.exists()
    scratch = tmp_path / "scratch"
    with pytest.raises(VLLMMissing, match="backend: vllm"):  # before task data are written
        run_lm_eval(JobSettings(), "no/model", {}, out, settings, 0.1, scratch)
    assert not scratch.exists()


@needs_no_vllm
def test_grpo_with_use_vllm_fails_at_once_without_vllm():
    from stylemerge.grpo.train import train_adapter

    settings = {"prompt_tokens": 8, "trainer": {"use_vllm": True}}
    shards = types.SimpleNamespace(domain="bbc_news")
    with pytest.raises(VLLMMissing, match=r"grpo.trainer.use_vllm.*make gpu-venv"):
        train_adapter(JobSettings(), "b", "g", "p", shards, "out", "ckpt", settings)


def test_the_hf_backend_is_the_default_and_the_key_is_validated(schema_path):
    config = validate_config(load("config.yaml"), schema_path)
    assert config["evaluate"]["lm_eval"]["backend"] == "hf"
    assert validate_config(load("paper.yaml"), schema_path)["evaluate"]["lm_eval"]["backend"] == (
        "vllm"
    )
    bad = deep_merge(load("config.yaml"), {"evaluate": {"lm_eval": {"backend": "sglang"}}})
    assert "evaluate.lm_eval.backend" in rejected(bad, schema_path)
    on_cpu = deep_merge(load("config.yaml"), {"evaluate": {"lm_eval": {"backend": "vllm"}}})
    message = rejected(on_cpu, schema_path)
    assert "evaluate.lm_eval.backend" in message and "device is cpu" in message


def test_evaluate_lm_hands_the_settings_to_the_backend_chosen(monkeypatch):
    from stylemerge.evaluate import harness as evaluate

    made = []
    monkeypatch.setattr(evaluate, "make_vllm_lm", lambda *a: made.append(("vllm", a[2])))
    monkeypatch.setattr(evaluate, "make_hflm", lambda *a: made.append(("hf", a[2:])))
    evaluate.make_lm(JobSettings(), ModelReference("m"), {**SETTINGS, "backend": "vllm"})
    evaluate.make_lm(JobSettings(), ModelReference("m"), {**SETTINGS, "backend": "hf"})
    evaluate.make_lm(JobSettings(), ModelReference("m"), SETTINGS)  # no key: hf
    assert made == [
        ("vllm", {**SETTINGS, "backend": "vllm"}),
        ("hf", ("auto", 4096)),
        ("hf", ("auto", 4096)),
    ]


# --- GRPO: the context vLLM reserves ------------------------------------------------------------


def test_grpo_derives_vllm_max_model_length_from_prompt_and_completion(schema_path):
    paper = validate_config(load("paper.yaml"), schema_path)
    grpo = stage_settings(paper, "grpo", "bbc_news")
    assert grpo["trainer"]["use_vllm"] and "vllm_max_model_length" not in grpo["trainer"]
    trainer = grpo_trainer_settings(grpo)
    assert trainer["vllm_max_model_length"] == 128 + 256 + PROMPT_MARGIN
    assert "vllm_max_model_length" not in grpo["trainer"]  # the settings are not changed
    explicit = deep_merge(grpo, {"trainer": {"vllm_max_model_length": 1024}})
    assert grpo_trainer_settings(explicit)["vllm_max_model_length"] == 1024
    off = deep_merge(grpo, {"trainer": {"use_vllm": False}})
    assert "vllm_max_model_length" not in grpo_trainer_settings(off)
    # no max_completion_length: trl's default (read without importing trl at config time)
    assert (
        trl_default("max_completion_length")
        == trl.GRPOConfig.__dataclass_fields__["max_completion_length"].default
    )
    no_completion = {"prompt_tokens": 10, "trainer": {"use_vllm": True}}
    expected = 10 + trl_default("max_completion_length") + PROMPT_MARGIN
    assert grpo_trainer_settings(no_completion)["vllm_max_model_length"] == expected


def test_a_vllm_context_shorter_than_prompt_plus_completion_is_rejected(schema_path):
    paper = load("paper.yaml")
    short = deep_merge(paper, {"grpo": {"trainer": {"vllm_max_model_length": 383}}})
    message = rejected(short, schema_path)
    assert "grpo.trainer.vllm_max_model_length" in message
    assert "383" in message and "128" in message and "256" in message and "384" in message
    assert message.count("vllm_max_model_length") == 1  # once, not once per domain
    enough = deep_merge(paper, {"grpo": {"trainer": {"vllm_max_model_length": 384}}})
    assert validate_config(enough, schema_path)
    # a domain's override that lengthens the completion
    longer = {"domains": {"bbc_news": {"grpo": {"trainer": {"max_completion_length": 512}}}}}
    message = rejected(deep_merge(enough, longer), schema_path)
    assert "domains.bbc_news.grpo.trainer.vllm_max_model_length" in message
    # without vLLM the key is trl's business
    off = deep_merge(short, {"grpo": {"trainer": {"use_vllm": False}}})
    assert validate_config(off, schema_path)


# --- GRPO: the model trl's colocated vLLM loads -------------------------------------------------

TRL_VLLM_SOURCE = Path(trl.__file__).parent / "generation" / "vllm_generation.py"
MAIN, PINNED, PICKLED = "a" * 40, "b" * 40, "c" * 40


def trl_vllm_call() -> dict[str, str]:
    """The keyword arguments of the ``LLM(...)`` call in trl's colocate mode (read from its
    source: importing the module needs vllm), as source text."""
    tree = ast.parse(TRL_VLLM_SOURCE.read_text(encoding="utf-8"))
    (call,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "LLM"
    ]
    return {k.arg: ast.unparse(k.value) for k in call.keywords}


@pytest.fixture
def hub_cache(tmp_path, tiny_base, monkeypatch):
    """A hub cache as huggingface_hub lays it out, offline, holding ``org/tiny``: ``main`` at
    one commit and the pinned branch ``v1`` at another (both the tiny base's files, each
    config marked with its branch), and ``bin-only`` whose commit holds only
    pytorch_model.bin.  Returns the cache's repository folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    for branch, commit in (("main", MAIN), ("v1", PINNED), ("bin-only", PICKLED)):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in tiny_base.iterdir():
            if file.is_file() and (branch != "bin-only" or file.suffix != ".safetensors"):
                shutil.copy(file, snapshot / file.name)
        config = json.loads((snapshot / "config.json").read_text())
        (snapshot / "config.json").write_text(json.dumps({**config, "branch": branch}))
        if branch == "bin-only":
            (snapshot / "pytorch_model.bin").write_bytes(b"never unpickled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads both when imported; set them as a fresh process would have them
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return repo


def test_trl_hands_its_colocated_vllm_only_the_policys_path():
    """trl 1.16's LLM(...) call: the model is the policy's name_or_path and no revision,
    tokenizer or load_format is passed, which is why GRPO loads the policy from the pinned
    snapshot (a trl that passes them is a reason to revisit grpo_policy_reference)."""
    kwargs = trl_vllm_call()
    assert kwargs["model"] == "model.name_or_path"
    assert kwargs["trust_remote_code"] == "self.trust_remote_code"
    assert kwargs["max_model_len"] == "self.max_model_length"
    passed = {"revision", "tokenizer", "tokenizer_revision", "load_format", "dtype"} & set(kwargs)
    assert not passed


def test_grpo_with_vllm_loads_the_policy_from_the_pinned_snapshot(hub_cache):
    from peft import LoraConfig, get_peft_model

    from stylemerge.grpo.vllm import grpo_policy_reference

    job = JobSettings()
    base = ModelReference("org/tiny", revision="v1")
    policy_ref = grpo_policy_reference(job, base, {"use_vllm": True, "vllm_mode": "colocate"})
    snapshot = hub_cache / "snapshots" / PINNED
    assert Path(policy_ref.ref) == snapshot and policy_ref.revision is None
    assert grpo_policy_reference(job, base, {"use_vllm": False}) == base  # transformers path
    # what trl hands vLLM: the name_or_path of the policy it wraps in the LoRA adapter
    policy = policy_ref.model(job)
    assert policy.config.branch == "v1"
    peft = get_peft_model(policy, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert Path(peft.name_or_path) == snapshot
    assert len(policy_ref.tokenizer(job)) == len(base.tokenizer(job))
    # a commit hash pins as a branch does; an unpinned id is the default branch's snapshot
    by_commit = ModelReference("org/tiny", revision=PINNED).local_snapshot(job)
    assert Path(by_commit.ref) == snapshot
    assert Path(ModelReference("org/tiny").local_snapshot(job).ref).name == MAIN


def test_a_local_base_is_its_own_snapshot(tiny_base, tmp_path):
    from stylemerge.grpo.vllm import grpo_policy_reference

    ref = grpo_policy_reference(JobSettings(), tiny_base, {"use_vllm": True})
    assert ref == ModelReference(str(tiny_base))
    with pytest.raises(ModelError, match="no config.json"):
        ModelReference(str(tmp_path)).local_snapshot(JobSettings())


def test_a_pinned_revision_with_only_pickle_weights_is_refused(hub_cache):
    base = ModelReference("org/tiny", revision="bin-only")
    with pytest.raises(ModelError) as err:
        base.local_snapshot(JobSettings())
    message = str(err.value)
    assert message.startswith("org/tiny at revision bin-only")
    assert "only pickle weights: pytorch_model.bin" in message
    assert "allow_pickle_weights: true" in message
    # the config allows them: the snapshot is that revision's
    allowed = base.local_snapshot(JobSettings(allow_pickle_weights=True))
    assert Path(allowed.ref) == hub_cache / "snapshots" / PICKLED


def test_a_revision_missing_from_the_offline_cache_is_named(hub_cache):
    with pytest.raises(ModelError, match=r"org/tiny at revision v2: cannot fetch"):
        ModelReference("org/tiny", revision="v2").local_snapshot(JobSettings())
