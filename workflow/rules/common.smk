# Names and helpers shared by every rule file.
import re

DOMAINS = list(config["domains"])
# Models with no `ref` are built and pretrained here (the embedded default); the others are
# hub ids or local directories that rules reference directly.
BUILT_MODELS = [
    name for name, model in config["models"].items() if model["ref"] is None
]


if config["merge"]["chosen"] not in config["merge"]["variants"]:
    raise WorkflowError(
        f"config key 'merge.chosen': {config['merge']['chosen']!r} is not one of "
        f"merge.variants ({', '.join(config['merge']['variants'])})"
    )


if config["think"]["compare_base"] and "base" in config["merge"]["variants"]:
    raise WorkflowError(
        "config key 'merge.variants.base': the name 'base' is taken by the base model's "
        "think-token comparison (results/think/base); rename the merge"
    )


def _one_of(names):
    return "|".join(map(re.escape, names)) or "(?!)"  # (?!) matches nothing


# the chosen merge and, for comparison, the base get optimised think tokens
THINK_MODELS = [config["merge"]["chosen"]] + (
    ["base"] if config["think"]["compare_base"] else []
)


wildcard_constraints:
    domain=_one_of(DOMAINS),
    model=_one_of(BUILT_MODELS),
    method=_one_of(config["merge"]["variants"]),
    think_model=_one_of(THINK_MODELS),


def shard_paths(split):
    return expand("results/shards/{domain}/{split}.jsonl", domain=DOMAINS, split=split)


def model_input(name):
    """What Snakemake tracks: the model's directory (built here, or a local `ref`); nothing
    for a hub id."""
    ref = config["models"][name]["ref"]
    if ref is None:
        return f"results/models/{name}"
    return ref if Path(ref).is_dir() else []


def hub_ref(name):
    """The hub id a script loads when the model is no local input (else None): scripts take
    `snakemake.input.<name> or snakemake.params.<name>`."""
    return None if model_input(name) else config["models"][name]["ref"]


def domain_model(path):
    """Domain models are kept unless merge.keep_domain_models is false (paper scale: nine
    full copies of the base)."""
    return path if config["merge"]["keep_domain_models"] else temp(path)


def source_files(wildcards):
    """Files a domain's source reads, so that editing them reruns the domain."""
    from stylemerge.sources import source_files as files

    return files(config["domains"][wildcards.domain]["source"], wildcards.domain)


def think_input(wildcards):
    if wildcards.think_model == "base":
        return model_input("base")
    return f"results/merges/{wildcards.think_model}"
