# Translation only: snakemake.* -> stylemerge.data.arithmetic.build_traces (the data source chosen
# by settings["data"]) and stylemerge.think.optimize.optimize_think_tokens
from stylemerge.core.joblog import to_file
from stylemerge.data.arithmetic import build_traces
from stylemerge.think.optimize import optimize_think_tokens
from stylemerge.workflow.snakemake_job import job_settings, model_reference

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
