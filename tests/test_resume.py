"""Every long job resumes: a style proxy and the think rows, killed with SIGKILL right after a
checkpoint (the job process kills itself there, so the kill always lands mid-run), run again
from the same checkpoint directory, end with the bit-identical result of an uninterrupted run.
(GRPO's resume: tests/test_grpo.py.)"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import PRETRAIN, TEST_DOMAINS

# The job, in its own process: the checkpoint writer wrapped to SIGKILL the process once the
# checkpoint of step KILL_AT is complete on disk.
KILLED_JOB = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
{patch}
{call}
"""
PROXY_PATCH = """
import transformers
save = transformers.Trainer._save_checkpoint
def killing_save(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if self.state.global_step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
transformers.Trainer._save_checkpoint = killing_save
"""
THINK_PATCH = """
import stylemerge.think.optimize as think
save = think.save_rows_checkpoint
def killing_save(directory, step, *args):
    save(directory, step, *args)
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
think.save_rows_checkpoint = killing_save
"""
PROXY_SETTINGS = {**PRETRAIN, "steps": 24, "learning_rate": 0.003, "save_steps": 5}
THINK_DATA = {"source": "builtin", "train": 48, "heldout": 16, "shots": 1, "heldout_fraction": 0.25}
THINK_SETTINGS = {
    "steps": 12,
    "learning_rate": 0.02,
    "batch_size": 8,
    "max_length": 384,
    "save_steps": 4,
}


def killed(call: str, patch: str, kill_at: int) -> None:
    script = KILLED_JOB.format(
        tests=os.path.dirname(__file__), patch=patch.format(kill_at=kill_at), call=call
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def proxy_call(general, shards, out, ckpt) -> str:
    heldout = {d: str(shards[d]["heldout"]) for d in TEST_DOMAINS}
    return (
        "from stylemerge.core.job import JobSettings\n"
        "from stylemerge.proxy.train import train_proxy\n"
        f"train_proxy(JobSettings(seed=5), {str(general)!r}, 'bbc_news', "
        f"{str(shards['bbc_news']['train'])!r}, {heldout!r}, {str(out)!r}, "
        f"{PROXY_SETTINGS!r}, checkpoint_dir={str(ckpt)!r})"
    )


def test_a_killed_proxy_resumes_to_the_uninterrupted_result(shards, tiny_general_proxy, tmp_path):
    from stylemerge.proxy.train import train_proxy

    ckpt, out = tmp_path / "ckpt", tmp_path / "killed"
    killed(proxy_call(tiny_general_proxy, shards, out, ckpt), PROXY_PATCH, kill_at=10)
    assert not out.exists()  # no partial output
    assert (ckpt / "checkpoint-10" / "trainer_state.json").is_file()

    def run(out, ckpt):
        heldout = {d: shards[d]["heldout"] for d in TEST_DOMAINS}
        from stylemerge.core.job import JobSettings

        return train_proxy(
            JobSettings(seed=5),
            tiny_general_proxy,
            "bbc_news",
            shards["bbc_news"]["train"],
            heldout,
            out,
            PROXY_SETTINGS,
            checkpoint_dir=ckpt,
        )

    resumed = run(out, ckpt)
    assert resumed["resumed_from"] == "checkpoint-10"
    assert not ckpt.exists()  # removed once the proxy is saved
    whole = run(tmp_path / "whole", tmp_path / "ckpt-whole")
    assert whole["resumed_from"] is None
    assert_same_weights(out, tmp_path / "whole")
    for key in ("heldout_loss_after", "train_loss", "log_history"):
        if key == "log_history":  # the same steps and values; run times differ
            strip = [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}
                     for e in resumed[key] if "eval_heldout_loss" not in e]  # fmt: skip
            again = [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}
                     for e in whole[key] if "eval_heldout_loss" not in e]  # fmt: skip
            assert [e.get("loss") for e in strip] == [e.get("loss") for e in again]
        else:
            assert resumed[key] == whole[key], key


def test_proxy_checkpoints_of_other_settings_are_not_resumed(shards, tiny_general_proxy, tmp_path):
    ckpt = tmp_path / "ckpt"
    killed(proxy_call(tiny_general_proxy, shards, tmp_path / "a", ckpt), PROXY_PATCH, kill_at=10)
    from stylemerge.core.job import JobSettings
    from stylemerge.proxy.train import train_proxy

    heldout = {d: shards[d]["heldout"] for d in TEST_DOMAINS}
    other = {**PROXY_SETTINGS, "learning_rate": 0.001}
    metrics = train_proxy(
        JobSettings(seed=5),
        tiny_general_proxy,
        "bbc_news",
        shards["bbc_news"]["train"],
        heldout,
        tmp_path / "a",
        other,
        checkpoint_dir=ckpt,
    )
    assert metrics["resumed_from"] is None


def think_call(model, out, ckpt) -> str:
    return (
        "from stylemerge.data.arithmetic import build_traces\n"
        "from stylemerge.core.job import JobSettings\n"
        "from stylemerge.think.optimize import optimize_think_tokens\n"
        f"optimize_think_tokens(JobSettings(seed=5), {str(model)!r}, "
        f"build_traces({THINK_DATA!r}, 5), {str(out)!r}, {THINK_SETTINGS!r}, "
        f"checkpoint_dir={str(ckpt)!r})"
    )


@pytest.mark.parametrize("kill_at", [4, 8])
def test_killed_think_rows_resume_to_the_uninterrupted_rows(tiny_base, tmp_path, kill_at):
    from stylemerge.core.job import JobSettings
    from stylemerge.data.arithmetic import build_traces
    from stylemerge.think.optimize import optimize_think_tokens

    ckpt, out = tmp_path / "ckpt", tmp_path / "killed"
    killed(think_call(tiny_base, out, ckpt), THINK_PATCH, kill_at=kill_at)
    assert not out.exists()
    state = json.loads((ckpt / f"checkpoint-{kill_at}" / "trainer_state.json").read_text())
    assert state["global_step"] == kill_at

    def run(out, ckpt):
        traces = build_traces(THINK_DATA, 5)
        return optimize_think_tokens(
            JobSettings(seed=5), tiny_base, traces, out, THINK_SETTINGS, checkpoint_dir=ckpt
        )

    resumed = run(out, ckpt)
    assert resumed["resumed_from"] == f"checkpoint-{kill_at}"
    assert not ckpt.exists()
    whole = run(tmp_path / "whole", tmp_path / "ckpt-whole")
    assert whole["resumed_from"] is None
    assert_same_weights(out, tmp_path / "whole")
    assert resumed["heldout_ce_after"] == whole["heldout_ce_after"]
    assert resumed["log_history"] == whole["log_history"]
