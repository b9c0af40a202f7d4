"""Hub revisions locked once per run (stylemerge.workflow.revisions): resolved from a hub cache
laid out
as huggingface_hub lays it out (refs/main, snapshots/<sha>), offline; reused; refreshed; and
a moved refs/main mid-run not seen by later jobs of the workflow."""

import copy
import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file
from test_workflow import REDUCED, copy_workflow, snakemake

from conftest import ROOT, SCHEMA
from stylemerge.workflow import revisions
from stylemerge.workflow.config import validate_config
from stylemerge.workflow.provenance import provenance

SHA1, SHA2 = "1" * 40, "2" * 40
REPO = "stylemerge-test/proxy"


def validated(config: dict) -> dict:
    return validate_config(copy.deepcopy(config), SCHEMA)


def paper() -> dict:
    return validated(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))


def hub_cache(root: Path, repo: str, snapshots: dict[str, Path | None], main: str, kind="model"):
    """A hub cache folder for ``repo``: snapshots/<sha> (a copy of a directory, or empty) and
    refs/main -> ``main``; returns the cache root."""
    from huggingface_hub.file_download import repo_folder_name

    folder = root / repo_folder_name(repo_id=repo, repo_type=kind)
    for sha, source in snapshots.items():
        if source is None:
            (folder / "snapshots" / sha).mkdir(parents=True)
        else:
            shutil.copytree(source, folder / "snapshots" / sha)
    move_ref(root, repo, main, kind)
    return root


def move_ref(root: Path, repo: str, sha: str, kind="model") -> None:
    from huggingface_hub.file_download import repo_folder_name

    refs = root / repo_folder_name(repo_id=repo, repo_type=kind) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(sha)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def test_every_hub_reference_of_the_paper_config_and_none_of_the_offline_tiers():
    keys = {ref.key for ref in revisions.hub_references(paper())}
    domains = {f"domains.{d}.source" for d in paper()["domains"]}
    assert len(domains) == 9
    # the harness's own tasks: their data sets too (lm-eval downloads them in the job)
    harness = {f"evaluate.lm_eval.tasks.uncheatable_eval_{d}" for d in paper()["domains"]}
    harness |= {"evaluate.lm_eval.tasks.lambada_openai", "evaluate.lm_eval.tasks.gsm8k"}
    assert keys == {
        "models.base",
        "models.general_proxy",
        "evaluate.comparisons.grpo_wave",
        "think.data",
        "evaluate.lm_eval.gsm8k_think",
        *domains,
        *harness,
    }
    assert revisions.unlocked_tasks(paper()) == []
    kinds = {ref.key: ref.repo_type for ref in revisions.hub_references(paper())}
    assert kinds["models.base"] == "model" and kinds["think.data"] == "dataset"
    for name in ("config.yaml", "smol.yaml"):
        config = validated(yaml.safe_load((ROOT / "config" / name).read_text()))
        assert revisions.hub_references(config) == [], name
    # a reference pinned to a commit needs no lock
    pinned = paper()
    pinned["models"]["base"]["revision"] = "a" * 40
    assert "models.base" not in {ref.key for ref in revisions.hub_references(pinned)}


def test_resolved_offline_from_the_cache_and_a_clear_error_without_it(cache):
    hub_cache(cache, REPO, {SHA1: None}, main=SHA1)
    ref = revisions.HubReference(("models", "general_proxy"), REPO, "model", None)
    assert revisions.resolve(ref) == SHA1
    missing = revisions.HubReference(("models", "base"), "nobody/nothing", "model", "v2")
    with pytest.raises(revisions.RevisionError, match=r"model 'nobody/nothing' at revision 'v2'"):
        revisions.resolve(missing)


def config_with_hub_proxy(revision=None) -> dict:
    config = validated(REDUCED)
    config["models"]["general_proxy"] = {**config["models"]["general_proxy"], "ref": REPO}
    config["models"]["general_proxy"]["revision"] = revision
    return config


def test_lock_written_reused_after_the_ref_moves_and_refreshed(cache, tmp_path, caplog):
    hub_cache(cache, REPO, {SHA1: None, SHA2: None}, main=SHA1)
    config, path = config_with_hub_proxy(), tmp_path / "run" / revisions.LOCK_NAME
    assert revisions.lock(config, path) == {"models.general_proxy": SHA1}
    written = path.read_text()
    assert yaml.safe_load(written)["models.general_proxy"] == {
        "repo": REPO,
        "type": "model",
        "requested": "main",
        "commit": SHA1,
    }
    move_ref(cache, REPO, SHA2)

    def never(ref):
        raise AssertionError(f"{ref.key} resolved again")

    # a later start and every job: the lock's commit, nothing resolved, nothing rewritten
    assert revisions.lock(config, path, resolver=never) == {"models.general_proxy": SHA1}
    assert revisions.locked_commits(config, path) == {"models.general_proxy": SHA1}
    assert path.read_text() == written
    applied = revisions.apply(config, revisions.locked_commits(config, path))
    assert applied["models"]["general_proxy"]["revision"] == SHA1
    assert config["models"]["general_proxy"]["revision"] is None  # apply copies
    # asked to refresh: the new commit, with a warning that it moved
    with caplog.at_level(logging.WARNING, logger="stylemerge.workflow.revisions"):
        assert revisions.lock(config, path, refresh=True) == {"models.general_proxy": SHA2}
    assert f"moved from {SHA1} to {SHA2}" in caplog.text
    # an edited commit is used as it is
    path.write_text(path.read_text().replace(SHA2, SHA1))
    assert revisions.locked_commits(config, path) == {"models.general_proxy": SHA1}


def test_another_requested_revision_is_resolved_again_and_a_job_never_resolves(cache, tmp_path):
    hub_cache(cache, REPO, {SHA1: None}, main=SHA1)
    (Path(cache) / "models--stylemerge-test--proxy" / "refs" / "v2").write_text(SHA2)
    path = tmp_path / revisions.LOCK_NAME
    revisions.lock(config_with_hub_proxy(), path)
    tagged = config_with_hub_proxy("v2")
    with pytest.raises(revisions.RevisionError, match=r"no commit for models\.general_proxy"):
        revisions.locked_commits(tagged, path)  # a job: the main process locks first
    assert revisions.lock(tagged, path) == {"models.general_proxy": SHA2}
    assert revisions.current_commits(config_with_hub_proxy(), path) == {}
    # offline without a cache: the main process goes on (a dry run plans) with the reason
    other = config_with_hub_proxy()
    other["models"]["general_proxy"]["ref"] = "nobody/nothing"
    problems = []
    assert revisions.lock(other, path, problems=problems) == {}
    assert "models.general_proxy: cannot resolve model 'nobody/nothing'" in problems[0]
    with pytest.raises(revisions.RevisionError, match=r"no commit for models\.general_proxy"):
        revisions.locked_commits(other, path)
    path.write_text("models.general_proxy: {repo: x, type: model, requested: main, commit: v1}")
    with pytest.raises(revisions.RevisionError, match=r"revisions\.lock: .*'v1' is not a commit"):
        revisions.read_lock(path)


def test_comparison_models_are_locked_and_provenance_names_every_commit(cache, tmp_path):
    config = paper()
    commits = {ref.key: SHA1 for ref in revisions.hub_references(config)}
    applied = revisions.apply(config, commits)
    assert applied["models"]["base"]["revision"] == SHA1
    assert applied["domains"]["bbc_news"]["source"]["revision"] == SHA1
    assert applied["think"]["data"]["revision"] == SHA1
    assert revisions.comparison_revision(commits, "grpo_wave") == SHA1
    assert revisions.hub_references(applied) == [  # only the comparison, whose id is bare
        ref for ref in revisions.hub_references(config) if ref.key.startswith("evaluate.comp")
    ]
    hub = provenance(applied)["hub_commits"]
    assert hub["models.base"] == f"Qwen/Qwen3-4B-Base@{SHA1}"
    assert hub["evaluate.comparisons.grpo_wave"].endswith("@main")  # not locked (no lock file)
    assert provenance(validated(REDUCED))["hub_commits"] is None


# --- the workflow ---------------------------------------------------------------------------


def perturbed(model_dir: Path, dest: Path) -> Path:
    """A copy of a model directory with other weights (the same shapes and tokenizer)."""
    shutil.copytree(model_dir, dest)
    weights = dest / "model.safetensors"
    tensors = {name: t + 0.05 for name, t in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    return dest


def proxy_run(workdir, *args):
    snakemake(workdir, "results/proxies/bbc_news", "--cores", "1", *args)
    metrics = json.loads((workdir / "results/proxies/bbc_news/metrics.json").read_text())
    return metrics["heldout_loss_before"]["bbc_news"], metrics["provenance"]["hub_commits"]


@pytest.mark.workflow
def test_a_moved_ref_mid_run_does_not_change_what_later_jobs_load(
    tiny_general_proxy, tmp_path, monkeypatch
):
    """The general proxy from a hub cache (offline) at `main`: the run locks main's commit;
    refs/main then moves to other weights; a later job (the proxy trained again) loads the
    locked commit, until the run is asked to refresh."""
    other = perturbed(tiny_general_proxy, tmp_path / "other")
    cache = hub_cache(tmp_path / "hub", REPO, {SHA1: tiny_general_proxy, SHA2: other}, SHA1)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    config = copy.deepcopy(REDUCED)
    config["models"]["general_proxy"] = {"ref": REPO}
    # the cost model cannot size a hub model it does not know: requests given
    config["models"]["base"]["pretrain"] = {**config["models"]["base"]["pretrain"], "mem_mb": 900}
    for stage in ("proxy", "grpo", "merge", "think"):
        config[stage]["mem_mb"] = 900
    for stage in ("lm_eval", "diversity"):
        config["evaluate"][stage]["mem_mb"] = 900
    (tmp_path / "wf").mkdir()
    workdir = copy_workflow(tmp_path / "wf", config)
    lock = workdir / "results" / revisions.LOCK_NAME

    snakemake(workdir, "-n", "--cores", "1", "results/proxies/bbc_news")
    # the plan locks what the run will load
    assert yaml.safe_load(lock.read_text())["models.general_proxy"]["commit"] == SHA1
    loss, hub = proxy_run(workdir)
    assert hub == {"models.general_proxy": f"{REPO}@{SHA1}"}

    move_ref(cache, REPO, SHA2)
    again, hub = proxy_run(workdir, "--forcerun", "train_proxy")
    assert again == loss and hub == {"models.general_proxy": f"{REPO}@{SHA1}"}

    refreshed, hub = proxy_run(workdir, "--config", "revisions=refresh")
    assert hub == {"models.general_proxy": f"{REPO}@{SHA2}"}
    assert refreshed != loss  # the new commit's weights: the proxy reran on its own


# --- the harness's own tasks ----------------------------------------------------------------


def test_harness_tasks_are_locked_and_applied_by_name(cache, tmp_path):
    config = paper()
    asked = []

    def resolver(ref):
        asked.append((ref.repo_id, ref.requested))
        return {"EleutherAI/lambada_openai": SHA1, "openai/gsm8k": SHA2}.get(ref.repo_id, "3" * 40)

    commits = revisions.lock(config, tmp_path / "revisions.lock", resolver=resolver)
    assert commits["evaluate.lm_eval.tasks.lambada_openai"] == SHA1
    assert commits["evaluate.lm_eval.tasks.gsm8k"] == SHA2
    # the nine uncheatable_eval tasks and the nine domains read one data set: asked once
    assert asked.count(("Jellyfish042/UncheatableEval-2026-07", "main")) == 1
    locked = {
        t["name"]: t.get("revision")
        for t in revisions.apply(config, commits)["evaluate"]["lm_eval"]["tasks"]
    }
    assert locked["lambada_openai"] == SHA1 and locked["gsm8k"] == SHA2
    assert locked["stylemerge_bpb"] is None  # packaged: its data are the run's own shards
    # a task nobody knows the data set of is named, not silently floating
    config["evaluate"]["lm_eval"]["tasks"].append({"name": "hellaswag"})
    assert revisions.unlocked_tasks(config) == ["hellaswag"]


def test_a_pinned_harness_task_loads_its_own_yaml_with_the_revision_added(tmp_path):
    """lm-eval builds the task (and downloads its data set) with dataset_kwargs.revision
    added to what its YAML says; its name and the rest of its config stay."""
    from lm_eval.tasks import TaskManager

    from stylemerge.evaluate.harness import _load_tasks

    data = tmp_path / "test.jsonl"
    data.write_text('{"text": "a passage"}\n')
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local.yaml").write_text(
        "task: local_harness_task\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        'output_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: ""\n'
        'doc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n'
        "    higher_is_better: false\n"
    )
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    (task,) = _load_tasks(manager, [{"name": "local_harness_task", "revision": SHA1}])
    assert task.config.task == "local_harness_task"
    assert task.config.dataset_kwargs == {"data_files": {"test": str(data)}, "revision": SHA1}
    assert task.dataset["test"][0] == {"text": "a passage"}
    (floating,) = _load_tasks(manager, [{"name": "local_harness_task", "revision": None}])
    assert "revision" not in floating.config.dataset_kwargs


def test_the_harness_data_sets_are_what_lm_evals_task_yamls_load():
    """stylemerge.evaluate.task_data.HARNESS_DATA_SETS against lm-eval's own YAMLs, for every
    harness task a shipped config runs."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from stylemerge.evaluate.task_data import harness_data_set

    manager = TaskManager()
    names = {
        task["name"]
        for name in ("config.yaml", "smol.yaml", "paper.yaml")
        for task in validated(yaml.safe_load((ROOT / "config" / name).read_text()))["evaluate"][
            "lm_eval"
        ]["tasks"]
        if not task["name"].startswith("stylemerge")
    }
    assert {"lambada_openai", "gsm8k", "uncheatable_eval_bbc_news"} <= names
    for name in sorted(names):
        entry = manager.task_index[name]
        assert load_yaml(entry.yaml_path, resolve_func=True)["dataset_path"] == (
            harness_data_set(name)
        ), name
