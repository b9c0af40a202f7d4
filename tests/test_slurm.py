"""Slurm: the profiles, and the workflow run through a real (local, one-node) Slurm cluster.

The cluster tests need the cluster of .ci/slurm-cluster.sh: CI starts it and sets
STYLEMERGE_SLURM=1, which makes them mandatory (they fail if the cluster is not there).
Elsewhere they are skipped unless that cluster is up:

    .ci/slurm-cluster.sh install && .ci/slurm-cluster.sh start    # as root
"""

import copy
import datetime
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from snakemake_interface_executor_plugins.settings import SharedFSUsage
from test_workflow import REDUCED, copy_workflow, snakemake

from conftest import ROOT
from stylemerge.core.job import missing_job_environment
from stylemerge.resources.rules import GPU_RULES as COST_GPU_RULES

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
    # A GPU for exactly the rules that use one (stylemerge.resources.rules.GPU_RULES, whose
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


def test_profiles_run_every_job_in_the_gpu_environment():
    """Jobs run in .venv-gpu (vLLM), not in the environment they were submitted from (the
    Slurm plugin's, which cannot hold vLLM): the profile activates it first in every job, and
    with software-deployment out of shared-fs-usage a job runs `python -m snakemake` from
    PATH, the activated one (with it in, the submitting interpreter's absolute path)."""
    user, ci = load_profile(USER_PROFILE), load_profile(CI_PROFILE)
    assert user["precommand"] == ". .venv-gpu/bin/activate"
    everything = {usage.item_to_choice() for usage in SharedFSUsage.all()}
    assert set(user["shared-fs-usage"]) == everything - {"software-deployment"}
    for key in ("precommand", "shared-fs-usage"):
        assert ci[key] == user[key], key
    # the GPU set holds what a job inside its allocation needs, never the submitter's plugin
    gpu_pins = (ROOT / "constraints-gpu.txt").read_text()
    jobstep = re.search(r"^snakemake-executor-plugin-slurm-jobstep==\S+$", gpu_pins, re.M)
    assert jobstep and jobstep.group(0) in (ROOT / "constraints.txt").read_text()
    assert "vllm==" in gpu_pins and "\nsnakemake-executor-plugin-slurm==" not in gpu_pins
    assert re.search(r"^GPU_EXTRAS := .*\bslurm-jobstep\b", (ROOT / "Makefile").read_text(), re.M)


@pytest.mark.parametrize(
    "precommand, present, missing",
    [
        (". .venv-gpu/bin/activate", True, False),
        (". .venv-gpu/bin/activate", False, True),
        ("module load cuda && source '.venv-gpu/bin/activate'", False, True),
        ("module load cuda && source '.venv-gpu/bin/activate'", True, False),
        ("module load cuda", False, False),  # nothing sourced: nothing to check
        (". $STYLEMERGE_TEST_ENV/bin/activate", False, True),  # as the shell expands it
        (". $STYLEMERGE_TEST_ENV/bin/activate", True, False),
        (". $NODE_LOCAL_ONLY/bin/activate", False, False),  # set on the node: not checked
        (None, False, False),
    ],
)
def test_a_missing_job_environment_is_named_before_any_submission(
    precommand, present, missing, tmp_path, monkeypatch
):
    monkeypatch.setenv("STYLEMERGE_TEST_ENV", ".venv-gpu")
    monkeypatch.delenv("NODE_LOCAL_ONLY", raising=False)
    if present:
        (tmp_path / ".venv-gpu" / "bin").mkdir(parents=True)
        (tmp_path / ".venv-gpu" / "bin" / "activate").write_text("")
    problem = missing_job_environment(precommand, tmp_path)
    if missing:
        assert str(tmp_path / ".venv-gpu" / "bin" / "activate") in problem
        assert "make gpu-venv" in problem and "every job would fail" in problem
    else:
        assert problem is None


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


# A module only the stand-in job environment has.
MARKER = "stylemerge_job_env_marker"


def stand_in_job_env(workdir: Path) -> Path:
    """<workdir>/.venv-gpu, where the profiles' precommand activates it: a real venv whose
    site-packages also see this test environment's packages (a .pth), and hold a marker
    module that this environment lacks. It stands in for `make gpu-venv`, whose vLLM and
    CUDA torch CI does not download."""
    env = workdir / ".venv-gpu"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python*/site-packages"))
    parent = sysconfig.get_path("purelib")
    (site / "_test_environment.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    (site / f"{MARKER}.py").write_text("")
    return env.resolve()


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"), SLURM_CONFIG)
    stand_in_job_env(workdir)
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


def test_every_job_ran_in_the_environment_the_profile_activates(slurm_run):
    workdir, _, _ = slurm_run
    assert importlib.util.find_spec(MARKER) is None  # not the submitting environment
    env = str((workdir / ".venv-gpu").resolve())
    results = workdir / "results"
    documents = [results / "models" / model / "metrics.json" for model in ("base", "general_proxy")]
    documents += [results / "shards" / domain / "manifest.json" for domain in ("bbc_news", "notes")]
    documents += [results / "tokenizers" / model / "metrics.json" for model in ("base",)]
    for document in documents:
        provenance = json.loads(document.read_text())["provenance"]
        assert str(Path(provenance["environment"]).resolve()) == env, document


def test_a_run_without_the_job_environment_stops_before_submitting(slurm_cluster, tmp_path):
    workdir = copy_workflow(tmp_path, SLURM_CONFIG)
    result = snakemake(workdir, "--profile", str(CI_PROFILE), *SLURM_TARGETS, check=False)
    assert result.returncode != 0
    assert f"sources {workdir / '.venv-gpu' / 'bin' / 'activate'}, which does not exist" in (
        result.stderr
    )
    assert "has been submitted" not in result.stdout + result.stderr
    assert not (workdir / "results" / "shards").exists()


# --- the user's profile, filled in for the test cluster: every GPU rule's job ----------------


def filled_in_user_profile(dest: Path) -> Path:
    """profiles/slurm with its FILL IN placeholders answered for the test cluster (and its
    status checks paced for jobs of seconds); everything else, precommand included, as
    committed."""
    profile = load_profile(USER_PROFILE)
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account=ACCOUNT)
    for resources in profile["set-resources"].values():
        resources.update(slurm_partition=PARTITION, gpu_model="fake", cpus_per_gpu=1)
    profile["default-resources"]["mem_mb"] = 500
    profile.update({"jobs": 4, "latency-wait": 5, "slurm-init-seconds-before-status-checks": 2})
    dest.mkdir()
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


REPORT_ENV = f"""\
import importlib.util, json, sys

with open(snakemake.output[0], "w") as out:
    json.dump({{"executable": sys.executable, "prefix": sys.prefix,
               "marker": importlib.util.find_spec({MARKER!r}) is not None}}, out)
"""


def test_each_gpu_rule_runs_in_the_environment_the_user_profile_gives(slurm_cluster, tmp_path):
    """A job of every GPU rule, submitted through profiles/slurm (placeholders filled in),
    runs its Python script (as the workflow's rules do) in .venv-gpu. The rules here only
    report their interpreter: what decides it is the profile and the job, not the rule."""
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    env = stand_in_job_env(workdir)
    (workdir / "report_env.py").write_text(REPORT_ENV)
    rules = sorted(GPU_RULES)
    snakefile = ["rule all:", "    input:", *(f'        "env/{rule}.json",' for rule in rules)]
    for rule in rules:
        snakefile += ["", "", f"rule {rule}:", "    output:", f'        "env/{rule}.json"']
        snakefile += ["    script:", '        "report_env.py"']
    (workdir / "Snakefile").write_text("\n".join(snakefile) + "\n")
    profile = filled_in_user_profile(tmp_path / "profile")
    since = (datetime.datetime.now() - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    result = snakemake(workdir, "--profile", str(profile), "all")
    for rule in rules:
        report = json.loads((workdir / "env" / f"{rule}.json").read_text())
        assert Path(report["prefix"]).resolve() == env, (rule, report)
        assert report["marker"], rule
        assert Path(report["executable"]).parent.resolve() == env / "bin", (rule, report)
    # each as a Slurm job of its own, with its GPU
    run_id = re.search(r"SLURM run ID: (\S+)", result.stdout + result.stderr).group(1)
    sacct = run_tool(
        "sacct", "-X", "-n", "-P", "-S", since, "--name", run_id, "-o", "Comment,State,AllocTRES"
    )
    jobs = [row.split("|") for row in sacct.stdout.splitlines()]
    ran = sorted(
        re.match(r"rule_(.+?)(?:_wildcards.*)?$", comment).group(1) for comment, *_ in jobs
    )
    assert ran == rules, sacct.stdout
    for comment, state, tres in jobs:
        assert state == "COMPLETED" and "gres/gpu=1" in tres, (comment, state, tres)
