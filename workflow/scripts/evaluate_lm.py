# Translation only: snakemake.* -> stylemerge.evaluate.harness.run_lm_eval (packaged task data
# written
# to a temporary directory under the job's tmpdir, then lm-eval; one JSON at the fixed path)
from pathlib import Path

from stylemerge.core.joblog import to_file
from stylemerge.data.shards import read_shard_index
from stylemerge.evaluate.harness import run_lm_eval
from stylemerge.workflow.snakemake_job import comparison_unavailable, job_settings, model_reference

with to_file(snakemake.log[0]):
    job, model = job_settings(snakemake), model_reference(snakemake, "model")
    # a comparison model not found or without safetensors weights: recorded, not evaluated
    if not comparison_unavailable(snakemake, job, model):
        run_lm_eval(
            job,
            model_ref=model,
            heldout_shards=read_shard_index(snakemake.input.heldout),
            out_json=snakemake.output[0],
            settings=snakemake.params.settings,
            heldout_fraction=snakemake.params.arithmetic_heldout_fraction,
            scratch_dir=getattr(snakemake.resources, "tmpdir", None),
            # shards_ood/<source>/heldout.jsonl
            ood_shards={Path(p).parent.name: p for p in snakemake.input.ood},
        )
