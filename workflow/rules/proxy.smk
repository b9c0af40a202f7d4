# Style proxies: the general proxy fine-tuned on each domain.


rule train_proxy:
    input:
        general_proxy=model_input("general_proxy"),
        train=R("shards/{domain}/train.jsonl"),
        heldout=shard_index("heldout"),
    output:
        directory(R("proxies/{domain}")),
    log:
        L("train_proxy/{domain}.log"),
    benchmark:
        R("benchmarks/train_proxy/{domain}.tsv")
    conda:
        "../../envs/train.yaml"
    threads: lambda wc: stage_settings(config, "proxy", wc.domain)["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "train_proxy", wc.domain),
        runtime=attempt_scaled(
            lambda wc: stage_settings(config, "proxy", wc.domain)["runtime_min"]
        ),
        gpu=lambda wc: stage_settings(config, "proxy", wc.domain)["gpus"],
    params:
        job=lambda wc: stage_job(stage_settings(config, "proxy", wc.domain)),
        general_proxy=model_param("general_proxy"),
        # not an output: kept when the job is killed, so that it resumes (train_adapter's too)
        checkpoints=R("checkpoints/proxies/{domain}"),
        tracking=R("logs/proxy/{domain}"),
        settings=lambda wc: stage_settings(config, "proxy", wc.domain),
    script:
        "../scripts/train_proxy.py"
