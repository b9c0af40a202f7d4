"""Slurm: the profiles, and the workflow run through a real (local, one-node) Slurm cluster.

The cluster tests need the cluster of .ci/slurm-cluster.sh: CI starts it and sets
STYLEMERGE_SLURM=1, which makes them mandatory (they fail if the cluster is not there).
Elsewhere they are skipped unless that cluster is up:

    .ci/slurm-cluster.sh install && .ci/slurm-cluster.sh start    # as root
"""

import copy
import datetime
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_workflow import REDUCED, copy_workflow, snakemake

from conftest import ROOT
from stylemerge.cost.jobs import GPU_RULES as COST_GPU_RULES

pytestmark = pytest.mark.workflow

USER_PROFILE = ROOT / "profiles" / "slurm"
CI_PROFILE = ROOT / ".ci" / "slurm-profile"
REQUIRED = os.environ.get("STYLEMERGE_SLURM") == "1"
# The test cluster (.ci/slurm-cluster.sh) and what the CI profile submits to it.
CLUSTER, PARTITION, ACCOUNT = "stylemerge", "ci", "stylemerge"
# The rules whose jobs put their models on the config's device: the cost model's list.
GPU_RULES = set(COST_GPU_RULES)
GPU_FORM = {"gpu", "gpu_model", "cpus_per_gpu", "cpus_per_task"}


def load_profile(profile) -> dict:
    return yaml.safe_load((profile / "config.yaml").read_text())


def planned_resources(stdout: str) -> dict[str, list[dict[str, str]]]:
    """Rule -> the resources of each of its jobs, from a dry run's job listing."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"^(?:local)?rule ", stdout, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = (item.split("=", 1) for item in found.group(1).split(", ")) if found else ()
        jobs.setdefault(rule, []).append(dict(pairs))
    return jobs


# --- the profiles (no cluster needed) -----------------------------------------------------


def test_user_profile_has_commented_placeholders_and_gpu_requests():
    profile = load_profile(USER_PROFILE)
    text = (USER_PROFILE / "config.yaml").read_text().splitlines()
    assert profile["executor"] == "slurm"
    # A failed job (e.g. killed at its time limit) is resubmitted: the rules' runtime is the
    # configured minutes times the attempt (test_faults checks the doubling on a retry).
    assert profile["retries"] >= 1
    defaults = profile["default-resources"]
    assert {"mem_mb", "runtime", "cpus_per_task"} <= set(defaults)
    assert defaults["cpus_per_task"] == "threads"
    placeholders = {"slurm_partition": "YOUR_PARTITION", "slurm_account": "YOUR_ACCOUNT"}
    for key, placeholder in placeholders.items():
        assert defaults[key] == placeholder
        line = next(i for i, row in enumerate(text) if row.strip().startswith(f"{key}:"))
        comment = []
        while text[line - 1 - len(comment)].strip().startswith("#"):
            comment.append(text[line - 1 - len(comment)])
        assert "FILL IN" in " ".join(comment), f"{key} has no comment saying what to fill in"
    resources = profile["set-resources"]
    # A GPU for exactly the rules that use one (stylemerge.cost.jobs.GPU_RULES, whose
    # requested GPU-hours the cost model counts): none reserved for a job that runs on CPU.
    assert {rule for rule, values in resources.items() if values.get("gpu")} == GPU_RULES
    for rule in GPU_RULES:
        assert GPU_FORM <= set(resources[rule]), rule
        assert resources[rule]["gpu"] >= 1 and resources[rule]["cpus_per_gpu"] >= 1
        # The plugin ignores cpus_per_gpu whenever cpus_per_task is set (truthy).
        assert resources[rule]["cpus_per_task"] == 0
        # Memory and time are the config's (per stage and domain), not the profile's.
        assert not {"mem_mb", "runtime"} & set(resources[rule]), rule


def test_ci_profile_has_the_user_profile_form_filled_in_for_the_test_cluster():
    user, ci = load_profile(USER_PROFILE), load_profile(CI_PROFILE)
    assert ci["executor"] == user["executor"]
    assert set(ci["default-resources"]) == set(user["default-resources"])
    assert ci["default-resources"]["cpus_per_task"] == user["default-resources"]["cpus_per_task"]
    filled = ci["default-resources"]
    assert (filled["slurm_partition"], filled["slurm_account"]) == (PARTITION, ACCOUNT)
    gpu_form = set(user["set-resources"]["train_adapter"]) - {"slurm_partition"}
    assert set(ci["set-resources"]) == {"pretrain_model"}
    assert set(ci["set-resources"]["pretrain_model"]) == gpu_form
    assert ci["set-resources"]["pretrain_model"]["cpus_per_task"] == 0


def no_user_config(tmp_path, monkeypatch) -> None:
    """Empty HOME and XDG config dir: Snakemake finds no user profile (~/.config/snakemake)."""
    for name in ("home", "xdg-config"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def fresh_clone(tmp_path) -> Path:
    """A `git clone` of this checkout's tracked files as they are in the working tree
    (committed in a scratch repository first, so that uncommitted edits are tested too):
    what a user has after cloning, symlinks as git stores them, nothing untracked."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: cannot make a fresh clone of it")
    source, clone = tmp_path / "source", tmp_path / "clone"
    for name in filter(None, listed.stdout.decode().split("\0")):
        path = ROOT / name
        if not path.is_symlink() and not path.exists():  # deleted, not yet committed
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, source / name, follow_symlinks=False)
    identity = ["-c", "user.name=stylemerge tests", "-c", "user.email=tests@invalid"]
    for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "clone"]):
        subprocess.run(["git", *args], cwd=source, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
    return clone


@pytest.mark.parametrize("configfile", [[], ["--configfile", "config/paper.yaml"]])
def test_profile_slurm_works_literally_on_a_fresh_clone(configfile, tmp_path, monkeypatch):
    """The README's `snakemake --profile slurm`, from the root of a fresh clone, with no
    set-up step and no user profile: the placeholders unfilled and no network (conftest sets
    HF_HUB_OFFLINE), as a dry run plans it."""
    clone = fresh_clone(tmp_path)
    no_user_config(tmp_path, monkeypatch)
    result = snakemake(clone, "--profile", "slurm", "-n", "all", *configfile)
    assert "Using profiles slurm and workflow specific profile profiles/default" in result.stderr, (
        result.stderr[:500]
    )
    jobs = planned_resources(result.stdout)
    assert GPU_RULES <= set(jobs), sorted(jobs)
    for rule, resources in jobs.items():
        for res in resources if rule != "all" else ():
            assert res["slurm_account"] == "YOUR_ACCOUNT", (rule, res)
            assert res.get("gpu", "0") == ("1" if rule in GPU_RULES else "0"), (rule, res)


def with_probe_rules(workdir) -> list[str]:
    """GPU rules the workflow does not define yet get a stub rule in this copy (output
    results/probe/<rule>.txt), so that the profile's entry for them is planned too.
    Returns the stubs' outputs, to be added to the targets."""
    listed = snakemake(workdir, "--list-rules").stdout.split()
    missing = sorted(GPU_RULES - set(listed))
    with (workdir / "Snakefile").open("a") as snakefile:
        for rule in missing:
            snakefile.write(
                f'\n\nrule {rule}:\n    output:\n        "results/probe/{rule}.txt"\n'
                '    shell:\n        "touch {output}"\n'
            )
    return [f"results/probe/{rule}.txt" for rule in missing]


@pytest.mark.parametrize("profile", ["slurm", "profiles/slurm"])
def test_profile_resolves_from_the_repository_root_and_plans_gpus(profile, tmp_path, monkeypatch):
    (tmp_path / "repo").mkdir()
    workdir = copy_workflow(tmp_path / "repo", REDUCED)
    # No user profile helps: `slurm` is the repository's own (the link at its root).
    no_user_config(tmp_path, monkeypatch)
    probes = with_probe_rules(workdir)

    result = snakemake(workdir, "--profile", profile, "-n", "all", *probes)
    plan = result.stdout
    used = re.search(r"Using profiles? (.*) for setting default command line", result.stderr)
    assert used and re.match(re.escape(profile) + r"\b", used.group(1)), result.stderr[:500]
    jobs = planned_resources(plan)
    assert GPU_RULES <= set(jobs) and "build_shards" in jobs
    for rule, resources in jobs.items():
        if rule == "all":
            continue
        for res in resources:
            assert res["slurm_account"] == "YOUR_ACCOUNT"
            if rule in GPU_RULES:
                assert res["slurm_partition"] == "YOUR_GPU_PARTITION"
                gpu_request = (res["gpu"], res["gpu_model"], res["cpus_per_gpu"])
                assert gpu_request == ("1", "YOUR_GPU_TYPE", "8")
                assert res["cpus_per_task"] == "0"
            else:
                assert res["slurm_partition"] == "YOUR_PARTITION"
                # No GPU (rules may declare gpu from the config: 0 by default).
                assert res.get("gpu", "0") == "0" and "gpu_model" not in res
                assert int(res["cpus_per_task"]) >= 1  # the rule's threads
                assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0


# --- a real Slurm cluster ------------------------------------------------------------------


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@functools.cache
def cluster_problem() -> str | None:
    """Why the test cluster cannot take jobs, or None when it can (asked once: with
    slurmctld down, `scontrol ping` takes seconds)."""
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        return "Slurm is not installed"
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    if not conf.is_file():
        return f"Slurm has no configuration ({conf}): no cluster was started here"
    ping = run_tool("scontrol", "ping")
    if ping.returncode != 0 or "UP" not in ping.stdout:
        answer = (ping.stdout + ping.stderr).strip().splitlines()
        return f"no slurmctld answers ({answer[0] if answer else ping.returncode})"
    config = run_tool("scontrol", "show", "config").stdout
    if not re.search(rf"^ClusterName\s*=\s*{CLUSTER}$", config, re.M):
        return "the Slurm cluster here is not the stylemerge test cluster"
    state = run_tool("sinfo", "-h", "-p", PARTITION, "-o", "%T").stdout.split()
    if not set(state) & {"idle", "mixed"}:
        return f"partition {PARTITION} has no node that takes jobs: {state}"
    if run_tool("sacct", "-n", "-X", "-S", "now").returncode != 0:
        return "sacct fails (no accounting: the executor plugin would wait forever)"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = cluster_problem()
    if problem and REQUIRED:
        pytest.fail(f"STYLEMERGE_SLURM=1 but the test cluster is not usable: {problem}")
    if problem:
        pytest.skip(
            f"{problem}; start the test cluster (as root) with `.ci/slurm-cluster.sh install"
            " && .ci/slurm-cluster.sh start` (CI does, and sets STYLEMERGE_SLURM=1)"
        )


# The reduced config of test_workflow, with jobs small enough for the one-node cluster, and
# the tiny models as targets (with their shards and tokenizers): three levels of jobs, each
# costing seconds of status polling, whatever later stages add to `all`.
SLURM_CONFIG = copy.deepcopy(REDUCED)
for _model in SLURM_CONFIG["models"].values():
    # runtime_min differs from the CI profile's default runtime (10): sbatch -t shows which
    _model["pretrain"].update(mem_mb=1000, runtime_min=9)
SLURM_TARGETS = [f"results/models/{name}" for name in SLURM_CONFIG["models"]]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"), SLURM_CONFIG)
    since = (datetime.datetime.now() - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    result = snakemake(workdir, "--profile", str(CI_PROFILE), *SLURM_TARGETS)
    out = result.stdout + result.stderr
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    # -P: whole values, separated by |; Comment is the plugin's rule_<rule>_wildcards_<...>.
    fields = ["JobID", "State", "Account", "Partition", "AllocTRES", "Comment", "SubmitLine"]
    sacct = run_tool(
        "sacct", "-X", "-n", "-P", "-S", since, "--name", run_id, "-o", ",".join(fields)
    )
    assert sacct.returncode == 0, sacct.stderr
    jobs = [dict(zip(fields, row.split("|"), strict=True)) for row in sacct.stdout.splitlines()]
    return workdir, out, jobs


def test_workflow_completes_through_slurm(slurm_run):
    workdir, _, _ = slurm_run
    results = workdir / "results"
    for domain in ("bbc_news", "notes"):
        assert (results / "shards" / domain / "manifest.json").is_file()
    for model in ("base", "general_proxy"):
        metrics = json.loads((results / "models" / model / "metrics.json").read_text())
        assert metrics["heldout_loss"] < metrics["heldout_loss_untrained"]
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "1", *SLURM_TARGETS).stdout


def test_every_job_ran_as_a_slurm_job_visible_in_sacct(slurm_run):
    _, _, jobs = slurm_run
    rules = sorted(re.match(r"rule_(\w+?)_wildcards", job["Comment"]).group(1) for job in jobs)
    assert rules == ["build_shards"] * 2 + ["pretrain_model"] * 2 + ["train_tokenizer"] * 2
    for job in jobs:
        assert job["State"] == "COMPLETED", job
        assert (job["Account"], job["Partition"]) == (ACCOUNT, PARTITION), job
        # the time limit: the rule's runtime (config minutes x attempt 1), else the profile's
        minutes = 9 if job["Comment"].startswith("rule_pretrain_model_") else 10
        submit = job["SubmitLine"].split("--wrap")[0]
        assert re.search(rf"(^|\s)-t {minutes}(\s|$)", submit), job["SubmitLine"]


def test_gpu_rule_was_submitted_with_the_gpu_request_form(slurm_run):
    _, _, jobs = slurm_run
    for job in jobs:
        if job["Comment"].startswith("rule_pretrain_model_"):
            assert "--gpus=fake:1" in job["SubmitLine"] and "--cpus-per-gpu=1" in job["SubmitLine"]
            assert "--cpus-per-task" not in job["SubmitLine"].split("--wrap")[0]
            assert "gres/gpu=1" in job["AllocTRES"], job  # granted from the fake GPUs
        else:
            assert "--gpus" not in job["SubmitLine"].split("--wrap")[0]
            assert "--cpus-per-task=1" in job["SubmitLine"]
            assert "gres/gpu" not in job["AllocTRES"], job
