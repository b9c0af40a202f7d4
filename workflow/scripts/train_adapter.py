# Translation only: snakemake.* -> stylemerge.grpo.train_adapter
from stylemerge.grpo import train_adapter
from stylemerge.joblog import to_file
from stylemerge.shards import DomainShards
from stylemerge.snakemake_job import job_settings, model_reference
from stylemerge.tracking import run_tracked

with to_file(snakemake.log[0]):
    job = job_settings(snakemake)
    # inside the job's run in report_to's trackers, its result logged there
    run_tracked(
        job,
        train_adapter,
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
