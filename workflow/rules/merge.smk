# Domain models (adapter merged into the base) and their merges with mergekit.


rule apply_adapter:
    input:
        base=model_input("base"),
        adapter=S("adapters/{domain}{arm}"),
        heldout=shard_index("heldout"),
    output:
        domain_model(directory(S("domain_models/{domain}{arm}"))),
    log:
        SL("apply_adapter/{domain}{arm}.log"),
    benchmark:
        S("benchmarks/apply_adapter/{domain}{arm}.tsv")
    conda:
        "../../envs/merge.yaml"
    threads: config["merge"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "apply_adapter", wc.domain + wc.arm),
        runtime=attempt_scaled(config["merge"]["runtime_min"]),
        gpu=config["merge"]["gpus"],
    params:
        job=lambda wc: stage_job(config["merge"], wc),
        base=model_param("base"),
        settings=config["merge"],
    script:
        "../scripts/apply_adapter.py"


rule merge_models:
    input:
        base=model_input("base"),
        domain_models=lambda wc: expand(
            in_replicate(wc, "domain_models/{domain}{arm}"), domain=DOMAINS, arm=wc.arm
        ),
        heldout=shard_index("heldout"),
    output:
        directory(S("merges/{method}{arm}")),
    log:
        SL("merge_models/{method}{arm}.log"),
    benchmark:
        S("benchmarks/merge_models/{method}{arm}.tsv")
    conda:
        "../../envs/merge.yaml"
    threads: config["merge"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "merge_models", wc.method + wc.arm),
        runtime=attempt_scaled(config["merge"]["runtime_min"]),
        gpu=config["merge"]["gpus"],
    params:
        job=lambda wc: stage_job(config["merge"], wc),
        base=model_param("base"),
        variant=lambda wc: config["merge"]["variants"][wc.method],
        weights={d: stage_settings(config, "merge", d)["weight"] for d in DOMAINS},
        settings=config["merge"],
    script:
        "../scripts/merge_models.py"
