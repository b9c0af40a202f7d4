"""Every job's memory request: the stage's ``mem_mb`` where the config sets it, else the
estimate of :mod:`stylemerge.resources.memory`; what the rules (``resources: mem_mb``) and
``make_tables`` (the cost table's flags) both use."""

from __future__ import annotations

from collections.abc import Mapping

from stylemerge.resources.memory import CUDA_HOST_MB, RULE_MODELS, JobMemory, context
from stylemerge.resources.rules import RULES, job_items, job_settings
from stylemerge.resources.sizes import CostError


def _override(config: Mapping, rule: str, item: str) -> int | None:
    return job_settings(config, rule, item)["mem_mb"]


def job_memory(config: Mapping, rule: str, item: str) -> JobMemory:
    """The estimate for one job of a validated config: ``rule`` (e.g. ``evaluate_lm``) and
    its wildcard item as in its benchmark file (``bbc_news-mara``, ``karcher``, ``base``)."""
    if rule not in RULE_MODELS:
        raise CostError(f"no memory model for rule {rule!r} (known: {', '.join(RULE_MODELS)})")
    on_gpu = config["device"] == "cuda" and rule != "convert_model"  # conversion: CPU only
    m = JobMemory(
        rule,
        item,
        RULES[rule].overhead_mb,
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
        key = RULES[rule].section.replace("<name>", item)
        raise CostError(f"{rule} {item}: {err}; set {key}.mem_mb in the config") from err


def mem_requests(config: Mapping) -> dict[str, dict[str, int]]:
    """``{rule: {item: mem_mb}}`` for every job of a config, as the rules request it."""
    return {
        rule: {item: job_mem_mb(config, rule, item) for item in items}
        for rule, items in job_items(config).items()
    }
