"""Every job's memory request: the stage's ``mem_mb`` where the config sets it, else the
estimate of :mod:`stylemerge.cost.memory`; what the rules (``resources: mem_mb``) and
``make_tables`` (the cost table's flags) both use."""

from __future__ import annotations

import json
from collections.abc import Mapping

from stylemerge import model_names
from stylemerge.config import stage_settings
from stylemerge.cost.memory import CUDA_HOST_MB, OVERHEAD_MB, RULE_MODELS, JobMemory, context
from stylemerge.cost.sizes import CostError

# Where each rule's mem_mb is set: the config section, as users name it, and its settings.
SETTINGS = {
    "pretrain_model": ("models.<name>.pretrain", lambda c, i: c["models"][i]["pretrain"]),
    "convert_model": ("models.<name>.gguf", lambda c, i: c["models"][i]["gguf"]),
    "train_proxy": ("proxy", lambda c, i: stage_settings(c, "proxy", i)),
    "train_adapter": (
        "grpo",
        lambda c, i: stage_settings(c, "grpo", model_names.split_arm(c, i)[0]),
    ),
    "apply_adapter": ("merge", lambda c, i: c["merge"]),
    "merge_models": ("merge", lambda c, i: c["merge"]),
    "optimize_think_tokens": ("think", lambda c, i: c["think"]),
    "evaluate_lm": ("evaluate.lm_eval", lambda c, i: c["evaluate"]["lm_eval"]),
    "measure_diversity": ("evaluate.diversity", lambda c, i: c["evaluate"]["diversity"]),
}

# The rules whose jobs put their models on the config's `device` (job.device), the merges
# too (the held-out entropy of the base, each domain model and each merge): on `device: cuda`
# each holds a GPU for its whole run. profiles/slurm gives exactly these one GPU each, and the
# cost model's requested GPU-hours count their stage's `gpus` (tests/test_slurm.py and
# tests/test_costmodel.py tie the three together). Not pretrain_model: it only builds the
# embedded default's tiny models, on CPU.
GPU_RULES = (
    "train_proxy",
    "train_adapter",
    "apply_adapter",
    "merge_models",
    "optimize_think_tokens",
    "evaluate_lm",
    "measure_diversity",
)


def job_gpus(config: Mapping, rule: str, item: str) -> int:
    """GPUs a job of a validated config requests (its stage's ``gpus``, the rule's
    Snakemake resource ``gpu``)."""
    return SETTINGS[rule][1](config, item)["gpus"]


def _override(config: Mapping, rule: str, item: str) -> int | None:
    return SETTINGS[rule][1](config, item)["mem_mb"]


def job_memory(config: Mapping, rule: str, item: str) -> JobMemory:
    """The estimate for one job of a validated config: ``rule`` (e.g. ``evaluate_lm``) and
    its wildcard item as in its benchmark file (``bbc_news-mara``, ``karcher``, ``base``)."""
    if rule not in RULE_MODELS:
        raise CostError(f"no memory model for rule {rule!r} (known: {', '.join(RULE_MODELS)})")
    on_gpu = config["device"] == "cuda" and rule != "convert_model"  # conversion: CPU only
    m = JobMemory(
        rule,
        item,
        OVERHEAD_MB[rule],
        override_mb=_override(config, rule, item),
        on_gpu=on_gpu,
        extra_host_mb=CUDA_HOST_MB if on_gpu else 0.0,
    )
    RULE_MODELS[rule](m, context(config), item)
    return m


def job_mem_mb(config: Mapping, rule: str, item: str) -> int:
    """The memory a job requests (MiB): the stage's ``mem_mb`` when the config sets one, else
    the estimate."""
    override = _override(config, rule, item)
    if override is not None:
        return override
    try:
        return job_memory(config, rule, item).estimate_mb
    except CostError as err:
        key = SETTINGS[rule][0].replace("<name>", item)
        raise CostError(f"{rule} {item}: {err}; set {key}.mem_mb in the config") from err


def job_items(config: Mapping) -> dict[str, list[str]]:
    """Every job of a config per rule that requests memory, named as its benchmark file."""
    arms = model_names.arms(config)
    models = config["models"]
    gguf_owner = {}
    for name, model in models.items():
        if model["gguf"] is not None:
            gguf_owner.setdefault(json.dumps(model["gguf"], sort_keys=True), name)
    chosen = config["merge"]["chosen"]
    adapted = [f"{d}{arm}" for d in config["domains"] for arm in arms]
    return {
        "pretrain_model": [n for n, m in models.items() if m["ref"] is None and not m["gguf"]],
        "convert_model": sorted(gguf_owner.values()),
        "train_proxy": list(config["domains"]),
        "train_adapter": adapted,
        "apply_adapter": adapted,
        "merge_models": list(config["merge"]["variants"]) + [chosen + a for a in arms[1:]],
        "optimize_think_tokens": model_names.think_models(config),
        "evaluate_lm": list(model_names.lm_eval_models(config)),
        "measure_diversity": list(model_names.diversity_models(config)),
    }


def mem_requests(config: Mapping) -> dict[str, dict[str, int]]:
    """``{rule: {item: mem_mb}}`` for every job of a config, as the rules request it."""
    return {
        rule: {item: job_mem_mb(config, rule, item) for item in items}
        for rule, items in job_items(config).items()
    }
