# Translation only: snakemake.* -> stylemerge.data.shards.build_shards without a train split (an
# out-of-domain source: every document held out)
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import build_shards
from stylemerge.workflow.provenance import provenance

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
