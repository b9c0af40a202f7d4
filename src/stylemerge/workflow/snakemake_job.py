"""What every Snakemake script needs from its job, built in one place.

Scripts stay translations (``snakemake.*`` -> a library entry point); these helpers make the
two values every entry point takes whole: the job's settings and its model references.
"""

from __future__ import annotations

from stylemerge.core.job import JobSettings
from stylemerge.models.reference import ModelReference
from stylemerge.workflow.provenance import provenance


def job_settings(snakemake) -> JobSettings:
    """Seed, device, threads, safety switches, trackers and provenance of this job.  The
    config's values that change results come through ``params.job`` (common.smk ``JOB``): as a
    param, changing one reruns the jobs that use it; ``report_to`` (where training logs go)
    reruns nothing.  A tracked rule names its tracking directory in ``params.tracking``."""
    config = {**snakemake.config, **snakemake.params.job}
    directory = getattr(snakemake.params, "tracking", None)
    return JobSettings.from_config(
        config,
        snakemake.threads,
        tracking_dir=directory,
        tracking_name=tracking_name(config, directory, snakemake.wildcards) if directory else None,
        provenance=provenance(config, config["seed"]),
    )


def tracking_name(config, directory: str, wildcards) -> str:
    """The job's run in the experiment trackers, ``<run_name>/<stage>/<name>[/<seed>]``
    (``default`` for a config without ``run_name``, the embedded default): stage and name are
    the last two parts of its tracking directory, which every rule lays out as
    ``logs/<stage>/<name>`` (under its replicate's ``seeds/<seed>/`` for seeds other than the
    run's own, whose runs carry the seed)."""
    from pathlib import PurePath

    stage, name = PurePath(directory).parts[-2:]
    seed = f"/{config['seed']}" if getattr(wildcards, "replicate", "") else ""
    return f"{config.get('run_name') or 'default'}/{stage}/{name}{seed}"


def model_reference(snakemake, name: str) -> ModelReference:
    """The model the rule calls ``name``: its tracked local directory ``input.<name>``, or
    the hub id in ``params.<name>`` (common.smk ``model_param``), with its revision."""
    param = getattr(snakemake.params, name)
    local = getattr(snakemake.input, name, None)
    ref = str(local) if local else param["ref"]
    if not ref:
        raise ValueError(f"rule {snakemake.rule}: model {name!r} is neither input nor hub id")
    return ModelReference(ref, param["revision"])


def comparison_name(snakemake) -> str | None:
    """The evaluated model's name (``wildcards.eval_model``) if it is a comparison model
    (``evaluate.comparisons``), else None: a comparison not found or without safetensors
    weights is recorded unavailable by its jobs (:mod:`stylemerge.models.availability`)."""
    name = getattr(snakemake.wildcards, "eval_model", None)
    return name if name in snakemake.config["evaluate"]["comparisons"] else None


def comparison_unavailable(snakemake, job: JobSettings, model: ModelReference, directory=False):
    """True where the job's model is a comparison model that was not found or has no
    safetensors weights: the reason is logged and recorded as the job's output (a JSON file, or
    a directory with ``directory``), and there is nothing to evaluate
    (:func:`stylemerge.models.availability.skip_unavailable_comparison`)."""
    from stylemerge.models.availability import skip_unavailable_comparison

    name, out = comparison_name(snakemake), snakemake.output[0]
    return skip_unavailable_comparison(name, model, job, out, directory=directory)
