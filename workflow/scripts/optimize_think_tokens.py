# Translation only: snakemake.* -> stylemerge.arithmetic.build_traces (the data source chosen
# by settings["data"]) and stylemerge.think.optimize_think_tokens
from stylemerge.arithmetic import build_traces
from stylemerge.joblog import to_file
from stylemerge.snakemake_job import job_settings, model_reference
from stylemerge.think import optimize_think_tokens

with to_file(snakemake.log[0]):
    job = job_settings(snakemake)
    optimize_think_tokens(
        job,
        model_ref=model_reference(snakemake, "model"),
        traces=build_traces(snakemake.params.settings["data"], seed=job.seed),
        out_dir=snakemake.output[0],
        settings=snakemake.params.settings,
        checkpoint_dir=snakemake.params.checkpoints,
    )
