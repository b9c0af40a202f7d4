# Translation only: snakemake.* -> stylemerge.models.pretrain.pretrain_tiny_model
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.models.pretrain import pretrain_tiny_model
from stylemerge.workflow.snakemake_job import job_settings

with to_file(snakemake.log[0]):
    pretrain_tiny_model(
        job_settings(snakemake),
        tokenizer_dir=snakemake.input.tokenizer,
        train_shards=list(read_shard_index(snakemake.input.train).values()),
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        tiny=snakemake.params.tiny,
        settings=snakemake.params.settings,
    )
