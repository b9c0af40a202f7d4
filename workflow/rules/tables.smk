# The paper tables and the report's figures, from the result JSONs of every stage.
# `snakemake --report results/report.html` shows both with the captions in workflow/report.


rule make_tables:
    input:
        adapters=expand(R("adapters/{domain}"), domain=DOMAINS),
        merges=expand(R("merges/{method}"), method=config["merge"]["variants"]),
        think=expand(R("think/{think_model}"), think_model=THINK_MODELS),
        lm_eval=expand(R("eval/{eval_model}/lm_eval.json"), eval_model=EVAL_MODELS),
        diversity=expand(R("eval/{eval_model}/diversity"), eval_model=EVAL_MODELS),
    output:
        tables=report(
            directory(R("tables")),
            patterns=["{table}.csv"],
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        figures=report(
            directory(R("figures")),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        L("make_tables/make_tables.log"),
    conda:
        "../../envs/tables.yaml"
    params:
        benchmarks=R("benchmarks"),
        domains=DOMAINS,
        comparison=config["evaluate"]["comparison"],
        chosen=config["merge"]["chosen"],
    script:
        "../scripts/make_tables.py"
