# Translation only: snakemake.* -> stylemerge.pretrain.pretrain_tiny_model
from stylemerge.joblog import to_file
from stylemerge.pretrain import pretrain_tiny_model
from stylemerge.provenance import provenance
from stylemerge.shards import read_shard_index

with to_file(snakemake.log[0]):
    pretrain_tiny_model(
        tokenizer_dir=snakemake.input.tokenizer,
        train_shards=list(read_shard_index(snakemake.input.train).values()),
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        tiny=snakemake.params.tiny,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=snakemake.threads,
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
