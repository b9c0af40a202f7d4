# Evaluation of every model variant: lm-evaluation-harness and text diversity.


rule evaluate_lm:
    input:
        model=eval_model_input,
        heldout=shard_index("heldout"),  # one stylemerge_bpb_<domain> task per shard
        ood=ood_shards,  # stylemerge_lambada_ood's text, where that task runs
    output:
        S("eval/{eval_model}/lm_eval.json"),
    log:
        SL("evaluate_lm/{eval_model}.log"),
    benchmark:
        S("benchmarks/evaluate_lm/{eval_model}.tsv")
    conda:
        "../../envs/eval.yaml"
    threads: config["evaluate"]["lm_eval"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "evaluate_lm", wc.eval_model),
        runtime=attempt_scaled(config["evaluate"]["lm_eval"]["runtime_min"]),
        gpu=config["evaluate"]["lm_eval"]["gpus"],
    params:
        job=lambda wc: stage_job(config["evaluate"]["lm_eval"], wc),
        model=eval_model_param,
        tracking=S("logs/lm_eval/{eval_model}"),
        settings=lm_eval_settings,
        # the think stage's split: arithmetic test problems are never its training problems
        arithmetic_heldout_fraction=config["think"]["data"]["heldout_fraction"],
    script:
        "../scripts/evaluate_lm.py"


rule measure_diversity:
    input:
        model=eval_model_input,  # local model dir; [] for a hub id
        heldout=shard_index("heldout"),
    output:
        directory(S("eval/{eval_model}/diversity")),
    log:
        SL("measure_diversity/{eval_model}.log"),
    benchmark:
        S("benchmarks/measure_diversity/{eval_model}.tsv")
    conda:
        "../../envs/eval.yaml"
    threads: config["evaluate"]["diversity"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "measure_diversity", wc.eval_model),
        runtime=attempt_scaled(config["evaluate"]["diversity"]["runtime_min"]),
        gpu=config["evaluate"]["diversity"]["gpus"],
    params:
        job=lambda wc: stage_job(config["evaluate"]["diversity"], wc),
        model=eval_model_param,
        tracking=S("logs/diversity/{eval_model}"),
        settings=config["evaluate"]["diversity"],
    script:
        "../scripts/measure_diversity.py"
