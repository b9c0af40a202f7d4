# Translation only: snakemake.* -> stylemerge.grpo.train_adapter
from stylemerge.grpo import train_adapter
from stylemerge.joblog import to_file
from stylemerge.provenance import provenance

with to_file(snakemake.log[0]):
    train_adapter(
        base=snakemake.input.base or snakemake.params.base,
        domain=snakemake.wildcards.domain,
        prompts_shard=snakemake.input.prompts,
        heldout_shard=snakemake.input.heldout,
        proxy=snakemake.input.proxy,
        general_proxy=snakemake.input.general_proxy or snakemake.params.general_proxy,
        out_dir=snakemake.output[0],
        checkpoint_dir=snakemake.params.checkpoints,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=snakemake.threads,
        trust_remote_code=snakemake.params.trust_remote_code,
        allow_pickle_weights=snakemake.params.allow_pickle_weights,
        base_revision=snakemake.params.base_revision,
        general_proxy_revision=snakemake.params.general_proxy_revision,
        provenance=provenance(snakemake.config, snakemake.params.seed),
    )
