# Think-token optimisation: only the <think>/</think> rows of the chosen merge (and of the
# base, for comparison) train.


rule optimize_think_tokens:
    input:
        model=think_input,
    output:
        directory(S("think/{think_model}")),
    log:
        SL("optimize_think_tokens/{think_model}.log"),
    benchmark:
        S("benchmarks/optimize_think_tokens/{think_model}.tsv")
    conda:
        "../../envs/train.yaml"
    threads: config["think"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "optimize_think_tokens", wc.think_model),
        runtime=attempt_scaled(config["think"]["runtime_min"]),
        gpu=config["think"]["gpus"],
    params:
        job=lambda wc: stage_job(config["think"], wc),
        model=think_model_param,
        # not an output: kept when the job is killed, so that it resumes
        checkpoints=S("checkpoints/think/{think_model}"),
        tracking=S("logs/think/{think_model}"),
        settings=config["think"],
    script:
        "../scripts/optimize_think_tokens.py"
