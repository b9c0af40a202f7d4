# Translation only: snakemake.* -> stylemerge.data.tokenizer.train_tokenizer
from stylemerge.core.job import use_threads
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.data.tokenizer import train_tokenizer
from stylemerge.workflow.provenance import provenance

with to_file(snakemake.log[0]):
    use_threads(snakemake.threads)
    settings = snakemake.params.settings
    train_tokenizer(
        train_shards=list(read_shard_index(snakemake.input.train).values()),
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        vocab_size=settings["vocab_size"],
        min_frequency=settings["min_frequency"],
        think_tokens=settings["think_tokens"],
        model_max_length=snakemake.params.max_length,
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
    )
