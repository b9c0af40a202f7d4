# Tokenizer and tiny models for the embedded default; with hub references (paper.yaml)
# nothing here runs and rules use the references directly (see common.smk: model_ref).


rule train_tokenizer:
    input:
        train=shard_paths("train"),
        heldout=shard_paths("heldout"),
    output:
        directory("results/tokenizers/{model}"),
    params:
        settings=lambda wc: config["models"][wc.model]["tokenizer"],
        max_length=lambda wc: config["models"][wc.model]["tiny"]["max_position_embeddings"],
    log:
        "logs/train_tokenizer/{model}.log",
    benchmark:
        "results/benchmarks/train_tokenizer/{model}.tsv"
    threads: lambda wc: config["models"][wc.model]["tokenizer"]["threads"]
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/train_tokenizer.py"


rule pretrain_model:
    input:
        tokenizer="results/tokenizers/{model}",
        train=shard_paths("train"),
        heldout=shard_paths("heldout"),
    output:
        directory("results/models/{model}"),
    params:
        tiny=lambda wc: config["models"][wc.model]["tiny"],
        settings=lambda wc: config["models"][wc.model]["pretrain"],
        seed=config["seed"],
        device=config["device"],
    log:
        "logs/pretrain_model/{model}.log",
    benchmark:
        "results/benchmarks/pretrain_model/{model}.tsv"
    threads: lambda wc: config["models"][wc.model]["pretrain"]["threads"]
    resources:
        mem_mb=lambda wc: config["models"][wc.model]["pretrain"]["mem_mb"],
        runtime=lambda wc: config["models"][wc.model]["pretrain"]["runtime_min"],
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/pretrain_model.py"
