"""Faults, determinism and load: Snakemake runs of the reduced config (test_workflow.REDUCED)
killed with SIGKILL and rerun, retried, run with more --cores than the machine has, and
with one domain failing under --keep-going.

Three runs are shared by the tests here, besides the session's `workflow_run` (seed 7,
uninterrupted, `--cores 2`):

* `interrupted_run`: the same config and seed in a fresh copy, with the whole Snakemake
  process group SIGKILLed three times (while GRPO trains, after its first checkpoint; while a
  merge is about to move its finished output into place; right after an evaluation moved its
  output into place, before Snakemake recorded the job as done), then rerun to completion. It
  must end with the same tables as `workflow_run`.
* `seed_run`: another seed, `--cores 8` on (at most) 2 cores, `--retries 1`, and one job
  that fails on its first attempt. Its tables must differ; no more threads than cores may run
  at once; the retried job must get twice the runtime.
* `keep_going`: a copy of `workflow_run`'s results where one domain's proxy is corrupt, so
  that domain's GRPO job fails.

The faults are injected by a `sitecustomize` module on the jobs' PYTHONPATH (HOOK below): it
pauses a job at a chosen `os.replace` (the rename of stylemerge.core.files.atomic_path), records
each
job's rule, threads, runtime and lifetime, and makes one job fail once. It changes no result.
"""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_workflow import REDUCED, copy_workflow, snakemake

pytestmark = pytest.mark.workflow

HOOK = '''\
"""tests/test_faults.py: fault injection and job records, inert unless the environment asks."""
import os

_markers = os.environ.get("STYLEMERGE_TEST_MARKERS")
_pause = os.environ.get("STYLEMERGE_TEST_PAUSE")  # "before|after:<absolute path>"
if _pause and _markers:
    _when, _, _target = _pause.partition(":")
    _real_replace = os.replace

    def _stop(src, dst):
        import json
        import time

        tmp = os.path.join(_markers, "paused.tmp")
        with open(tmp, "w") as fh:
            json.dump({"pid": os.getpid(), "when": _when, "src": os.fspath(src),
                       "dst": os.fspath(dst)}, fh)
        _real_replace(tmp, os.path.join(_markers, "paused.json"))
        time.sleep(3600)  # until the test kills the process group

    def _replace(src, dst, *args, **kwargs):
        hit = os.path.realpath(dst) == os.path.realpath(_target)
        if hit and _when == "before":
            _stop(src, dst)
        _real_replace(src, dst, *args, **kwargs)
        if hit and _when == "after":
            _stop(src, dst)

    os.replace = _replace

_joblog = os.environ.get("STYLEMERGE_TEST_JOBLOG")
if _joblog:
    import atexit
    import time

    _started = time.time()

    def _record():
        import __main__
        import json
        import sys

        job = getattr(__main__, "snakemake", None)
        if not hasattr(job, "rule") or not hasattr(job, "threads"):
            return  # not a Snakemake script job
        torch = sys.modules.get("torch")
        # a job's wildcard values (the recipe's GRPO arm is the empty string)
        name = ",".join(str(v) for v in job.wildcards if str(v))
        record = {
            "pid": os.getpid(),
            "rule": job.rule,
            "job": f"{job.rule}:{name}",
            "threads": job.threads,
            "runtime": getattr(job.resources, "runtime", None),
            "torch_threads": torch.get_num_threads() if torch else None,
            "cores_seen": len(os.sched_getaffinity(0)),
            "start": _started,
            "end": time.time(),
        }
        fail = os.environ.get("STYLEMERGE_TEST_FAIL_ONCE")
        failed = os.path.join(_joblog, "failed-once")
        record["failed_on_purpose"] = fail == record["job"] and not os.path.exists(failed)
        with open(os.path.join(_joblog, f"{os.getpid()}.json"), "w") as fh:
            json.dump(record, fh)
        if record["failed_on_purpose"]:
            open(failed, "w").close()
            os._exit(3)

    atexit.register(_record)
'''


# --- helpers ---------------------------------------------------------------------------------


def hooked_env(root: Path, **extra: str) -> dict:
    """The environment of a run with HOOK importable; `extra` switches its parts on."""
    hooks = root / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOK)
    path = [str(hooks), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), **extra}


def two_cores() -> set[int]:
    return set(sorted(os.sched_getaffinity(0))[:2])


class Snakemake:
    """`snakemake ...` in its own session (process group), output to a file."""

    started: list["Snakemake"] = []

    def __init__(self, workdir: Path, *args: str, env: dict, log: Path, cpus=None):
        self.log = log
        Snakemake.started.append(self)
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snakemake", *args],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition, what: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"snakemake ended (rc {self.proc.returncode}) before {what}:\n"
                    + self.output()[-6000:]
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {what} within {timeout} s:\n{self.output()[-6000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to Snakemake and every job it started (one process group)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def finish(self, timeout: float = 900) -> str:
        self.proc.wait(timeout=timeout)
        return self.output()

    @classmethod
    def kill_all(cls) -> None:
        """Whatever a failed test left running (a job paused by HOOK sleeps for an hour)."""
        while cls.started:
            run = cls.started.pop()
            if run.proc.poll() is None:
                run.kill()


def job_block(plan: str, rule: str, wildcards: str) -> str:
    """The dry run's entry of the job of `rule` with `wildcards` ("" when not planned)."""
    for block in re.split(r"^(?:local)?rule ", plan, flags=re.M)[1:]:
        # whole values: "eval_model=karcher" is not "eval_model=karcher_deltas"
        line = re.search(r"^\s*wildcards: (.*)$", block, flags=re.M)
        if (
            block.startswith(f"{rule}:")
            and line
            and set(wildcards.split(", ")) <= set(line.group(1).split(", "))
        ):
            return block
    return ""


def copy_run(src: Path, dest: Path) -> Path:
    """A fresh copy of the workflow with `src`'s config, results and Snakemake metadata:
    up to date without recomputing anything."""
    config = yaml.safe_load((src / "config" / "config.yaml").read_text())
    copy_workflow(dest, config)
    shutil.copytree(src / "results", dest / "results")  # copy2: keeps modification times
    for part in ("metadata", "incomplete"):
        if (src / ".snakemake" / part).is_dir():
            shutil.copytree(src / ".snakemake" / part, dest / ".snakemake" / part)
    # Records that name a file of `src` by absolute path (a builtin corpus outside the working
    # directory, see stylemerge.data.sources.source_files) point at this copy's files instead.
    for record in (dest / ".snakemake" / "metadata").iterdir():
        text = record.read_text()
        if f"{src}/" in text:
            record.write_text(text.replace(f"{src}/", f"{dest}/"))
    # copy_workflow wrote the local source files just now; make them older than the results
    oldest = min(p.stat().st_mtime for p in (dest / "results").rglob("*"))
    for path in (dest / "data").rglob("*"):
        os.utime(path, (oldest - 60, oldest - 60))
    return dest


def csv_tables(workdir: Path) -> dict[str, str]:
    """The tables a run produced, cost.csv (wall-clock times) aside."""
    tables = workdir / "results" / "tables"
    return {p.name: p.read_text() for p in sorted(tables.glob("*.csv")) if p.name != "cost.csv"}


@pytest.fixture(scope="module", autouse=True)
def no_run_left_behind():
    yield
    Snakemake.kill_all()


# --- a run killed three times, then completed ---------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupted")
    (root / "wf").mkdir()
    workdir = copy_workflow(root / "wf", REDUCED)
    seen: dict = {"workdir": workdir}
    results = workdir / "results"

    def phase(name, **extra):
        markers = root / name
        markers.mkdir()
        env = hooked_env(root, STYLEMERGE_TEST_MARKERS=str(markers), **extra)
        return markers, Snakemake(workdir, "--cores", "2", "all", env=env, log=root / f"{name}.log")

    # 1. GRPO: kill once a domain's first checkpoint is complete
    _, run = phase("grpo")
    found = []

    def checkpoint():
        found[:] = sorted(results.glob("checkpoints/*/checkpoint-2/trainer_state.json"))
        return bool(found)

    run.wait_for(checkpoint, "a GRPO checkpoint")
    run.kill()
    domain = found[0].parts[-3]
    seen["grpo"] = {
        "domain": domain,
        "adapter_after_kill": (results / "adapters" / domain).exists(),
        "checkpoints_after_kill": sorted(
            p.name for p in (results / "checkpoints" / domain).iterdir()
        ),
    }
    # The killed Snakemake left its lock behind: a real run refuses to start until --unlock.
    locked = snakemake(workdir, "--cores", "1", f"results/adapters/{domain}", check=False)
    seen["locked"] = locked.returncode, locked.stdout + locked.stderr
    snakemake(workdir, "--unlock")

    # 2. a merge: kill while it is about to move its finished output into place
    target = results / "merges" / "karcher"
    markers, run = phase("merge", STYLEMERGE_TEST_PAUSE=f"before:{target}")
    paused = markers / "paused.json"
    run.wait_for(paused.exists, "the karcher merge at its rename")
    run.kill()  # what it had written stays as it was at the pause
    info = json.loads(paused.read_text())
    seen["merge"] = {
        "paused": info,
        "written_at_pause": sorted(p.name for p in (workdir / info["src"]).iterdir()),
    }
    seen["merge"]["final_after_kill"] = target.exists()
    seen["merge"]["left_over"] = sorted(p.name for p in target.parent.glob(".karcher.*"))
    plan = snakemake(workdir, "-n", "--cores", "2", "all").stdout
    seen["merge"]["plan"] = job_block(plan, "merge_models", "method=karcher")
    adapter = json.loads((results / "adapters" / domain / "metrics.json").read_text())
    seen["grpo"]["adapter_metrics"] = adapter
    seen["grpo"]["checkpoints_after_rerun"] = (results / "checkpoints" / domain).exists()
    snakemake(workdir, "--unlock")

    # 3. an evaluation: kill after its output is in place, before Snakemake saw the job end
    target = results / "eval" / "karcher" / "lm_eval.json"
    markers, run = phase("eval", STYLEMERGE_TEST_PAUSE=f"after:{target}")
    paused = markers / "paused.json"
    run.wait_for(paused.exists, "the karcher evaluation after its rename")
    run.kill()
    seen["eval"] = {"at_pause": json.loads(target.read_text())}
    seen["eval"]["inode_after_kill"] = target.stat().st_ino
    strict = snakemake(
        workdir, "-n", "--cores", "2", "all", "--workflow-profile", "none", check=False
    )
    seen["eval"]["strict"] = strict.returncode, strict.stdout + strict.stderr
    plan = snakemake(workdir, "-n", "--cores", "2", "all").stdout
    seen["eval"]["plan"] = job_block(plan, "evaluate_lm", "eval_model=karcher")
    snakemake(workdir, "--unlock")

    # 4. rerun to the end
    snakemake(workdir, "--cores", "2", "all")
    seen["final_plan"] = snakemake(workdir, "-n", "--cores", "2", "all").stdout
    return seen


def test_sigkill_during_grpo_resumes_from_the_last_checkpoint(interrupted_run):
    grpo = interrupted_run["grpo"]
    assert not grpo["adapter_after_kill"]
    assert "checkpoint-2" in grpo["checkpoints_after_kill"]
    # the kill lands once checkpoint-2 is complete, and may land after checkpoint-3 (the
    # last step) too: the rerun resumes from a complete one and trains no step more
    resumed = grpo["adapter_metrics"]["resumed_from"]
    assert resumed in grpo["checkpoints_after_kill"] and int(resumed.split("-")[1]) >= 2
    assert grpo["adapter_metrics"]["steps"] == 3
    assert not grpo["checkpoints_after_rerun"]  # removed once the adapter is complete


def test_after_a_sigkill_the_next_run_starts_or_says_to_unlock(interrupted_run):
    # The killed Snakemake leaves its lock: Snakemake 9.27 refuses to run until
    # `snakemake --unlock`, and says so (a later version may clear a stale lock itself).
    returncode, output = interrupted_run["locked"]
    assert returncode == 0 or (
        "Directory cannot be locked" in output and "removed with the --unlock argument" in output
    ), output[-3000:]


def test_sigkill_during_a_merge_leaves_nothing_at_the_final_path(interrupted_run):
    merge = interrupted_run["merge"]
    # Killed at its rename, the merge was complete in its temporary sibling ...
    src = Path(merge["paused"]["src"])
    assert src.parent.name.startswith(".karcher.") and src.name == "karcher"
    assert {"metrics.json", "mergekit_config.yml", "model.safetensors"} <= set(
        merge["written_at_pause"]
    )
    # ... and there was nothing at the final path: the rerun planned the merge again
    assert not merge["final_after_kill"]
    assert "Missing output files: results/merges/karcher" in merge["plan"]
    merges = interrupted_run["workdir"] / "results" / "merges"
    metrics = json.loads((merges / "karcher" / "metrics.json").read_text())
    assert metrics["entropy"]["merged"]["entropy"] > 0
    # the killed job's temporary sibling stays behind, hidden; nothing else is there
    visible = sorted(p.name for p in merges.iterdir() if not p.name.startswith("."))
    assert visible == ["karcher", "karcher_deltas"]


def test_sigkill_after_an_evaluation_wrote_its_output_is_redone(interrupted_run):
    evaluation = interrupted_run["eval"]
    assert evaluation["at_pause"]["tasks"]  # complete on disk, but the job had not ended
    returncode, output = evaluation["strict"]
    # without the default profile's rerun-incomplete Snakemake refuses to use it ...
    assert returncode != 0 and "seem to be incomplete" in output
    assert "results/eval/karcher/lm_eval.json" in output.split("Incomplete files:")[1]
    # ... with it, the evaluation is planned again and was redone
    # (rerun-incomplete makes Snakemake force the jobs of incomplete files)
    assert "reason: Forced execution" in evaluation["plan"]
    final = interrupted_run["workdir"] / "results/eval/karcher/lm_eval.json"
    assert final.stat().st_ino != evaluation["inode_after_kill"]
    assert json.loads(final.read_text())["tasks"].keys() == evaluation["at_pause"]["tasks"].keys()


def test_interrupted_run_ends_with_the_same_tables_as_an_uninterrupted_one(
    interrupted_run, workflow_run
):
    assert "Nothing to be done" in interrupted_run["final_plan"]
    ours, theirs = csv_tables(interrupted_run["workdir"]), csv_tables(workflow_run)
    assert set(ours) == set(theirs) and len(ours) >= 7
    for name in ours:
        assert ours[name] == theirs[name], name


# --- another seed, --cores 8 on two cores, a job that fails once ---------------------------


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    cpus = two_cores()
    if len(cpus) < 2:
        pytest.skip("needs two cores to see jobs run side by side")
    root = tmp_path_factory.mktemp("seed")
    config = copy.deepcopy(REDUCED)
    config["seed"] = 8
    # a rule asking for more threads than the machine has (pretrain of the general proxy)
    proxy = config["models"]["general_proxy"]
    proxy["pretrain"] = {**proxy["pretrain"], "threads": 8}
    (root / "wf").mkdir()
    workdir = copy_workflow(root / "wf", config)
    joblog = root / "jobs"
    joblog.mkdir()
    env = hooked_env(
        root,
        STYLEMERGE_TEST_JOBLOG=str(joblog),
        STYLEMERGE_TEST_FAIL_ONCE="apply_adapter:notes",
    )
    run = Snakemake(
        workdir, "--cores", "8", "--retries", "1", "all", env=env, log=root / "run.log", cpus=cpus
    )
    output = run.finish(timeout=1800)
    assert run.proc.returncode == 0, output[-6000:]
    jobs = sorted(
        (json.loads(p.read_text()) for p in joblog.glob("*.json")), key=lambda j: j["start"]
    )
    return {"workdir": workdir, "output": output, "jobs": jobs, "cores": len(cpus)}


def test_a_different_seed_changes_the_tables(seed_run, workflow_run):
    ours, theirs = csv_tables(seed_run["workdir"]), csv_tables(workflow_run)
    assert set(ours) == set(theirs)
    changed = {name for name in ours if ours[name] != theirs[name]}
    # every continuous measure moves with the seed (pretraining, proxies, sampling)
    assert {"adapters.csv", "merges.csv", "lambada.csv", "bits_per_byte.csv"} <= changed
    assert {"diversity.csv", "think.csv"} <= changed


def test_more_cores_than_the_machine_never_run_more_threads_than_cores(seed_run):
    cores, jobs = seed_run["cores"], seed_run["jobs"]
    assert f"--cores 8 exceeds the {cores} cores available here" in seed_run["output"]
    assert len(jobs) >= 25  # every script job of `all` recorded itself
    for job in jobs:
        assert job["cores_seen"] == cores
        assert 1 <= job["threads"] <= cores, job
        assert job["torch_threads"] is None or job["torch_threads"] <= job["threads"], job
    wide = [job for job in jobs if job["job"] == "pretrain_model:general_proxy"]
    assert [(job["threads"], job["torch_threads"]) for job in wide] == [(cores, cores)]
    # the jobs' own lifetimes: at no job's start were more threads running than cores
    busiest = max(
        sum(other["threads"] for other in jobs if other["start"] <= job["start"] < other["end"])
        for job in jobs
    )
    assert busiest == cores  # jobs did run side by side, and never beyond the cores


def test_a_failed_job_is_retried_with_twice_its_runtime(seed_run):
    attempts = [job for job in seed_run["jobs"] if job["job"] == "apply_adapter:notes"]
    assert [job["failed_on_purpose"] for job in attempts] == [True, False]
    first, second = (job["runtime"] for job in attempts)
    assert first >= 1 and second == 2 * first
    assert "Trying to restart job" in seed_run["output"]
    model = seed_run["workdir"] / "results" / "domain_models" / "notes" / "model.safetensors"
    assert model.is_file()


# --- one domain fails: --keep-going still builds the other -----------------------------------


@pytest.fixture(scope="module")
def keep_going(workflow_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("keepgoing")
    (root / "wf").mkdir()
    workdir = copy_run(workflow_run, root / "wf")
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "1", "all").stdout
    # notes' style proxy is corrupt (its modification time kept: nothing else reruns) ...
    proxy = workdir / "results" / "proxies" / "notes" / "model.safetensors"
    stat = proxy.stat()
    proxy.write_bytes(b"not a safetensors file")
    os.utime(proxy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # ... and both domains' adapters are to be built, notes' first (one core)
    adapters = workdir / "results" / "adapters"
    for domain in ("bbc_news", "notes"):
        shutil.rmtree(adapters / domain)
    targets = ["results/adapters/bbc_news", "results/adapters/notes"]
    notes_first = ["--cores", "1", "--prioritize", "results/adapters/notes"]
    stopped = snakemake(workdir, *targets, *notes_first, check=False)
    stopped_built = sorted(p.name for p in adapters.glob("*"))
    kept_going = snakemake(workdir, *targets, *notes_first, "--keep-going", check=False)
    return {
        "workdir": workdir,
        "stopped": stopped,
        "stopped_built": stopped_built,
        "kept_going": kept_going,
    }


def test_without_keep_going_the_first_failure_stops_the_run(keep_going):
    stopped = keep_going["stopped"]
    assert stopped.returncode != 0
    assert "Error in rule train_adapter" in stopped.stderr
    assert keep_going["stopped_built"] == []  # bbc_news never started


def test_keep_going_builds_the_other_domain_and_names_the_failed_job(keep_going):
    result = keep_going["kept_going"]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    failed = output.split("Error in rule train_adapter:")[1]
    assert "output: results/adapters/notes\n" in failed
    assert "log: logs/train_adapter/notes.log" in failed
    # the log itself follows (the default profile's show-failed-logs), naming the cause
    assert "results/proxies/notes: cannot load model" in failed
    assert "1 of 2 steps (50%) done" in output
    adapters = keep_going["workdir"] / "results" / "adapters"
    assert not (adapters / "notes").exists()
    metrics = json.loads((adapters / "bbc_news" / "metrics.json").read_text())
    assert metrics["steps"] == 3
