import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pandas as pd
import pytest
import torch

from stylemerge.core.checkpoints import prepare_checkpoints
from stylemerge.core.job import JobSettings
from stylemerge.data.shards import DomainShards
from stylemerge.generation.sampling import make_prompts, prompt_windows
from stylemerge.grpo.train import (
    ProxyNotSpecialisedError,
    check_proxy_specialised,
    checkpoint_fingerprint,
    mean_se,
    train_adapter,
)
from stylemerge.grpo.trl_compat import GRPO_CONFIG_FIELDS, current_fields
from stylemerge.models.reference import ModelReference, load_model, load_tokenizer
from stylemerge.workflow.config import deep_merge

SETTINGS = {
    "prompt_tokens": 12,
    "prompts_per_document": 2,
    "max_prompts": 32,
    "eval_prompts": 4,
    "eval_samples": 2,
    "scorer_batch_size": 16,
    "require_specialised_proxy": True,
    "mara": {"enabled": False, "threshold": {"quantile": 0.5}},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    "rewards": {
        "style_contrast": {"weight": 1.0},
        "fluency_floor": {"weight": 1.0, "floor": -8.0},
        "repetition": {"weight": 0.5},
    },
    "trainer": {
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 8,
        "learning_rate": 0.01,
        "beta": 0.04,
        "logging_steps": 1,
        "save_steps": 2,
        "use_cpu": True,
        "disable_tqdm": True,
    },
}


def run(
    tmp_path,
    shards,
    tiny_base,
    bbc_proxy,
    tiny_general_proxy,
    name="adapter",
    overrides=None,
    job=None,
    **extra,
):
    """train_adapter on the tiny models with SETTINGS, ``overrides`` merged over them and
    ``extra`` trainer keys (as ``job``, seed 11 unless given)."""
    settings = deep_merge(SETTINGS, overrides or {})
    settings["trainer"].update(extra)
    return train_adapter(
        job or JobSettings(seed=11),
        base=tiny_base,
        general_proxy=tiny_general_proxy,
        proxy=bbc_proxy,
        shards=DomainShards("bbc_news", shards["bbc_news"]["train"], shards["bbc_news"]["heldout"]),
        out_dir=tmp_path / name,
        checkpoint_dir=tmp_path / f"{name}-checkpoints",
        settings=settings,
    )


def test_grpo_trains_an_adapter_that_loads_with_peft_and_changes_logits(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    from peft import PeftModel

    metrics = run(tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy)
    out = tmp_path / "adapter"
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert not (tmp_path / "adapter-checkpoints").exists()  # removed once the adapter is saved
    assert metrics["steps"] == 4 and metrics["resumed_from"] is None
    for name in ("style_contrast", "fluency_floor", "repetition", "total", "fluency_logprob"):
        summary = metrics["heldout"][name]
        assert set(summary) == {"before", "after", "change"}
        # 4 held-out prompts, their standard errors over the documents they were cut from
        documents = metrics["heldout_documents"]
        assert len(documents) == 4 and summary["change"]["values"] == 4
        assert summary["change"]["n"] == len(set(documents)) >= 2
    history = (out / "log_history.csv").read_text()
    assert "rewards/style_contrast/mean" in history.splitlines()[0]
    # trl's completion lengths, averaged over the logged steps (MARA's sums depend on them)
    completions = metrics["completions"]
    assert 0 < completions["mean_length"] <= SETTINGS["trainer"]["max_completion_length"]
    assert 0 <= completions["clipped_ratio"] <= 1

    base = load_model(tiny_base)
    ids = load_tokenizer(tiny_base)("The council said", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, out)
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after)


def test_grpo_training_logs_reach_tensorboard_and_outlive_the_checkpoints(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "unused"))  # restored after
    logs = tmp_path / "logs" / "grpo" / "bbc_news"
    job = JobSettings(seed=11, report_to=("tensorboard",), tracking_dir=str(logs))
    run(tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, job=job)
    assert not (tmp_path / "adapter-checkpoints").exists()  # removed once the adapter is saved
    events = EventAccumulator(str(logs)).Reload()
    assert len(events.Scalars("train/reward")) == 4  # one per step
    assert "train/rewards/style_contrast/mean" in events.Tags()["scalars"]


def test_managed_trainer_keys_are_refused(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    with pytest.raises(ValueError, match=r"may not set \['output_dir'\]"):
        run(tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, output_dir="x")


def test_trainer_trust_remote_code_follows_the_config(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    """trl hands GRPOConfig.trust_remote_code to its vLLM: it may not differ from the config's."""
    with pytest.raises(ValueError, match=r"trust_remote_code=True contradicts trust_remote_code"):
        run(tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, trust_remote_code=True)


RESUME_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_grpo import SETTINGS
from stylemerge.grpo.train import train_adapter
from stylemerge.core.job import JobSettings
from stylemerge.data.shards import DomainShards
settings = json.loads(json.dumps(SETTINGS))
settings["trainer"].update(max_steps=16, save_steps=2)
train_adapter(JobSettings(seed=11), base={base!r}, general_proxy={general!r}, proxy={proxy!r},
              shards=DomainShards("bbc_news", {train!r}, {heldout!r}), out_dir={out!r},
              checkpoint_dir={ckpt!r}, settings=settings)
"""


def test_killed_training_resumes_from_its_last_checkpoint(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    ckpt = tmp_path / "killed-checkpoints"
    script = RESUME_SCRIPT.format(
        tests=os.path.dirname(__file__),
        base=str(tiny_base),
        train=str(shards["bbc_news"]["train"]),
        heldout=str(shards["bbc_news"]["heldout"]),
        proxy=str(bbc_proxy),
        general=str(tiny_general_proxy),
        out=str(tmp_path / "killed"),
        ckpt=str(ckpt),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (ckpt / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed").exists()  # no partial output

    resumed = run(
        tmp_path,
        shards,
        tiny_base,
        bbc_proxy,
        tiny_general_proxy,
        name="killed",
        max_steps=16,
        save_steps=2,
    )
    assert resumed["resumed_from"] is not None
    assert int(resumed["resumed_from"].split("-")[1]) >= 4
    assert resumed["steps"] == 16

    # the same run without the kill ends with the same adapter (RNG states are checkpointed)
    whole = run(
        tmp_path,
        shards,
        tiny_base,
        bbc_proxy,
        tiny_general_proxy,
        name="whole",
        max_steps=16,
        save_steps=2,
    )
    assert whole["resumed_from"] is None
    from safetensors.torch import load_file

    a = load_file(tmp_path / "killed" / "adapter_model.safetensors")
    b = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_a_run_killed_after_its_last_checkpoint_is_not_trained_further(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, monkeypatch
):
    """Killed between the last checkpoint and moving the output into place: the rerun takes
    the finished adapter from the checkpoint (Trainer resumed there would train a step more)."""
    from safetensors.torch import load_file

    import stylemerge.grpo.train

    # keep the checkpoints a finished run removes, as a kill before that point would
    monkeypatch.setattr(
        stylemerge.grpo.train, "shutil", types.SimpleNamespace(rmtree=lambda *a, **k: None)
    )
    first = run(
        tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, max_steps=4, save_steps=2
    )
    monkeypatch.undo()
    finished = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    shutil.rmtree(tmp_path / "adapter")

    again = run(
        tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, max_steps=4, save_steps=2
    )
    assert again["resumed_from"] == "checkpoint-4" and again["steps"] == first["steps"] == 4
    assert again["heldout"] == first["heldout"]
    resumed = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == finished.keys()
    for key in finished:
        assert torch.equal(resumed[key], finished[key]), key
    assert not (tmp_path / "adapter-checkpoints").exists()
    # the training log is the finished run's (the figures read it)
    history = pd.read_csv(tmp_path / "adapter" / "log_history.csv")
    assert history["reward"].notna().sum() == 4, history


def test_checkpoints_of_other_settings_are_not_resumed(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    stale = tmp_path / "adapter-checkpoints" / "checkpoint-2"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    metrics = run(tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy)
    assert metrics["resumed_from"] is None


def test_prompts_are_windows_of_documents(tiny_base):
    tok = load_tokenizer(tiny_base)
    text = " ".join(f"word{i}" for i in range(200))
    prompts = make_prompts(tok, [text, "too short"], prompt_tokens=10, per_document=3, limit=10)
    assert len(prompts) == 3
    assert all(p in text for p in prompts)
    assert all(len(tok(p, add_special_tokens=False)["input_ids"]) <= 11 for p in prompts)
    assert prompts[0] == tok.decode(tok(text, add_special_tokens=False)["input_ids"][:10])


def test_prompt_windows_take_every_document_before_a_second_window_of_any(tiny_base):
    tok = load_tokenizer(tiny_base)
    texts = [" ".join(f"doc{d}word{i}" for i in range(200)) for d in range(3)]
    windows = prompt_windows(
        tok, texts, prompt_tokens=10, per_document=2, limit=4, documents=["a", "b", "c"]
    )
    assert [w["document"] for w in windows] == ["a", "b", "c", "a"]
    assert all(w["prompt"] in texts["abc".index(w["document"])] for w in windows)


def test_mean_se():
    summary = mean_se([1.0, 2.0, 3.0, 4.0])
    assert summary["mean"] == 2.5 and summary["n"] == 4
    assert summary["se"] == pytest.approx(1.2909944 / 2)


def test_mean_se_over_documents_is_the_cluster_robust_one():
    """Two documents of two prompts each: the standard error over documents is that of the
    OLS mean with cluster-robust (CR1-style G/(G-1)) errors, which statsmodels computes."""
    import numpy as np
    import statsmodels.api as sm

    values = [1.0, 1.2, 3.0, 3.4, 2.0, 2.1]
    clusters = ["a", "a", "b", "b", "c", "c"]
    summary = mean_se(values, clusters)
    fit = sm.OLS(values, np.ones(6)).fit(
        cov_type="cluster",
        cov_kwds={"groups": np.array([0, 0, 1, 1, 2, 2]), "use_correction": False},
    )
    assert summary["mean"] == pytest.approx(fit.params[0])
    assert summary["se"] == pytest.approx(fit.bse[0] * np.sqrt(3 / 2))
    assert (summary["n"], summary["values"]) == (3, 6)


def test_trl_defaults_are_the_installed_trls():
    import dataclasses

    from trl import GRPOConfig

    from stylemerge.grpo.trl_compat import TRL_DEFAULTS

    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert {key: defaults[key] for key in TRL_DEFAULTS} == TRL_DEFAULTS


def test_trainer_field_list_matches_installed_trl():
    assert sorted(GRPO_CONFIG_FIELDS) == current_fields()
    from trl import GRPOConfig

    assert {"beta", "num_generations", "use_vllm"} <= {
        f.name for f in dataclasses.fields(GRPOConfig)
    }


def test_a_checkpoint_killed_while_saving_is_skipped(tmp_path):
    from stylemerge.core.checkpoints import last_complete_checkpoint

    for step, state in ((2, "{}"), (4, '{"trunc')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-6").mkdir()  # killed before trainer_state.json
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_a_proxy_that_did_not_specialise_stops_grpo_naming_it(tmp_path):
    proxy = tmp_path / "proxy"
    proxy.mkdir()
    metrics = {"own_gain": -0.028, "specialised": False,
               "gain": {"github_python": -0.028, "bbc_news": 0.05}}  # fmt: skip
    (proxy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ProxyNotSpecialisedError, match=r"proxy/metrics.json.*github_python"):
        check_proxy_specialised(proxy, "github_python")
    # a gain on its own domain but larger elsewhere is no style either
    metrics.update(own_gain=0.01, gain={"github_python": 0.01, "bbc_news": 0.05})
    (proxy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ProxyNotSpecialisedError, match=r"\+0.0500 on bbc_news"):
        check_proxy_specialised(proxy, "github_python")
    metrics.update(specialised=True, own_gain=0.06, gain={"github_python": 0.06, "bbc_news": 0.05})
    (proxy / "metrics.json").write_text(json.dumps(metrics))
    check_proxy_specialised(proxy, "github_python")  # passes


def test_the_unspecialised_proxy_gate_runs_before_any_training(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    proxy = tmp_path / "copy"
    shutil.copytree(bbc_proxy, proxy)
    metrics = json.loads((proxy / "metrics.json").read_text())
    metrics.update(own_gain=-0.5, specialised=False)
    (proxy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ProxyNotSpecialisedError):
        run(tmp_path, shards, tiny_base, proxy, tiny_general_proxy)
    assert not (tmp_path / "adapter").exists()


def test_a_changed_revision_starts_grpo_over(tmp_path):
    """Checkpoints of the base (or a proxy) at one hub revision are not resumed at another."""
    proxy = ModelReference("proxies/bbc_news")

    def expected(base_revision, general_revision="r1"):
        base = ModelReference("Qwen/Qwen3-4B-Base", base_revision)
        general = ModelReference("org/general", general_revision)
        return checkpoint_fingerprint(SETTINGS, 1, base, proxy, general, ["a prompt"])

    assert expected("abc") == expected("abc")
    assert len({expected("abc"), expected("def"), expected(None), expected("abc", "r2")}) == 4
    checkpoints = tmp_path / "checkpoints"
    assert prepare_checkpoints(checkpoints, expected("abc")) is None
    step = checkpoints / "checkpoint-2"
    step.mkdir()
    (step / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    assert prepare_checkpoints(checkpoints, expected("abc")) == str(step)  # same: resumed
    assert prepare_checkpoints(checkpoints, expected("def")) is None  # other revision: over
    assert not step.exists()
