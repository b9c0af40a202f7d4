# Translation only: snakemake.* -> stylemerge.evaluate.diversity.measure.measure_diversity
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.evaluate.diversity.measure import measure_diversity
from stylemerge.workflow.snakemake_job import comparison_unavailable, job_settings, model_reference

with to_file(snakemake.log[0]):
    job, model = job_settings(snakemake), model_reference(snakemake, "model")
    # a comparison model not found or without safetensors weights: recorded, not evaluated
    if not comparison_unavailable(snakemake, job, model, directory=True):
        measure_diversity(
            job,
            model_ref=model,
            heldout_shards=read_shard_index(snakemake.input.heldout),
            out_dir=snakemake.output[0],
            settings=snakemake.params.settings,
        )
