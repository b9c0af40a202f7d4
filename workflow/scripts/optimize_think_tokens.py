# Translation only: snakemake.* -> stylemerge.arithmetic.build_traces (the data source chosen
# by settings["data"]) and stylemerge.think.optimize_think_tokens
from stylemerge.arithmetic import build_traces
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.think import optimize_think_tokens

with to_file(snakemake.log[0]):
    settings = snakemake.params.settings
    traces = build_traces(settings["data"], seed=snakemake.params.seed)
    optimize_think_tokens(
        model_ref=snakemake.input.model or snakemake.params.model,
        out_dir=snakemake.output[0],
        train_texts=traces["train"],
        heldout_texts=traces["heldout"],
        settings=settings,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=snakemake.threads,
        trust_remote_code=snakemake.params.trust_remote_code,
        allow_pickle_weights=snakemake.params.allow_pickle_weights,
        revision=snakemake.params.revision,
        data=traces["info"],
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
