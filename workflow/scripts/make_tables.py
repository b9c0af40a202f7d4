# Translation only: snakemake.* -> stylemerge.tables.make_tables
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.tables import make_tables

with to_file(snakemake.log[0]):
    make_tables(
        adapters=snakemake.input.adapters,
        merges=snakemake.input.merges,
        think=snakemake.input.think,
        lm_eval=snakemake.input.lm_eval,
        diversity=snakemake.input.diversity,
        benchmark_dir=snakemake.params.benchmarks,
        out_dir=snakemake.output.tables,
        domains=snakemake.params.domains,
        comparison=snakemake.params.comparison,
        figures_dir=snakemake.output.figures,
        chosen=snakemake.params.chosen,
        ablation_mara=snakemake.params.ablation_mara,
        mem_requests=snakemake.params.mem_mb,
        provenance=provenance(snakemake.config, snakemake.config["seed"]),
        chosen_dir=snakemake.input.chosen,
        recipe=snakemake.params.recipe,
    )
