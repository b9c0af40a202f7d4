"""stylemerge: per-domain GRPO style adapters, Karcher merge, think tokens, evaluation.

`snakemake --cores 8 all` runs the embedded default (config/config.yaml); a --configfile
replaces that file instead of being merged into it (so a config with fewer domains means
fewer domains).  The config is validated against workflow/schemas/config.schema.yaml before
any rule is defined.
"""

import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.27")

# The library lives in src/; make it importable here and in every job (also inside the
# per-rule conda environments, which install only third-party packages).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
)
# A job's log is a file: no library's progress bars, whose carriage-return redraws would
# fill it. Jobs log progress lines of their own instead (stylemerge.core.progress).
from stylemerge.core.progress import QUIET_BARS

for _name, _value in QUIET_BARS.items():
    os.environ.setdefault(_name, _value)

from stylemerge.workflow.config import ConfigError, stage_settings, validate_config

if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


_notes = []  # defaults that follow the run's domains, said once here
try:
    config.update(
        validate_config(
            config,
            Path(workflow.basedir) / "workflow/schemas/config.schema.yaml",
            _notes,
        )
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None
for _note in _notes:
    logger.info(_note)


# `--cores N` beyond the cores this machine offers would run N threads' worth of torch jobs
# on fewer cores: every job then runs several times slower (measured: 8 on 2 cores made GRPO
# 10x slower).  Locally, cap the scheduler at the available cores; each job sets torch's
# threads from its rule's `threads`, so the jobs together never exceed the machine.
# Cluster runs (--executor slurm) are unaffected: their jobs run on other nodes.
from stylemerge.core.job import JOB_CONFIG_KEYS, available_cores

if (
    workflow.local_exec
    and workflow.global_resources["_nodes"].value is None
    and (workflow.global_resources["_cores"].value or 0) > available_cores()
):
    logger.warning(
        f"--cores {workflow.global_resources['_cores'].value} exceeds the "
        f"{available_cores()} cores available here: running at most "
        f"{available_cores()} threads' worth of jobs at once"
    )
    workflow.global_resources["_cores"] = available_cores()


# A cluster profile's precommand (profiles/slurm activates .venv-gpu in every job): stop
# before submitting anything if what it activates is missing. Real runs only, in the main
# process (jobs run with --no-hooks); a dry run plans without it.
from stylemerge.core.job import missing_job_environment


onstart:
    if not workflow.local_exec:
        _problem = missing_job_environment(
            workflow.remote_execution_settings.precommand, Path.cwd()
        )
        if _problem:
            raise WorkflowError(_problem)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/proxy.smk"
include: "workflow/rules/grpo.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/think.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        expand(R("shards/{domain}/manifest.json"), domain=DOMAINS),
        [R(f"models/{name}") for name in BUILT_MODELS],
        expand(R("proxies/{domain}"), domain=DOMAINS),
        # every seed-dependent result once per replicate (common.smk: SEEDS, S)
        expand(
            S("adapters/{domain}{arm}"), domain=DOMAINS, arm=ARMS, replicate=REPLICATES
        ),
        expand(
            S("merges/{method}"),
            method=config["merge"]["variants"],
            replicate=REPLICATES,
        ),
        expand(S("think/{think_model}"), think_model=THINK_MODELS, replicate=REPLICATES),
        expand(
            S("eval/{eval_model}/lm_eval.json"),
            eval_model=LM_EVAL_MODELS,
            replicate=REPLICATES,
        ),
        expand(
            S("eval/{eval_model}/diversity"),
            eval_model=DIVERSITY_MODELS,
            replicate=REPLICATES,
        ),
        expand(S("tables"), replicate=REPLICATES),
        expand(S("figures"), replicate=REPLICATES),
        [R("pooled")] if len(REPLICATES) > 1 else [],
