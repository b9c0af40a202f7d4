# Translation only: snakemake.* -> stylemerge.merge.merge_models
from pathlib import Path

from stylemerge.joblog import to_file
from stylemerge.merge import merge_models
from stylemerge.provenance import provenance
from stylemerge.shards import read_shard_index

with to_file(snakemake.log[0]):
    variant = snakemake.params.variant
    merge_models(
        method=variant["method"],
        space=variant["space"],
        # keyed by domain: an arm's domain models are <domain><arm>
        domain_models={
            Path(p).name.removesuffix(snakemake.wildcards.arm): p
            for p in snakemake.input.domain_models
        },
        base=snakemake.input.base or snakemake.params.base,
        weights=snakemake.params.weights,
        heldout_shards=list(read_shard_index(snakemake.input.heldout).values()),
        out_dir=snakemake.output[0],
        settings={**snakemake.params.settings, "parameters": variant["parameters"]},
        threads=snakemake.threads,
        device=snakemake.params.device,
        trust_remote_code=snakemake.params.trust_remote_code,
        allow_pickle_weights=snakemake.params.allow_pickle_weights,
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
    )
