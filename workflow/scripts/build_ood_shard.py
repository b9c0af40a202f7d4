# Translation only: snakemake.* -> stylemerge.shards.build_shards without a train split (an
# out-of-domain source: every document held out)
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.shards import build_shards

with to_file(snakemake.log[0]):
    build_shards(
        source=snakemake.params.source,
        domain=snakemake.wildcards.ood,
        settings=snakemake.params.settings,
        train_path=None,
        heldout_path=snakemake.output.heldout,
        manifest_path=snakemake.output.manifest,
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
    )
