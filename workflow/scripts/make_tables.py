# Translation only: snakemake.* -> stylemerge.report.tables.make_tables
from stylemerge.core.joblog import to_file
from stylemerge.report.build import RunResults, TableSettings, make_tables
from stylemerge.workflow.provenance import provenance

with to_file(snakemake.log[0]):
    make_tables(
        RunResults(
            adapters=snakemake.input.adapters,
            merges=snakemake.input.merges,
            think=snakemake.input.think,
            lm_eval=snakemake.input.lm_eval,
            diversity=snakemake.input.diversity,
            benchmark_dir=snakemake.params.benchmarks,
            chosen_dir=snakemake.input.chosen,
            chosen_think_dir=snakemake.input.chosen_think,
        ),
        TableSettings(
            domains=snakemake.params.domains,
            chosen=snakemake.params.chosen,
            comparison=snakemake.params.comparison,
            ablation_mara=snakemake.params.ablation_mara,
            recipe=snakemake.params.recipe,
            mem_requests=snakemake.params.mem_mb,
        ),
        out_dir=snakemake.output.tables,
        figures_dir=snakemake.output.figures,
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
