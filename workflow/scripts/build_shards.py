# Translation only: snakemake.* -> stylemerge.data.shards.build_shards
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import build_shards
from stylemerge.workflow.provenance import provenance

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
