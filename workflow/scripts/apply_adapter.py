# Translation only: snakemake.* -> stylemerge.merge.apply_adapter
from stylemerge.joblog import to_file
from stylemerge.merge import apply_adapter
from stylemerge.provenance import provenance
from stylemerge.shards import read_shard_index

with to_file(snakemake.log[0]):
    apply_adapter(
        base=snakemake.input.base or snakemake.params.base,
        adapter=snakemake.input.adapter,
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
        threads=snakemake.threads,
        device=snakemake.params.device,
        trust_remote_code=snakemake.params.trust_remote_code,
        allow_pickle_weights=snakemake.params.allow_pickle_weights,
        revision=snakemake.params.revision,
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
    )
