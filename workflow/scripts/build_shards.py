# Translation only: snakemake.* -> stylemerge.shards.build_shards
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.shards import build_shards

with to_file(snakemake.log[0]):
    build_shards(
        source=snakemake.params.source,
        domain=snakemake.wildcards.domain,
        settings=snakemake.params.settings,
        train_path=snakemake.output.train,
        heldout_path=snakemake.output.heldout,
        manifest_path=snakemake.output.manifest,
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
    )
