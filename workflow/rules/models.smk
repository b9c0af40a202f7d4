# Tokenizer and tiny models for the embedded default; with hub references (paper.yaml)
# nothing here runs and rules use the references directly (see common.smk: hub_ref).


rule train_tokenizer:
    input:
        train=shard_index("train"),
        heldout=shard_index("heldout"),
    output:
        directory("results/tokenizers/{model}"),
    log:
        "logs/train_tokenizer/{model}.log",
    benchmark:
        "results/benchmarks/train_tokenizer/{model}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: lambda wc: config["models"][wc.model]["tokenizer"]["threads"]
    params:
        settings=lambda wc: config["models"][wc.model]["tokenizer"],
        max_length=lambda wc: config["models"][wc.model]["tiny"][
            "max_position_embeddings"
        ],
    script:
        "../scripts/train_tokenizer.py"


rule pretrain_model:
    input:
        tokenizer="results/tokenizers/{model}",
        train=shard_index("train"),
        heldout=shard_index("heldout"),
    output:
        directory("results/models/{model}"),
    log:
        "logs/pretrain_model/{model}.log",
    benchmark:
        "results/benchmarks/pretrain_model/{model}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: lambda wc: config["models"][wc.model]["pretrain"]["threads"]
    resources:
        mem_mb=lambda wc: config["models"][wc.model]["pretrain"]["mem_mb"],
        runtime=attempt_scaled(
            lambda wc: config["models"][wc.model]["pretrain"]["runtime_min"]
        ),
        gpu=lambda wc: config["models"][wc.model]["pretrain"]["gpus"],
    params:
        tiny=lambda wc: config["models"][wc.model]["tiny"],
        settings=lambda wc: config["models"][wc.model]["pretrain"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/pretrain_model.py"
