"""Hub revisions locked once per run: ``results/<run>/revisions.lock``.

A paper-scale run lasts days over hundreds of jobs.  A hub reference whose ``revision`` is a
branch or tag (or null: ``main``) would be resolved again by every job, so a repository that
moves mid-run would give different jobs different commits.  Instead, the run's main Snakemake
process resolves each such reference to a commit once, writes the commits to the lock, and
every job (and the main process) substitutes them into its config before any rule is defined:
every job loads exactly the locked commit.  A later run reuses the lock; ``--config
revisions=refresh`` resolves again (the lock is rewritten only where a commit moved).
The first invocation for a run writes the lock, a dry run included: its plan then shows the
commits the run will load.

The lock is plain YAML keyed by where the reference sits in the config, so a user can commit
it beside the config, or edit a commit by hand.  Resolution asks the hub
(``HfApi.repo_info``); offline (``HF_HUB_OFFLINE``) or when the hub cannot be reached, it
reads the local hub cache's ``refs/<revision>`` as huggingface_hub writes it.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from stylemerge.core.hub import is_hub_id

log = logging.getLogger(__name__)

LOCK_NAME = "revisions.lock"
# A comparison model is a bare hub id in the config (no revision field): its commit is looked
# up with comparison_revision.
COMPARISONS = ("evaluate", "comparisons")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
HEADER = """\
# The hub commit every job of this run loads, for each hub reference of the config whose
# revision is not a commit (resolved once, when the run started).  Keyed by where the
# reference sits in the config.  Commit this file beside the config to rerun exactly these
# commits; edit a commit to move one; --config revisions=refresh resolves them again.
"""


class RevisionError(RuntimeError):
    """A hub reference that cannot be resolved to a commit, or a lock that lacks one."""


@dataclass(frozen=True)
class HubReference:
    """A hub repository the config names, and the revision it asks for (None: ``main``)."""

    path: tuple[str, ...]  # where it sits in the config: ("models", "base"), ...
    repo_id: str
    repo_type: str  # "model" or "dataset"
    revision: str | None

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def requested(self) -> str:
        return self.revision or "main"

    @property
    def locked(self) -> bool:
        """Already a commit: nothing to resolve."""
        return bool(self.revision and COMMIT.match(self.revision))


def _data_set(path: tuple[str, ...], spec) -> Iterator[HubReference]:
    """A data set spec (a domain's source, gsm8k's data) if it loads from the hub: a hub id
    in ``path`` (not a local directory, no ``data_files`` for a generic loader)."""
    if not isinstance(spec, Mapping) or spec.get("data_files"):
        return
    if spec.get("type", "hf") == "hf" and spec.get("source", "gsm8k") == "gsm8k":
        if is_hub_id(spec.get("path")):
            yield HubReference(path, spec["path"], "dataset", spec.get("revision"))


def hub_references(config: Mapping, pinned: bool = False) -> list[HubReference]:
    """Every hub reference of a validated config whose commit a job could load: models
    (``models.<name>``), comparison models (``evaluate.comparisons.<name>``), domain and
    out-of-domain data sets, and the gsm8k data sets of the think stage and its evaluation
    (each only where the run reads it); those already pinned to a commit only with
    ``pinned``."""
    refs = [
        HubReference(("models", name), model["ref"], "model", model.get("revision"))
        for name, model in config["models"].items()
        if model.get("gguf") is None and is_hub_id(model.get("ref"))
    ]
    refs += [
        HubReference(COMPARISONS + (name,), ref, "model", None)
        for name, ref in config["evaluate"]["comparisons"].items()
        if is_hub_id(ref)
    ]
    for domain, settings in config["domains"].items():
        refs += _data_set(("domains", domain, "source"), settings.get("source"))
    lm_eval = config["evaluate"]["lm_eval"]
    refs += _data_set(("think", "data"), config["think"]["data"])
    from stylemerge.evaluate.task_data import GSM8K_THINK, LAMBADA_OOD

    tasks = {task["name"] for task in lm_eval["tasks"]}
    refs += harness_references(lm_eval["tasks"])
    if GSM8K_THINK in tasks:  # read only by that task
        refs += _data_set(("evaluate", "lm_eval", "gsm8k_think"), lm_eval["gsm8k_think"])
    if LAMBADA_OOD in tasks:
        for name, spec in lm_eval["lambada_ood"]["sources"].items():
            refs += _data_set(("evaluate", "lm_eval", "lambada_ood", "sources", name), spec)
    return [ref for ref in refs if pinned or not ref.locked]


TASKS = ("evaluate", "lm_eval", "tasks")


def harness_references(tasks) -> list[HubReference]:
    """The hub data sets of the harness's own tasks (``evaluate.lm_eval.tasks.<name>``)."""
    from stylemerge.evaluate.task_data import harness_data_set

    return [
        HubReference(TASKS + (task["name"],), repo, "dataset", task.get("revision"))
        for task in tasks
        if (repo := harness_data_set(task["name"]))
    ]


def unlocked_tasks(config: Mapping) -> list[str]:
    """Harness tasks (not packaged) whose hub data set stylemerge does not know: lm-eval loads
    them at the revision their YAML names, outside the lock."""
    from stylemerge.evaluate.task_data import PREFIX, harness_data_set

    names = [task["name"] for task in config["evaluate"]["lm_eval"]["tasks"]]
    return [n for n in names if not n.startswith(PREFIX) and harness_data_set(n) is None]


# --- resolving -----------------------------------------------------------------------------


def cached_commit(ref: HubReference, cache_dir: str | Path | None = None) -> str | None:
    """The commit the local hub cache has for the reference's revision (``refs/<revision>``
    of the repository's folder, as huggingface_hub lays the cache out), or None."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    root = Path(cache_dir or constants.HF_HUB_CACHE)
    folder = root / repo_folder_name(repo_id=ref.repo_id, repo_type=ref.repo_type)
    refs = folder / "refs" / ref.requested
    if refs.is_file():
        commit = refs.read_text().strip()
        return commit if COMMIT.match(commit) else None
    return None


def hub_commit(ref: HubReference) -> str:
    """The commit the hub has for the reference's revision now (a token, when a repository
    needs one, comes from the environment through huggingface_hub)."""
    from huggingface_hub import HfApi

    return HfApi().repo_info(ref.repo_id, repo_type=ref.repo_type, revision=ref.requested).sha


def resolve(ref: HubReference) -> str:
    """The reference's commit: the hub's answer, or offline (or unreachable) the cache's."""
    from huggingface_hub import constants

    problem = "HF_HUB_OFFLINE is set"
    if not constants.HF_HUB_OFFLINE:
        try:
            return hub_commit(ref)
        except Exception as err:  # unreachable, not found, gated: say which, try the cache
            problem = f"the hub answered {type(err).__name__}: {str(err).splitlines()[0]}"
    commit = cached_commit(ref)
    if commit:
        return commit
    raise RevisionError(
        f"cannot resolve {ref.repo_type} {ref.repo_id!r} at revision "
        f"{ref.requested!r} to a commit ({problem}, and the hub cache has no "
        f"refs/{ref.requested} for it); pin a commit in the config or run where the hub "
        "answers"
    )


# --- the lock ------------------------------------------------------------------------------


def read_lock(path: str | Path) -> dict[str, dict]:
    """The lock's entries (key -> repo, type, requested, commit); {} when there is none."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        entries = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RevisionError(f"{path}: not valid YAML ({err})") from None
    for key, entry in entries.items():
        fields = {"repo", "type", "requested", "commit"}
        if not isinstance(entry, Mapping) or not fields <= set(entry):
            raise RevisionError(f"{path}: {key}: needs {', '.join(sorted(fields))}")
        if not COMMIT.match(str(entry["commit"])):
            raise RevisionError(f"{path}: {key}: commit {entry['commit']!r} is not a commit")
    return entries


def _matches(entry: Mapping, ref: HubReference) -> bool:
    want = (ref.repo_id, ref.repo_type, ref.requested)
    return (entry["repo"], entry["type"], entry["requested"]) == want


def write_lock(path: str | Path, entries: Mapping[str, Mapping]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(HEADER + yaml.safe_dump(dict(entries), sort_keys=True))
    tmp.replace(path)


def lock(
    config: Mapping,
    path: str | Path,
    refresh: bool = False,
    resolver: Callable[[HubReference], str] = resolve,
    problems: list[str] | None = None,
) -> dict[str, str]:
    """The main process, when a run starts (a dry run too, so that its plan shows the commits
    the run loads): every hub reference's commit (key -> commit), from the lock where it has
    the same reference, else resolved (all of them with ``refresh``); the lock rewritten when
    anything changed, nothing written for a config without hub references.  A reference that
    cannot be resolved (offline without a cache) is left out of the lock with its reason in
    ``problems`` (else raised): a dry run still plans, and a job needing it stops at once."""
    path = Path(path)
    refs, entries = hub_references(config), read_lock(path)
    kept = {ref.key: entries[ref.key] for ref in refs if ref.key in entries}
    new, answers = dict(kept), {}  # one question per repository and revision (nine domains
    for ref in refs:  # read one data set)
        if not refresh and ref.key in kept and _matches(kept[ref.key], ref):
            continue
        question = (ref.repo_id, ref.repo_type, ref.requested)
        if question not in answers:
            try:
                answers[question] = resolver(ref)
            except RevisionError as err:
                answers[question] = err
        commit = answers[question]
        if isinstance(commit, RevisionError):
            if problems is None:
                raise RevisionError(f"{ref.key}: {commit}") from None
            problems.append(f"{ref.key}: {commit}")
            new.pop(ref.key, None)
            continue
        new[ref.key] = {
            "repo": ref.repo_id,
            "type": ref.repo_type,
            "requested": ref.requested,
            "commit": commit,
        }
        old = kept.get(ref.key, {}).get("commit")
        if old and old != commit:
            log.warning("%s: %s moved from %s to %s", ref.key, ref.repo_id, old, commit)
    if new != entries and (new or path.exists()):
        write_lock(path, new)
        log.info("locked %d hub revisions in %s", len(new), path)
    return {key: entry["commit"] for key, entry in new.items()}


def locked_commits(config: Mapping, path: str | Path) -> dict[str, str]:
    """A job: the lock's commit for every hub reference of the config; a reference the lock
    lacks (or has for another repository or revision) is an error, never resolved here,
    except a comparison model's: one the hub does not know is recorded unavailable by its
    jobs (stylemerge.models.availability), so it stays at its branch."""
    refs, entries = hub_references(config), read_lock(path)
    found = {
        ref.key: entries[ref.key]["commit"]
        for ref in refs
        if ref.key in entries and _matches(entries[ref.key], ref)
    }
    missing = [ref.key for ref in refs if ref.key not in found and ref.path[:2] != COMPARISONS]
    if missing:
        raise RevisionError(
            f"{path} has no commit for {', '.join(missing)}: the run's main snakemake process "
            "locks every hub reference before any job starts, and a job never resolves one "
            "itself (see the main process's warnings for why it could not)"
        )
    return found


def apply(config: Mapping, commits: Mapping[str, str]) -> dict:
    """The config with each locked reference's ``revision`` set to its commit (a comparison
    model has no revision field: :func:`comparison_revision` gives its commit)."""
    config = copy.deepcopy(dict(config))
    for ref in hub_references(config):
        if ref.key in commits and ref.path[:2] != COMPARISONS:
            node = config
            for part in ref.path:
                # the task list is keyed by task name
                node = (
                    next(t for t in node if t["name"] == part)
                    if isinstance(node, list)
                    else node[part]
                )
            node["revision"] = commits[ref.key]
    return config


def comparison_revision(commits: Mapping[str, str], name: str) -> str | None:
    """The locked commit of comparison model ``name`` (None when the run has no lock)."""
    return commits.get(".".join(COMPARISONS + (name,)))


def lock_path(config: Mapping) -> Path:
    """The run's lock: results/<run>/revisions.lock."""
    from stylemerge.workflow.config import run_dirs

    return Path(run_dirs(config["run_name"])[0]) / LOCK_NAME


def current_commits(config: Mapping, path: str | Path) -> dict[str, str]:
    """What the lock already has for the config's references; the others stay as the config
    names them."""
    entries = read_lock(path)
    return {
        ref.key: entries[ref.key]["commit"]
        for ref in hub_references(config)
        if ref.key in entries and _matches(entries[ref.key], ref)
    }


def loaded(config: Mapping) -> dict[str, str]:
    """For provenance: every hub reference of a job's (locked) config as ``repo@commit``,
    what the job loads; ``repo@branch`` where no commit is known (no lock yet)."""
    commits = current_commits(config, lock_path(config))
    return {
        ref.key: f"{ref.repo_id}@{commits.get(ref.key, ref.revision or ref.requested)}"
        for ref in hub_references(config, pinned=True)
    }
