"""Config validation against the JSON schema, defaults, and per-domain stage settings.

The Snakefile calls :func:`validate_config` before any rule is defined, so a typo or a wrong
type stops the run with one message naming the key.  The library itself never reads the
config file: rules hand each function the plain settings it needs (:func:`stage_settings`).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SOURCE_KEY = "source"
# Keys whose schema default names domains: left to its default, such a key takes the default's
# domains that the run has (a run of bbc_news alone evaluates lambada on bbc_news).
LAMBADA_DOMAINS = ("evaluate", "lm_eval", "lambada", "domains")
DOMAIN_DEFAULTS = (LAMBADA_DOMAINS,)
LAMBADA_TASKS = ("stylemerge", "stylemerge_lambada")  # the packaged tasks that hold lambada
LAMBADA_OOD_TASK = "stylemerge_lambada_ood"  # its out-of-domain sibling (lambada_ood.sources)
# what the tag "stylemerge" is without lambada (stylemerge.lm_tasks)
PACKAGED_WITHOUT_LAMBADA = ("stylemerge_gsm8k", "stylemerge_bpb")
# Schema annotation: a user-given object is merged over the default object, not instead of it.
MERGE_DEFAULT = "x-merge-default"


class ConfigError(ValueError):
    """The config does not match the schema; the message names every offending key."""


# Schema annotation: the object's keys must be names from one of these sets, kept in the
# library (e.g. trl's GRPOConfig fields, listed without importing trl).
KEYS_OF = "x-keys-of"


def _key_sets() -> dict[str, frozenset]:
    from stylemerge.grpo.trl_compat import GRPO_CONFIG_FIELDS

    return {"GRPOConfig": GRPO_CONFIG_FIELDS}


def _managed_keys() -> Mapping[str, str]:
    from stylemerge.grpo.trl_compat import MANAGED

    return MANAGED


def _resolve_keys_of(node: Any, sets: Mapping[str, frozenset]) -> None:
    if isinstance(node, dict):
        if KEYS_OF in node:
            node["propertyNames"] = {"enum": sorted(sets[node[KEYS_OF]])}
        for value in node.values():
            _resolve_keys_of(value, sets)
    elif isinstance(node, list):
        for value in node:
            _resolve_keys_of(value, sets)


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    _resolve_keys_of(schema, _key_sets())
    return schema


def _with_defaults(base: type) -> type:
    """A validator class that fills ``default`` values in while it validates (jsonschema FAQ)."""
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, sub in properties.items():
                if not isinstance(sub, dict) or "default" not in sub:
                    continue
                if name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
                elif sub.get(MERGE_DEFAULT) and isinstance(instance[name], Mapping):
                    # the default object is the base that the user's keys override
                    instance[name] = deep_merge(sub["default"], instance[name])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _allowed_names(schema: Mapping, instance: Mapping) -> list[str]:
    """Keys the schema allows here, including those of the if/then branches that apply."""
    names = list(schema.get("properties", {}))
    for branch in schema.get("allOf", []):
        if jsonschema.Draft202012Validator(branch.get("if", {})).is_valid(instance):
            names += list(branch.get("then", {}).get("properties", {}))
    return sorted(set(names))


# Keys that would put a secret in the config, which is hashed into every result's provenance
# and handed to jobs as params: a hub token comes from the environment (HF_TOKEN) only.
SECRET_KEY = re.compile(
    r"(?:.*_)?(?:token|secret|password|passwd|api_key|apikey|credentials?)", re.IGNORECASE
)


def _secret_keys(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every mapping key, at any depth, named like a secret (``token``,
    ``hf_token``, ``hub_token``, ``api_key``, ...); plural counts such as
    ``max_new_tokens`` are not secrets."""
    found = []
    if isinstance(node, Mapping):
        for name, value in node.items():
            if isinstance(name, str) and SECRET_KEY.fullmatch(name):
                found.append((*path, name))
            else:
                found += _secret_keys(value, (*path, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _secret_keys(value, (*path, index))
    return found


def _without(config: dict, paths: Iterable[tuple]) -> dict:
    """A copy of ``config`` without the keys at ``paths`` (their values never reach a
    message)."""
    config = copy.deepcopy(config)
    for path in paths:
        parent = config
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
    return config


NAME_RULE = (
    "names are lower-case letters, digits and '_' (each becomes a directory under results/: "
    "no '/', '..' or absolute paths)"
)


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "pattern" and "propertyNames" in error.schema_path:
        return (
            f"config key '{key}': name {error.instance!r} is not allowed (it does not match "
            f"{error.validator_value}); {NAME_RULE}"
        )
    if (
        error.validator == "enum"
        and isinstance(error.instance, str)
        and ("propertyNames" not in error.schema_path)
    ):
        options = [str(v) for v in error.validator_value]
        hint = difflib.get_close_matches(error.instance, options, n=1)
        why = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"config key '{key}': {error.instance!r} is not one of {options}{why}"
    if error.validator == "enum" and "propertyNames" in error.schema_path:
        # a key outside an x-keys-of set (the error's path is the object, not the key)
        full = f"{key}.{error.instance}" if error.absolute_path else str(error.instance)
        hint = difflib.get_close_matches(str(error.instance), error.validator_value, n=1)
        why = f"did you mean '{hint[0]}'?" if hint else "not a known field"
        managed = _managed_keys()
        if str(error.instance) in managed:
            why = f"the workflow sets it from {managed[str(error.instance)]}"
        return f"config key '{full}': unknown key ({why})"
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        error.instance, Mapping
    ):
        allowed = _allowed_names(error.schema, error.instance)
        lines = []
        for name in sorted(set(error.instance) - set(allowed)):
            full = f"{key}.{name}" if error.absolute_path else name
            hint = difflib.get_close_matches(name, allowed, n=1)
            why = f"did you mean '{hint[0]}'?" if hint else f"allowed: {', '.join(allowed)}"
            lines.append(f"config key '{full}': unknown key ({why})")
        if lines:
            return "\n".join(lines)
    return f"config key '{key}': {error.message}"


def _errors(schema: dict, instance: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(instance))
    # An unknown source `type` makes every other key of that source "unevaluated": report the
    # type, which is the real mistake, and not the keys that follow from it.
    bad_type_objects = {
        tuple(e.absolute_path)[:-1]
        for e in errors
        if e.validator == "enum" and list(e.absolute_path)[-1:] == ["type"]
    }
    errors = [
        e
        for e in errors
        if not (
            e.validator == "unevaluatedProperties" and tuple(e.absolute_path) in bad_type_objects
        )
    ]
    return sorted({_describe(e) for e in errors})


def validate_config(
    config: Mapping, schema: dict | str | Path, notes: list[str] | None = None
) -> dict:
    """Validate ``config`` and return a copy with the schema's defaults filled in.

    Per-domain stage overrides stay sparse (no defaults are filled into them), so that an
    override changes only the keys it names and the rest come from the top-level stage.
    A default that names domains keeps those the run has (``DOMAIN_DEFAULTS``); where that
    drops any, a line saying so is appended to ``notes`` (the Snakefile logs them).
    Raises :class:`ConfigError` listing every offending key.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    config = copy.deepcopy(dict(config))
    secrets = _secret_keys(config)
    problems = [
        f"config key '{_key(path)}': secrets do not belong in the config (it is recorded in "
        "every result's provenance); a hub token comes from the environment only: "
        "export HF_TOKEN"
        for path in secrets
    ]
    config = _without(config, secrets)
    problems += _errors(schema, config)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))

    unset = [path for path in DOMAIN_DEFAULTS if _get(config, path) is None]
    overrides = {}
    for name, domain in (config.get("domains") or {}).items():
        overrides[name] = {k: domain.pop(k) for k in list(domain) if k != SOURCE_KEY}
    filler = _with_defaults(jsonschema.Draft202012Validator)(schema)
    for error in filler.iter_errors(config):  # defaults themselves must be valid
        raise ConfigError(f"schema default is invalid: {_describe(error)}")
    for name, stage_overrides in overrides.items():
        config["domains"][name].update(stage_overrides)
    for path in unset:
        default, run = _get(config, path), list(config.get("domains") or {})
        qualifying = [d for d in default if d in run]
        _get(config, path[:-1])[path[-1]] = qualifying
        if qualifying != default and notes is not None:
            notes.append(
                f"config key '{_key(path)}' defaults to {', '.join(qualifying) or 'none'}: "
                f"the run's domains among its default ({', '.join(default)})"
            )
    if LAMBADA_DOMAINS in unset:
        _drop_lambada_without_domains(config, notes)
    problems = _cross_key_errors(config)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))
    return config


def _cross_key_errors(config: Mapping) -> list[str]:
    """Keys that must name an entry of another key (checked once the schema holds)."""
    problems = []
    variants = (config.get("merge") or {}).get("variants")
    chosen = (config.get("merge") or {}).get("chosen")
    if variants is not None and chosen is not None and chosen not in variants:
        problems.append(
            f"config key 'merge.chosen': {chosen!r} is not one of merge.variants "
            f"({', '.join(variants)})"
        )
    for name, model in (config.get("models") or {}).items():
        if model.get("ref") is not None and model.get("gguf") is not None:
            problems.append(
                f"config key 'models.{name}': ref and gguf are both set; a model comes from "
                "one of them (ref: hub id or directory; gguf: a file converted here)"
            )
    evaluate = config.get("evaluate") or {}
    comparison, comparisons = evaluate.get("comparison"), evaluate.get("comparisons") or {}
    if comparison is not None and comparison not in comparisons:
        problems.append(
            f"config key 'evaluate.comparison': {comparison!r} is not one of "
            f"evaluate.comparisons ({', '.join(comparisons) or 'none configured'})"
        )
    problems += _lambada_errors(config)
    problems += _mara_errors(config)
    problems += _gsm8k_think_errors(config)
    problems += _vllm_errors(config)
    return problems


def _gsm8k_think_errors(config: Mapping) -> list[str]:
    """stylemerge_gsm8k_think shows the rationales as the think traces were trained on."""
    lm_eval = (config.get("evaluate") or {}).get("lm_eval") or {}
    data = (config.get("think") or {}).get("data") or {}
    ours = (lm_eval.get("gsm8k_think") or {}).get("strip_calculator")
    if not any(t["name"] == "stylemerge_gsm8k_think" for t in lm_eval.get("tasks") or []):
        return []
    if data.get("source") != "gsm8k" or ours is None or ours == data.get("strip_calculator"):
        return []
    return [
        f"config key 'evaluate.lm_eval.gsm8k_think.strip_calculator': {ours} where "
        f"think.data.strip_calculator is {data.get('strip_calculator')}; the task's exemplars "
        "must be in the format the think rows were trained on"
    ]


def _get(config: Mapping, path: tuple) -> Any:
    """The value at ``path`` in nested mappings, None where a level is missing."""
    for key in path:
        if not isinstance(config, Mapping) or key not in config:
            return None
        config = config[key]
    return config


def _drop_lambada_without_domains(config: dict, notes: list[str] | None) -> None:
    """A run with none of the default lambada domains (no plain prose: the last word of code
    or LaTeX is no word) evaluates the other tasks, and says so."""
    lm_eval = (config.get("evaluate") or {}).get("lm_eval")
    if not lm_eval or _get(config, LAMBADA_DOMAINS):
        return
    tasks = []
    for task in lm_eval["tasks"]:
        if task["name"] == "stylemerge":
            tasks += [{**task, "name": name} for name in PACKAGED_WITHOUT_LAMBADA]
        elif task["name"] != "stylemerge_lambada":
            tasks.append(task)
    if tasks != lm_eval["tasks"]:
        lm_eval["tasks"] = tasks
        if notes is not None:
            notes.append(
                "config key 'evaluate.lm_eval.tasks': stylemerge_lambada dropped, no domain "
                "of the run has lambada's plain prose (set evaluate.lm_eval.lambada.domains "
                "to evaluate it on others)"
            )


def _lambada_errors(config: Mapping) -> list[str]:
    """The packaged lambada task needs domains of the run; at least one task remains, and one
    runs on every model."""
    lm_eval = (config.get("evaluate") or {}).get("lm_eval") or {}
    if "tasks" in lm_eval and not lm_eval["tasks"]:
        return ["config key 'evaluate.lm_eval.tasks': no task left to evaluate"]
    if "tasks" in lm_eval and all(t.get("models", "all") != "all" for t in lm_eval["tasks"]):
        return [
            "config key 'evaluate.lm_eval.tasks': every task has models: think, so the other "
            "models lm-eval scores would run none; let one task run on all models"
        ]
    problems = _lambada_ood_errors(config, lm_eval)
    if not any(task["name"] in LAMBADA_TASKS for task in lm_eval.get("tasks") or []):
        return problems
    wanted, run = _get(config, LAMBADA_DOMAINS) or [], set(config.get("domains") or {})
    missing = [d for d in wanted if d not in run]
    if missing:
        problems.append(
            f"config key '{_key(LAMBADA_DOMAINS)}': {', '.join(missing)} not among the domains"
        )
    return problems


def _builtin_corpus(source: Mapping, name: str) -> str | None:
    return (source.get("corpus") or name) if source.get("type") == "builtin" else None


def _lambada_ood_errors(config: Mapping, lm_eval: Mapping) -> list[str]:
    """The out-of-domain lambada task needs sources, none of them text the run trains on."""
    key = "evaluate.lm_eval.lambada_ood.sources"
    sources = (lm_eval.get("lambada_ood") or {}).get("sources") or {}
    if not any(t["name"] == LAMBADA_OOD_TASK for t in lm_eval.get("tasks") or []):
        return []  # not evaluated (an overlay that adds the sources' domains drops the task)
    if not sources:
        return [f"config key '{key}': {LAMBADA_OOD_TASK} is among the tasks but has no source"]
    domains = config.get("domains") or {}
    corpora = {_builtin_corpus(d.get(SOURCE_KEY) or {}, n): n for n, d in domains.items()}
    corpora.pop(None, None)  # domains of local or hub text
    problems = []
    for name, source in sources.items():
        if name in domains:
            problems.append(f"config key '{key}.{name}': a domain of the run, not out-of-domain")
        elif (corpus := _builtin_corpus(source, name)) in corpora:
            problems.append(
                f"config key '{key}.{name}': builtin corpus {corpus!r} is domain "
                f"{corpora[corpus]!r}'s text, not out-of-domain"
            )
    return problems


def _mara_errors(config: Mapping) -> list[str]:
    """MARA's requirements for every domain's GRPO settings, and for the -mara arm of the
    ablation (``ablation.mara``), which trains every domain once more with MARA on."""
    from stylemerge.grpo.mara import mara_config_errors

    if "grpo" not in config or not config.get("domains"):
        return []
    ablation = (config.get("ablation") or {}).get("mara", False)
    problems = []
    for name, domain in config["domains"].items():
        grpo = stage_settings(config, "grpo", name)
        where = f"domains.{name}.grpo" if "grpo" in domain else "grpo"
        if ablation and grpo["mara"]["enabled"]:
            problems.append(
                f"config key '{where}.mara.enabled': ablation.mara trains every domain without "
                "MARA and again with it (the -mara arm); set enabled false"
            )
        elif ablation:
            grpo = deep_merge(grpo, {"mara": {"enabled": True}})
        problems += mara_config_errors(grpo, where)
    return list(dict.fromkeys(problems))  # one message for a top-level key


def _vllm_errors(config: Mapping) -> list[str]:
    """vLLM's settings: GRPO's context must hold a prompt and its completion (for every
    domain's settings), and lm-eval's vLLM backend runs on a GPU."""
    from stylemerge.grpo.vllm import grpo_vllm_errors

    problems = []
    if "grpo" in config:
        for name, domain in (config.get("domains") or {None: {}}).items():
            grpo = stage_settings(config, "grpo", name)
            where = f"domains.{name}.grpo" if "grpo" in domain else "grpo"
            problems += grpo_vllm_errors(grpo, where)
    lm_eval = (config.get("evaluate") or {}).get("lm_eval") or {}
    if lm_eval.get("backend") == "vllm" and config.get("device") == "cpu":
        problems.append(
            "config key 'evaluate.lm_eval.backend': vllm runs on a CUDA GPU, but device is "
            "cpu; use backend hf, or device cuda"
        )
    return list(dict.fromkeys(problems))  # one message for a top-level key


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """``base`` updated recursively with ``override`` (neither is modified)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def stage_settings(config: Mapping, stage: str, domain: str | None = None) -> dict:
    """A stage's settings: the top-level section merged with the domain's overrides."""
    settings = dict(config[stage])
    if domain is not None:
        settings = deep_merge(settings, config["domains"][domain].get(stage, {}))
    return settings


def run_dirs(run_name: str | None) -> tuple[str, str]:
    """A run's results and logs directories: ``results/`` and ``logs/`` for a config without
    ``run_name``, else ``results/<run_name>/`` and ``logs/<run_name>/`` (tiers side by side)."""
    if run_name is None:
        return "results", "logs"
    return f"results/{run_name}", f"logs/{run_name}"
