# Translation only: snakemake.* -> stylemerge.proxies.train_proxy
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.proxies import train_proxy
from stylemerge.shards import read_shard_index

with to_file(snakemake.log[0]):
    train_proxy(
        general_proxy=snakemake.input.general_proxy or snakemake.params.general_proxy,
        domain=snakemake.wildcards.domain,
        train_shard=snakemake.input.train,
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
