# The paper tables, from the result JSONs of every stage.


rule make_tables:
    input:
        adapters=expand("results/adapters/{domain}", domain=DOMAINS),
        merges=expand("results/merges/{method}", method=config["merge"]["variants"]),
        think=expand("results/think/{think_model}", think_model=THINK_MODELS),
        lm_eval=expand("results/eval/{eval_model}/lm_eval.json", eval_model=EVAL_MODELS),
        diversity=expand("results/eval/{eval_model}/diversity", eval_model=EVAL_MODELS),
    output:
        directory("results/tables"),
    log:
        "logs/make_tables/make_tables.log",
    conda:
        "../../envs/tables.yaml"
    params:
        benchmarks="results/benchmarks",
        domains=DOMAINS,
        comparison=config["evaluate"]["comparison"],
    script:
        "../scripts/make_tables.py"
