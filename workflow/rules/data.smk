rule build_shards:
    input:
        source_files,
    output:
        train=R("shards/{domain}/train.jsonl"),
        heldout=R("shards/{domain}/heldout.jsonl"),
        manifest=R("shards/{domain}/manifest.json"),
    log:
        L("build_shards/{domain}.log"),
    benchmark:
        R("benchmarks/build_shards/{domain}.tsv")
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        source=lambda wc: config["domains"][wc.domain]["source"],
        settings=lambda wc: stage_settings(config, "shards", wc.domain),
    script:
        "../scripts/build_shards.py"


# An out-of-domain source (evaluate.lm_eval.lambada_ood.sources) is sharded whole: no train
# split, every document held out (stylemerge.data.shards.build_shards without train_path).
rule build_ood_shard:
    input:
        source_files,
    output:
        heldout=R("shards_ood/{ood}/heldout.jsonl"),
        manifest=R("shards_ood/{ood}/manifest.json"),
    log:
        L("build_ood_shard/{ood}.log"),
    benchmark:
        R("benchmarks/build_ood_shard/{ood}.tsv")
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        source=lambda wc: OOD_SOURCES[wc.ood],
        # the filters; not the split, which an out-of-domain source does not have
        settings={k: v for k, v in config["shards"].items() if k != "heldout_fraction"},
    script:
        "../scripts/build_ood_shard.py"


# One file naming a split's shards of every domain (with their sha256): the rules that read
# all domains depend on it rather than on each shard, which keeps the DAG linear in domains.
rule index_shards:
    input:
        lambda wc: shard_paths(wc.split),
    output:
        R("shards/{split}_index.json"),
    log:
        L("index_shards/{split}.log"),
    localrule: True
    conda:
        "../../envs/data.yaml"
    threads: 1
    script:
        "../scripts/index_shards.py"
