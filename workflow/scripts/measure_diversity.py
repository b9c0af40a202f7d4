# Translation only: snakemake.* -> stylemerge.diversity.measure.measure_diversity
from stylemerge.diversity.measure import measure_diversity
from stylemerge.joblog import to_file
from stylemerge.shards import read_shard_index
from stylemerge.snakemake_job import job_settings, model_reference

with to_file(snakemake.log[0]):
    measure_diversity(
        job_settings(snakemake),
        model_ref=model_reference(snakemake, "model"),
        heldout_shards=read_shard_index(snakemake.input.heldout),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
    )
