"""Experiment tracking (stylemerge.core.tracking): one named run per job, grouped by the workflow's
run, continued when the job runs again, with the job's results logged; real wandb in offline
mode (its own record files read back) and real tensorboard event files."""

import copy
import os
import struct
import types
from pathlib import Path

import pytest
from test_workflow import REDUCED, copy_workflow, snakemake

from stylemerge.core.job import JobSettings
from stylemerge.core.tracking import measured, tracked_run, wandb_run_id
from stylemerge.workflow.snakemake_job import tracking_name


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "stylemerge-tests")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    yield
    # wandb.init in this process exports its service's socket: processes started later (a
    # workflow's jobs) would write into that service instead of their own
    os.environ.pop("WANDB_SERVICE", None)


def flushed() -> None:
    """Wait for wandb's service to write everything out, as a job's exit does (wandb's
    atexit teardown): the service writes the run file after ``finish`` returns, so a test
    that reads it at once races the writer (seen once on a loaded machine: no exit record)."""
    import wandb

    wandb.teardown()


def wandb_records(path: Path) -> list:
    """The protobuf records of a wandb run file (``run-<id>.wandb``): a 7-byte header
    (``:W&B``, magic, version), then 32 KiB blocks of records, each with a 7-byte header
    (crc32, length, type: full, first, middle, last), as wandb writes them."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, pending, block = [], b"", 32768
    offset = 7
    while offset + 7 <= len(data):
        room = block - offset % block
        if room < 7:  # the block's tail is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if kind == 0:  # zero padding at the end
            break
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        pending += chunk
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_runs(directory: Path) -> list[dict]:
    """Each offline run under ``directory``: its id, name, group, job type, and the keys of
    its history rows and summary updates."""
    flushed()
    runs = []
    for path in sorted(directory.rglob("offline-run-*/run-*.wandb")):
        run = {"history": set(), "summary": {}, "file": path}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(
                    id=record.run.run_id,
                    name=record.run.display_name,
                    group=record.run.run_group,
                    job_type=record.run.job_type,
                )
            elif kind == "history":
                run["history"] |= {
                    item.key or "/".join(item.nested_key) for item in record.history.item
                }
            elif kind == "summary":
                for item in record.summary.update:
                    run["summary"][item.key or "/".join(item.nested_key)] = item.value_json
        runs.append(run)
    return runs


def test_a_jobs_run_id_follows_its_name_and_project_only():
    assert wandb_run_id("p", "smol/grpo/bbc_news") == wandb_run_id("p", "smol/grpo/bbc_news")
    ids = {wandb_run_id(p, n) for p in ("p", "q") for n in ("smol/grpo/a", "smol/grpo/b")}
    assert len(ids) == 4
    assert all(len(i) <= 64 and i.isalnum() for i in ids)


def test_a_results_numbers_are_flattened_and_the_rest_left_out():
    result = {
        "heldout_loss": {"bbc_news": 2.5, "notes": float("nan")},
        "steps": 3,
        "tied": True,
        "log_history": [{"loss": 1.0}],
        "provenance": {"seed": 1},
        "per_document": {"values": [1.0]},
        "model": "base",
    }
    assert measured(result, "result/") == {
        "result/heldout_loss/bbc_news": 2.5,
        "result/steps": 3.0,
    }


def test_names_carry_the_run_stage_name_and_a_replicates_seed():
    config = {"run_name": "smol", "seed": 1}
    own = types.SimpleNamespace(domain="bbc_news", replicate="")
    other = types.SimpleNamespace(domain="bbc_news", replicate="seeds/2/")
    path = "results/smol/logs/grpo/bbc_news-mara"
    assert tracking_name(config, path, own) == "smol/grpo/bbc_news-mara"
    assert tracking_name({**config, "seed": 2}, path, other) == "smol/grpo/bbc_news-mara/2"
    assert tracking_name({"run_name": None, "seed": 0}, "results/logs/proxy/x", own) == (
        "default/proxy/x"
    )
    job = JobSettings.from_config(
        {"seed": 0, "device": "cpu", "precision": "fp32", "trust_remote_code": False}
        | {"allow_pickle_weights": False, "run_name": "smol", "report_to": ["wandb"]},
        tracking_dir=path,
        tracking_name="smol/grpo/bbc_news-mara",
    )
    assert (job.tracking_name, job.tracking_group) == ("smol/grpo/bbc_news-mara", "smol")


def test_a_tracked_job_is_one_named_run_continued_when_it_runs_again(tmp_path):
    directory = tmp_path / "logs" / "think" / "base"
    job = JobSettings(
        report_to=("wandb", "tensorboard"),
        tracking_dir=str(directory),
        tracking_name="smol/think/base",
    )
    for attempt in range(2):  # a job killed and run again opens the same run
        with tracked_run(job) as tracker:
            tracker.log_history([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}])
            tracker.log_result({"heldout_ce_after": {"heldout": 1.25 + attempt}, "steps": 2})
    runs = wandb_runs(directory)
    assert len(runs) == 2
    expected_id = wandb_run_id("stylemerge-tests", "smol/think/base")
    for run in runs:
        assert (run["id"], run["name"], run["group"], run["job_type"]) == (
            expected_id,
            "smol/think/base",
            "smol",
            "think",
        )
        assert {"train/loss", "train/global_step"} <= run["history"]
    assert runs[-1]["summary"]["result/heldout_ce_after/heldout"] == "2.25"
    # tensorboard: the same numbers, in the tracking directory
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    assert {"train/loss", "result/heldout_ce_after/heldout", "result/steps"} <= set(
        events.Tags()["scalars"]
    )
    first = [(e.step, e.value) for e in events.Scalars("train/loss")][:2]
    assert first == [(1, 3.0), (2, 2.5)]


def test_without_a_tracker_nothing_is_written(tmp_path):
    job = JobSettings(tracking_dir=str(tmp_path / "t"), tracking_name="r/s/n")
    with tracked_run(job) as tracker:
        tracker.log_result({"x": 1.0})
        tracker.log_history([{"step": 1, "loss": 1.0}])
    assert not (tmp_path / "t").exists()


def test_a_failed_job_closes_its_run_as_failed(tmp_path):
    job = JobSettings(
        report_to=("wandb",),
        tracking_dir=str(tmp_path / "t"),
        tracking_name="r/grpo/x",
    )
    with pytest.raises(FloatingPointError), tracked_run(job):
        raise FloatingPointError("loss is nan")
    flushed()
    exits = [
        record.exit.exit_code
        for path in (tmp_path / "t").rglob("run-*.wandb")
        for record in wandb_records(path)
        if record.WhichOneof("record_type") == "exit"
    ]
    assert exits == [1]


# --- the workflow: every tracked stage, named by the rule's layout -------------------------

TRACKED = copy.deepcopy(REDUCED)
TRACKED.update(run_name="tracked", report_to=["wandb", "tensorboard"])
TRACKED["grpo"]["trainer"]["logging_steps"] = 1  # its 3 steps logged (the default: every 5)


@pytest.mark.workflow
def test_every_tracked_job_of_a_run_is_a_named_run_in_its_group(tmp_path):
    (tmp_path / "wf").mkdir()
    workdir = copy_workflow(tmp_path / "wf", TRACKED)
    targets = [
        "results/tracked/adapters/bbc_news",
        "results/tracked/think/base",
        "results/tracked/eval/base/lm_eval.json",
        "results/tracked/eval/base/diversity",
    ]
    snakemake(workdir, "--cores", "2", *targets)
    logs = workdir / "results" / "tracked" / "logs"
    runs = {run["name"]: run for run in wandb_runs(logs)}
    expected = {
        "tracked/pretrain/base": "pretrain",
        "tracked/pretrain/general_proxy": "pretrain",
        "tracked/proxy/bbc_news": "proxy",
        "tracked/grpo/bbc_news": "grpo",
        "tracked/think/base": "think",
        "tracked/lm_eval/base": "lm_eval",
        "tracked/diversity/base": "diversity",
    }
    assert set(runs) == set(expected), sorted(runs)
    for name, stage in expected.items():
        run = runs[name]
        assert (run["group"], run["job_type"]) == ("tracked", stage), run
        assert run["file"].is_relative_to(logs / stage), run["file"]
        assert run["summary"], name  # the job's results
    # the Trainer stages logged their steps into the run opened for them, think its own
    steps = ("pretrain/base", "proxy/bbc_news", "grpo/bbc_news", "think/base")
    for name in (f"tracked/{run}" for run in steps):
        assert "train/loss" in runs[name]["history"], (name, runs[name]["history"])
    lm_eval = runs["tracked/lm_eval/base"]["summary"]
    assert any(key.startswith("result/tasks/stylemerge_lambada/") for key in lm_eval), lm_eval
