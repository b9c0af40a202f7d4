# Translation only: snakemake.* -> stylemerge.proxies.train_proxy
from stylemerge.joblog import to_file
from stylemerge.proxies import train_proxy
from stylemerge.shards import read_shard_index
from stylemerge.snakemake_job import job_settings, model_reference
from stylemerge.tracking import run_tracked

with to_file(snakemake.log[0]):
    job = job_settings(snakemake)
    # inside the job's run in report_to's trackers, its result logged there
    run_tracked(
        job,
        train_proxy,
        general_proxy=model_reference(snakemake, "general_proxy"),
        domain=snakemake.wildcards.domain,
        train_shard=snakemake.input.train,
        heldout_shards=read_shard_index(snakemake.input.heldout),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
        checkpoint_dir=snakemake.params.checkpoints,
    )
