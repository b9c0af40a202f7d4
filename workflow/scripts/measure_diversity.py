# Translation only: snakemake.* -> stylemerge.diversity.measure_diversity
from stylemerge.diversity import measure_diversity
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.shards import read_shard_index

with to_file(snakemake.log[0]):
    measure_diversity(
        model_ref=snakemake.input.model or snakemake.params.model,
        heldout_shards=read_shard_index(snakemake.input.heldout),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=snakemake.threads,
        trust_remote_code=snakemake.params.trust_remote_code,
        allow_pickle_weights=snakemake.params.allow_pickle_weights,
        revision=snakemake.params.revision,
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
