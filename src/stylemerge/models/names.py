"""Names of the model variants a config makes and evaluates, computed once for
workflow/rules/common.smk (wildcards and targets) and the cost model (its jobs).

Arms of the GRPO stage are suffixes (``-``: domain and merge names have none, and mergekit would
read ``+`` in a path as model+LoRA): ``""`` is the recipe as configured; with ``ablation.mara``,
``-mara`` trains every domain again with MARA on (``adapters/<domain>-mara``,
``domain_models/<domain>-mara``, ``merges/<chosen>-mara``), so the two arms can be compared side
by side.  The evaluated models map a name to where the model is: a directory under the run's
results (``results``, e.g. ``results/smol``), a reference from ``evaluate.comparisons`` (hub id
or directory), or None for the base model (whatever ``models.base`` is).
"""

from __future__ import annotations

from collections.abc import Mapping

RECIPE_ARM, MARA_ARM = "", "-mara"


class ModelNameError(ValueError):
    """Two model variants of a config would share a name; the message says which to rename."""


def arms(config: Mapping) -> list[str]:
    """The GRPO stage's arms: ``""`` and, with ``ablation.mara``, ``"-mara"``."""
    return [RECIPE_ARM] + ([MARA_ARM] if config["ablation"]["mara"] else [])


def split_arm(config: Mapping, item: str) -> tuple[str, str]:
    """A job named ``<domain><arm>`` (``bbc_news-mara``) -> (``bbc_news``, ``-mara``)."""
    for arm in sorted(arms(config), key=len, reverse=True):
        if arm and item.endswith(arm):
            return item[: -len(arm)], arm
    return item, RECIPE_ARM


def tiny_models(config: Mapping) -> list[str]:
    """The models with neither ``ref`` nor ``gguf``: built and pretrained here."""
    return [n for n, m in config["models"].items() if m["ref"] is None and m["gguf"] is None]


def gguf_owners(config: Mapping) -> dict[str, str]:
    """Models converted from the same GGUF source share one directory (the smol tier's base
    and general proxy are the same SmolLM2): each GGUF model -> the first model naming its
    source, whose name the conversion takes."""
    models = config["models"]
    return {
        name: next(n for n, m in models.items() if m["gguf"] == model["gguf"])
        for name, model in models.items()
        if model["gguf"] is not None
    }


def think_models(config: Mapping) -> list[str]:
    """Models whose think tokens are optimised: the chosen merge and, for comparison, the base
    (``think.compare_base``)."""
    compare_base = config["think"]["compare_base"]
    if compare_base and "base" in config["merge"]["variants"]:
        raise ModelNameError(
            "config key 'merge.variants.base': the name 'base' is taken by the base model's "
            "think-token comparison (results/think/base); rename the merge"
        )
    return [config["merge"]["chosen"]] + (["base"] if compare_base else [])


def domain_models(config: Mapping, results: str = "results") -> dict[str, str]:
    """``domain_<domain><arm>`` -> its directory (the adapter merged into the base)."""
    return {
        f"domain_{d}{arm}": f"{results}/domain_models/{d}{arm}"
        for d in config["domains"]
        for arm in arms(config)
    }


def lm_eval_models(config: Mapping, results: str = "results") -> dict[str, str | None]:
    """The models lm-eval scores, each at ``<results>/eval/<name>/``: the base, the domain
    models (``evaluate.domain_models``), every merge variant, the chosen merge of each further
    arm, the think-token models ``think_<model>`` and ``evaluate.comparisons``.  Raises
    :class:`ModelNameError` when two of them share a name."""
    chosen = config["merge"]["chosen"]
    parts = [
        {"base": None},
        domain_models(config, results) if config["evaluate"]["domain_models"] else {},
        {name: f"{results}/merges/{name}" for name in config["merge"]["variants"]},
        {f"{chosen}{arm}": f"{results}/merges/{chosen}{arm}" for arm in arms(config)[1:]},
        {f"think_{name}": f"{results}/think/{name}" for name in think_models(config)},
        dict(config["evaluate"]["comparisons"]),
    ]
    models = {name: where for part in parts for name, where in part.items()}
    if len(models) != sum(len(part) for part in parts):
        raise ModelNameError(
            "model names to evaluate collide (base, domain_<d>, merge names, think_<m>, "
            "evaluate.comparisons): rename a merge variant or a comparison"
        )
    return models


def diversity_models(config: Mapping, results: str = "results") -> dict[str, str | None]:
    """The models whose diversity is measured: those lm-eval scores and, with an ablation, every
    arm's domain models (what MARA is for)."""
    extra = domain_models(config, results) if len(arms(config)) > 1 else {}
    return {**lm_eval_models(config, results), **extra}


def think_comparison(config: Mapping) -> list[str]:
    """The models of the think-token comparison: each think-optimised model ``think_<m>``
    and its original ``<m>`` (the pairs the gsm8k_think table compares)."""
    return [name for m in think_models(config) for name in (m, f"think_{m}")]


def lm_eval_tasks_for(config: Mapping, model: str) -> list[dict]:
    """The ``evaluate.lm_eval.tasks`` that run on ``model``: those with ``models: all``, and
    those with ``models: think`` when ``model`` is in the think-token comparison."""
    comparison = think_comparison(config)
    return [
        dict(task)
        for task in config["evaluate"]["lm_eval"]["tasks"]
        if task.get("models", "all") == "all" or model in comparison
    ]


def replicate_seeds(config: Mapping) -> list[int]:
    """The seeds every stage from GRPO on runs with: ``replicates``, or the run's ``seed``."""
    return list(config.get("replicates") or [config["seed"]])


def replicate_dir(config: Mapping, seed: int) -> str:
    """Where a seed's results sit under the run's directory: the run's own ``seed`` at the
    run's paths (""), another under ``seeds/<seed>/``."""
    return "" if seed == config["seed"] else f"seeds/{seed}/"
