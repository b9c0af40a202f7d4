# Translation only: snakemake.* -> stylemerge.evaluate.run_lm_eval (packaged task data written
# to a temporary directory under the job's tmpdir, then lm-eval; one JSON at the fixed path)
from stylemerge.evaluate import run_lm_eval
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance
from stylemerge.shards import read_shard_index

with to_file(snakemake.log[0]):
    run_lm_eval(
        model_ref=snakemake.input.model or snakemake.params.model,
        heldout_shards=read_shard_index(snakemake.input.heldout),
        out_json=snakemake.output[0],
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        heldout_fraction=snakemake.params.arithmetic_heldout_fraction,
        scratch_dir=getattr(snakemake.resources, "tmpdir", None),
        device=snakemake.params.device,
        threads=snakemake.threads,
        trust_remote_code=snakemake.params.trust_remote_code,
        allow_pickle_weights=snakemake.params.allow_pickle_weights,
        revision=snakemake.params.revision,
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
