# Translation only: snakemake.* -> stylemerge.merge.run.apply_adapter
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.merge.run import apply_adapter
from stylemerge.workflow.snakemake_job import job_settings, model_reference

with to_file(snakemake.log[0]):
    apply_adapter(
        job_settings(snakemake),
        base=model_reference(snakemake, "base"),
        adapter=snakemake.input.adapter,
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
    )
