# Names and helpers shared by every rule file.
import re

DOMAINS = list(config["domains"])
# Models with no `ref` are built and pretrained here (the embedded default); the others are
# hub ids or local directories that rules reference directly.
BUILT_MODELS = [
    name for name, model in config["models"].items() if model["ref"] is None
]


def _one_of(names):
    return "|".join(map(re.escape, names)) or "(?!)"  # (?!) matches nothing


wildcard_constraints:
    domain=_one_of(DOMAINS),
    model=_one_of(BUILT_MODELS),


def shard_paths(split):
    return expand("results/shards/{domain}/{split}.jsonl", domain=DOMAINS, split=split)


def model_ref(name):
    """What a script loads: the directory built here, a local directory or a hub id."""
    ref = config["models"][name]["ref"]
    return f"results/models/{name}" if ref is None else ref


def model_input(name):
    """What Snakemake tracks as input: a directory (built here or local); nothing for a hub id."""
    ref = model_ref(name)
    return ref if config["models"][name]["ref"] is None or Path(ref).is_dir() else []


def source_files(wildcards):
    """Files a domain's source reads, so that editing them reruns the domain."""
    from stylemerge.sources import source_files as files

    return files(config["domains"][wildcards.domain]["source"], wildcards.domain)
