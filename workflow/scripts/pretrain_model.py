# Translation only: snakemake.* -> stylemerge.pretrain.pretrain_tiny_model
from stylemerge.joblog import to_file
from stylemerge.pretrain import pretrain_tiny_model
from stylemerge.shards import read_shard_index
from stylemerge.snakemake_job import job_settings
from stylemerge.tracking import run_tracked

with to_file(snakemake.log[0]):
    job = job_settings(snakemake)
    # inside the job's run in report_to's trackers, its result logged there
    run_tracked(
        job,
        pretrain_tiny_model,
        tokenizer_dir=snakemake.input.tokenizer,
        train_shards=list(read_shard_index(snakemake.input.train).values()),
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        tiny=snakemake.params.tiny,
        settings=snakemake.params.settings,
    )
