# Think-token optimisation: only the <think>/</think> rows of the chosen merge (and of the
# base, for comparison) train.


rule optimize_think_tokens:
    input:
        model=think_input,
    output:
        directory(R("think/{think_model}")),
    log:
        L("optimize_think_tokens/{think_model}.log"),
    benchmark:
        R("benchmarks/optimize_think_tokens/{think_model}.tsv")
    conda:
        "../../envs/train.yaml"
    threads: config["think"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "optimize_think_tokens", wc.think_model),
        runtime=attempt_scaled(config["think"]["runtime_min"]),
        gpu=config["think"]["gpus"],
    params:
        model=lambda wc: hub_ref("base") if wc.think_model == "base" else None,
        revision=lambda wc: (
            config["models"]["base"]["revision"] if wc.think_model == "base" else None
        ),
        settings=config["think"],
        seed=config["seed"],
        device=config["device"],
        trust_remote_code=config["trust_remote_code"],
        allow_pickle_weights=config["allow_pickle_weights"],
    script:
        "../scripts/optimize_think_tokens.py"
