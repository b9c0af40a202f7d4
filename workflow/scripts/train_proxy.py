# Translation only: snakemake.* -> stylemerge.proxy.train.train_proxy
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.proxy.train import train_proxy
from stylemerge.workflow.snakemake_job import job_settings, model_reference

with to_file(snakemake.log[0]):
    train_proxy(
        job_settings(snakemake),
        general_proxy=model_reference(snakemake, "general_proxy"),
        domain=snakemake.wildcards.domain,
        train_shard=snakemake.input.train,
        heldout_shards=read_shard_index(snakemake.input.heldout),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
        checkpoint_dir=snakemake.params.checkpoints,
    )
