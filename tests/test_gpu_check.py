"""The GPU check (`make gpu-check`, stylemerge.cli.gpu_check): its config carries the paper path's
GPU settings, its dry run plans every stage on a CPU (as CI runs it), and its output checks
pass on a complete run and fail on a damaged one."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from test_faults import copy_run
from test_workflow import copy_workflow

from conftest import ROOT, SCHEMA
from stylemerge.cli import gpu_check
from stylemerge.core.joblog import GPU_PEAK_MESSAGE
from stylemerge.workflow.config import validate_config


def test_the_check_runs_the_paper_paths_gpu_settings_on_the_real_model_tier():
    config = gpu_check.check_config(ROOT)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for path in gpu_check.PAPER_GPU_KEYS:
        assert gpu_check.get(config, path) == gpu_check.get(paper, path), path
    assert config["device"] == "cuda" and config["grpo"]["trainer"]["use_vllm"]
    assert config["evaluate"]["lm_eval"]["backend"] == "vllm"
    assert "gguf" in config["models"]["base"]  # SmolLM2-135M, as config/smol.yaml
    for stage in gpu_check.GPU_STAGES.values():
        assert gpu_check.get(config, stage)["gpus"] == 1, stage
    validate_config(config, SCHEMA)


def test_a_paper_config_without_a_gpu_setting_stops_the_check(tmp_path):
    workdir = copy_workflow(tmp_path, {})
    paper = yaml.safe_load((workdir / "config" / "paper.yaml").read_text())
    del paper["think"]["gradient_checkpointing"]
    (workdir / "config" / "paper.yaml").write_text(yaml.safe_dump(paper))
    with pytest.raises(gpu_check.GpuCheckError, match="think.gradient_checkpointing"):
        gpu_check.check_config(workdir)


@pytest.mark.workflow
def test_dry_run_plans_every_stage_without_a_gpu(tmp_path):
    workdir = copy_workflow(tmp_path, {})
    proc = subprocess.run(
        [sys.executable, "-m", "stylemerge.cli.gpu_check", "--dry-run", "--root", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every stage planned" in proc.stdout
    for stage in gpu_check.STAGES:
        assert f"{stage} " in proc.stdout, stage
    written = yaml.safe_load((workdir / "results/gpu-check/gpu-check.yaml").read_text())
    assert written == gpu_check.check_config(workdir)


def test_the_full_check_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(gpu_check.GpuCheckError, match="no CUDA device"):
        gpu_check.preflight()


def test_output_checks_pass_on_a_complete_run_and_name_what_is_wrong(workflow_run, tmp_path):
    configfile = workflow_run / "config" / "config.yaml"
    config = validate_config(yaml.safe_load(configfile.read_text()), SCHEMA)
    assert gpu_check.check_outputs(workflow_run, configfile, config) == []
    found = gpu_check.figures(workflow_run, config)
    assert set(found["seconds_per_rule"]) >= {"train_adapter", "merge_models", "evaluate_lm"}
    assert all(s > 0 for s in found["seconds_per_rule"].values())
    assert set(found["grpo_tokens_per_s"]) == set(config["domains"])
    assert all(v > 0 for v in found["grpo_tokens_per_s"].values())
    assert found["peak_gpu_mib_per_job"] == {}  # a CPU run: no job touched CUDA
    assert gpu_check.unseen_on_gpu(config, {}) == [
        "train_proxy", "train_adapter", "apply_adapter", "merge_models", "optimize_think_tokens",
        "measure_diversity",
    ]  # fmt: skip

    (tmp_path / "damaged").mkdir()
    damaged = copy_run(workflow_run, tmp_path / "damaged")
    (damaged / "results/tables/think.csv").unlink()
    lm_eval = damaged / "results/eval/karcher/lm_eval.json"
    result = json.loads(lm_eval.read_text())
    result["tasks"]["stylemerge_lambada"]["metrics"]["perplexity"]["none"] = float("nan")
    lm_eval.write_text(json.dumps(result))
    problems = gpu_check.check_outputs(damaged, damaged / "config" / "config.yaml", config)
    assert any("still has jobs to run" in p for p in problems)
    assert any("think.csv" in p for p in problems)
    assert any("karcher/lm_eval.json: task stylemerge_lambada" in p for p in problems)
    log = damaged / "logs/train_adapter/bbc_news.log"  # as a job on a GPU logs it (joblog)
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-29 INFO stylemerge.core.joblog: " + GPU_PEAK_MESSAGE % 2048 + "\n")
    peaks = gpu_check.figures(damaged, config)["peak_gpu_mib_per_job"]
    assert peaks == {"train_adapter/bbc_news": 2048}
    assert "train_adapter" not in gpu_check.unseen_on_gpu(config, peaks)
    shutil.rmtree(damaged)
