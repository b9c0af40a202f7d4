# Translation only: snakemake.* -> stylemerge.pretrain.pretrain_tiny_model
from stylemerge.logging import to_file
from stylemerge.pretrain import pretrain_tiny_model
from stylemerge.provenance import provenance

with to_file(snakemake.log[0]):
    pretrain_tiny_model(
        tokenizer_dir=snakemake.input.tokenizer,
        train_shards=snakemake.input.train,
        heldout_shards=snakemake.input.heldout,
        out_dir=snakemake.output[0],
        tiny=snakemake.params.tiny,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=snakemake.threads,
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
