"""The precision setting: resolved once per job against what the device can do (the CPU's
capability forced through STYLEMERGE_CPU_BF16), recorded in the provenance, and reaching the
stages: GRPO under bf16 keeps its LoRA weights and optimiser state float32."""

import logging

import pytest

from stylemerge.core.job import JobSettings
from stylemerge.core.precision import (
    CPU_OVERRIDE,
    autocast,
    planned_precision,
    resolve_precision,
    stage_precision,
)


@pytest.mark.parametrize(
    ("level", "requested", "used"),
    [
        ("amx", "auto", "bf16"),  # faster than float32: taken
        ("avx512", "auto", "fp32"),  # computes bfloat16, but slower: not taken by auto
        ("none", "auto", "fp32"),
        ("amx", "bf16", "bf16"),
        ("avx512", "bf16", "bf16"),  # asked for: honoured
        ("none", "bf16", "fp32"),  # cannot: falls back
        ("amx", "fp32", "fp32"),
    ],
)
def test_precision_resolves_against_the_cpu(monkeypatch, level, requested, used):
    monkeypatch.setenv(CPU_OVERRIDE, level)
    assert resolve_precision(requested, "cpu")[0] == used


def test_a_cpu_without_bf16_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setenv(CPU_OVERRIDE, "none")
    with caplog.at_level(logging.INFO, logger="stylemerge.core.precision"):
        job = JobSettings(precision="bf16").apply()
    assert job.precision == "fp32"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "falling back to fp32" in warnings[0].getMessage()
    assert job.provenance["precision"]["requested"] == "bf16"
    assert job.provenance["precision"]["used"] == "fp32"
    assert "fallback" in job.provenance["precision"]["why"]


def test_applied_settings_record_the_precision_and_autocast_to_it(monkeypatch):
    import torch

    monkeypatch.setenv(CPU_OVERRIDE, "amx")
    job = JobSettings(precision="auto").apply()
    assert job.precision == "bf16"
    assert job.provenance["precision"] == {
        "requested": "auto",
        "used": "bf16",
        "why": "auto: CPU with AMX-BF16",
    }
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    with job.autocast()():
        assert (a @ b).dtype == torch.bfloat16
    with JobSettings(precision="fp32").apply().autocast()():
        assert (a @ b).dtype == torch.float32


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv(CPU_OVERRIDE, "sse")
    with pytest.raises(ValueError, match="STYLEMERGE_CPU_BF16"):
        resolve_precision("auto", "cpu")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="not resolved"):
        autocast("auto", "cpu")


def test_a_stage_precision_overrides_the_top_level_one():
    config = {"precision": "auto", "device": "cpu"}
    assert stage_precision(config, {"precision": None}) == "auto"
    assert stage_precision(config, {"precision": "fp32"}) == "fp32"
    # planned before any job runs: auto is bf16 on a GPU config, fp32 on a CPU one
    assert planned_precision(config, {}) == "fp32"
    assert planned_precision({**config, "device": "cuda"}, {}) == "bf16"


def test_config_validation_refuses_an_unknown_precision(schema_path):
    from stylemerge.workflow.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="precision"):
        validate_config({"precision": "half"}, schema_path)
    with pytest.raises(ConfigError, match="grpo.precision"):
        validate_config({"grpo": {"precision": "fp16"}}, schema_path)
    # the trainer's mixed precision is the workflow's to set
    with pytest.raises(ConfigError, match="grpo.trainer.bf16.*precision"):
        validate_config({"grpo": {"trainer": {"bf16": True}}}, schema_path)


def test_grpo_under_bf16_keeps_lora_weights_and_optimiser_state_float32(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, monkeypatch
):
    from safetensors.torch import load_file
    from test_grpo import run

    monkeypatch.setenv(CPU_OVERRIDE, "avx512")  # torch computes bfloat16 on any CPU
    metrics = run(
        tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy,
        job=JobSettings(seed=11, precision="bf16"),
    )  # fmt: skip
    assert metrics["precision"] == {
        "passes": "bf16",
        "trainable": ["float32"],
        "optimizer_state": ["float32"],
    }
    assert metrics["provenance"]["precision"]["used"] == "bf16"
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert {str(t.dtype) for t in saved.values()} == {"torch.float32"}
