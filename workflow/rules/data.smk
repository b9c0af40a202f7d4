rule build_shards:
    input:
        source_files,
    output:
        train="results/shards/{domain}/train.jsonl",
        heldout="results/shards/{domain}/heldout.jsonl",
        manifest="results/shards/{domain}/manifest.json",
    log:
        "logs/build_shards/{domain}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        source=lambda wc: config["domains"][wc.domain]["source"],
        settings=lambda wc: stage_settings(config, "shards", wc.domain),
    script:
        "../scripts/build_shards.py"
