# Translation only: snakemake.* -> stylemerge.merge.run.merge_models
from pathlib import Path

from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.merge.run import merge_models
from stylemerge.workflow.snakemake_job import job_settings, model_reference

with to_file(snakemake.log[0]):
    merge_models(
        job_settings(snakemake),
        variant=snakemake.params.variant,
        # keyed by domain: an arm's domain models are <domain><arm>
        domain_models={
            Path(p).name.removesuffix(snakemake.wildcards.arm): p
            for p in snakemake.input.domain_models
        },
        base=model_reference(snakemake, "base"),
        weights=snakemake.params.weights,
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
    )
