# GRPO LoRA adapters on the base model, one per domain (and arm: see ARMS in common.smk),
# rewarded by the domain's proxy.
# One per replicate (seed): results/[seeds/<seed>/]adapters/... (common.smk, S).
# Checkpoints live in results/checkpoints/{domain}: not an output, so Snakemake keeps them
# when a job fails or is killed, and the rerun resumes from the last one.


rule train_adapter:
    input:
        base=model_input("base"),
        general_proxy=model_input("general_proxy"),
        proxy=R("proxies/{domain}"),
        prompts=R("shards/{domain}/train.jsonl"),
        heldout=R("shards/{domain}/heldout.jsonl"),
    output:
        directory(S("adapters/{domain}{arm}")),
    log:
        SL("train_adapter/{domain}{arm}.log"),
    benchmark:
        S("benchmarks/train_adapter/{domain}{arm}.tsv")
    conda:
        "../../envs/train.yaml"
    threads: lambda wc: stage_settings(config, "grpo", wc.domain)["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "train_adapter", wc.domain + wc.arm),
        runtime=attempt_scaled(
            lambda wc: stage_settings(config, "grpo", wc.domain)["runtime_min"]
        ),
        gpu=lambda wc: stage_settings(config, "grpo", wc.domain)["gpus"],
    params:
        job=lambda wc: stage_job(stage_settings(config, "grpo", wc.domain), wc),
        base=model_param("base"),
        general_proxy=model_param("general_proxy"),
        checkpoints=S("checkpoints/{domain}{arm}"),
        tracking=S("logs/grpo/{domain}{arm}"),  # kept when the checkpoints go
        settings=lambda wc: grpo_settings(wc.domain, wc.arm),
    script:
        "../scripts/train_adapter.py"
