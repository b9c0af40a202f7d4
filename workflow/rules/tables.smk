# The paper tables and the report's figures, from the result JSONs of every stage.
# `snakemake --report results/report.html` shows both with the captions in workflow/report.


rule make_tables:
    input:
        adapters=expand("results/adapters/{domain}", domain=DOMAINS),
        merges=expand("results/merges/{method}", method=config["merge"]["variants"]),
        think=expand("results/think/{think_model}", think_model=THINK_MODELS),
        lm_eval=expand("results/eval/{eval_model}/lm_eval.json", eval_model=EVAL_MODELS),
        diversity=expand("results/eval/{eval_model}/diversity", eval_model=EVAL_MODELS),
    output:
        tables=report(
            directory("results/tables"),
            patterns=["{table}.csv"],
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        figures=report(
            directory("results/figures"),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        "logs/make_tables/make_tables.log",
    conda:
        "../../envs/tables.yaml"
    params:
        benchmarks="results/benchmarks",
        domains=DOMAINS,
        comparison=config["evaluate"]["comparison"],
        chosen=config["merge"]["chosen"],
    script:
        "../scripts/make_tables.py"
