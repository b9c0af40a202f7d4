# Translation only: snakemake.* -> stylemerge.grpo.train.train_adapter
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import DomainShards
from stylemerge.grpo.train import train_adapter
from stylemerge.workflow.snakemake_job import job_settings, model_reference

with to_file(snakemake.log[0]):
    train_adapter(
        job_settings(snakemake),
        base=model_reference(snakemake, "base"),
        general_proxy=model_reference(snakemake, "general_proxy"),
        proxy=snakemake.input.proxy,
        shards=DomainShards(
            snakemake.wildcards.domain, snakemake.input.prompts, snakemake.input.heldout
        ),
        out_dir=snakemake.output[0],
        checkpoint_dir=snakemake.params.checkpoints,
        settings=snakemake.params.settings,
    )
