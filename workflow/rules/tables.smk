# The paper tables and the report's figures, from the result JSONs of every stage.
# `snakemake --report results/report.html` shows both with the captions in workflow/report.
# Also the chosen merge's model card: tables/model_card.md, installed as
# merges/<chosen>/README.md. Writing into that input directory makes nothing outdated:
# Snakemake takes a directory output's mtime from its .snakemake_timestamp file.
from stylemerge.model_card import recipe as card_recipe


rule make_tables:
    input:
        adapters=expand(R("adapters/{domain}{arm}"), domain=DOMAINS, arm=ARMS),
        merges=expand(R("merges/{method}"), method=config["merge"]["variants"])
        + [R(f"merges/{config['merge']['chosen']}{arm}") for arm in ARMS[1:]],
        think=expand(R("think/{think_model}"), think_model=THINK_MODELS),
        lm_eval=expand(R("eval/{eval_model}/lm_eval.json"), eval_model=LM_EVAL_MODELS),
        diversity=expand(R("eval/{eval_model}/diversity"), eval_model=DIVERSITY_MODELS),
        chosen=R(f"merges/{config['merge']['chosen']}"),
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
        ablation_mara=config["ablation"]["mara"],
        recipe=card_recipe(config),
        # every job's mem_mb, as its rule requests it: the cost table flags a job whose
        # max RSS exceeded it
        mem_mb=mem_requests(config),
    script:
        "../scripts/make_tables.py"
