# Translation only: snakemake.* -> stylemerge.report.replicates.pool_replicates
from stylemerge.core.joblog import to_file
from stylemerge.report.replicates import pool_replicates
from stylemerge.workflow.provenance import provenance

with to_file(snakemake.log[0]):
    pool_replicates(
        dict(zip(snakemake.params.seeds, snakemake.params.replicates, strict=True)),
        lm_eval=snakemake.input.lm_eval,
        diversity=snakemake.input.diversity,
        think=snakemake.input.think,
        adapters=snakemake.input.adapters,
        chosen=snakemake.params.chosen,
        comparison=snakemake.params.comparison,
        out_dir=snakemake.output[0],
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
    )
