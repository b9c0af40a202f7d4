# The paper tables and the report's figures, from the result JSONs of every stage: one set
# per replicate (R("{replicate}tables")), and with several seeds the pooled card and the
# tables it reads (R("pooled")): effects pooled over seeds, intervals over seeds then
# documents, each seed's own estimate beside them.
# `snakemake --report results/report.html` shows both with the captions in workflow/report.
# Also the model cards of the chosen merge and of the same with its think rows optimised:
# tables/model_card.md and model_card_think.md, installed as merges/<chosen>/README.md and
# think/<chosen>/README.md. Writing into those input directories makes nothing outdated:
# Snakemake takes a directory output's mtime from its .snakemake_timestamp file.
from stylemerge.report.model_card import recipe as card_recipe


rule make_tables:
    input:
        adapters=expand(
            S("adapters/{domain}{arm}"), domain=DOMAINS, arm=ARMS, allow_missing=True
        ),
        merges=expand(
            S("merges/{method}"),
            method=config["merge"]["variants"],
            allow_missing=True,
        )
        + [S(f"merges/{config['merge']['chosen']}{arm}") for arm in ARMS[1:]],
        think=expand(
            S("think/{think_model}"), think_model=THINK_MODELS, allow_missing=True
        ),
        lm_eval=expand(
            S("eval/{eval_model}/lm_eval.json"),
            eval_model=LM_EVAL_MODELS,
            allow_missing=True,
        ),
        diversity=expand(
            S("eval/{eval_model}/diversity"),
            eval_model=DIVERSITY_MODELS,
            allow_missing=True,
        ),
        chosen=S(f"merges/{config['merge']['chosen']}"),
        chosen_think=S(f"think/{config['merge']['chosen']}"),
    output:
        tables=report(
            directory(S("tables")),
            patterns=["{table}.csv"],
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        figures=report(
            directory(S("figures")),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        SL("make_tables/make_tables.log"),
    conda:
        "../../envs/tables.yaml"
    params:
        benchmarks=lambda wc: in_replicate(wc, "benchmarks"),
        seed=lambda wc: REPLICATES[wc.replicate],
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


rule pool_replicates:
    input:
        lm_eval=expand(
            S("eval/{eval_model}/lm_eval.json"),
            eval_model=LM_EVAL_MODELS,
            replicate=REPLICATES,
        ),
        diversity=expand(
            S("eval/{eval_model}/diversity"),
            eval_model=DIVERSITY_MODELS,
            replicate=REPLICATES,
        ),
        think=expand(
            S("think/{think_model}"), think_model=THINK_MODELS, replicate=REPLICATES
        ),
        adapters=expand(
            S("adapters/{domain}{arm}"), domain=DOMAINS, arm=ARMS, replicate=REPLICATES
        ),
        tables=expand(S("tables"), replicate=REPLICATES),
    output:
        directory(R("pooled")),
    log:
        L("pool_replicates/pool_replicates.log"),
    conda:
        "../../envs/tables.yaml"
    params:
        seeds=[REPLICATES[r] for r in REPLICATES],
        replicates=[R(r) for r in REPLICATES],
        chosen=config["merge"]["chosen"],
        comparison=config["evaluate"]["comparison"],
    script:
        "../scripts/pool_replicates.py"
