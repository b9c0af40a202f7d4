"""The compact result of an lm-eval run, as :func:`stylemerge.evaluate.harness.evaluate_lm`
writes it: lm-eval's ``simple_evaluate`` output reduced to JSON-safe metric values, the tasks'
settings and data sets, kept generations and every document's values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _number(value: Any) -> Any:
    """JSON-safe metric value: floats stay floats, non-finite values and "N/A" become None."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:  # numpy scalars
        return _number(value.item())
    except AttributeError:
        return None if value == "N/A" else str(value)


def _metrics(entry: Mapping) -> tuple[dict, dict]:
    """lm-eval's ``{"acc,none": x, "acc_stderr,none": s}`` as ``{metric: {filter: x}}`` and
    ``{metric: {filter: s}}``."""
    values: dict[str, dict] = {}
    stderr: dict[str, dict] = {}
    for key, value in entry.items():
        if "," not in key:
            continue  # alias, sample_len, ...
        metric, filter_name = key.split(",", 1)
        if metric.endswith("_stderr"):
            stderr.setdefault(metric.removesuffix("_stderr"), {})[filter_name] = _number(value)
        else:
            values.setdefault(metric, {})[filter_name] = _number(value)
    return values, stderr


def jsonable(value: Any, root: str | Path | None = None) -> Any:
    """``value`` as JSON; strings naming a path under ``root`` become relative to it."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, root) for v in value]
    if isinstance(value, str):
        prefix = f"{root}/" if root is not None else None
        return value.removeprefix(prefix) if prefix and value.startswith(prefix) else value
    if isinstance(value, bool | int | float) or value is None:
        return _number(value) if isinstance(value, float) else value
    return str(value)


def _dataset(config: Mapping, include_path: str | Path | None) -> dict:
    """Where a task's documents came from; packaged tasks' data files relative to the task
    directory (a temporary one: ``task_data`` records each file's sha256)."""
    kwargs = {k: v for k, v in (config.get("dataset_kwargs") or {}).items() if k != "cache_dir"}
    return {
        "path": config.get("dataset_path"),
        "name": config.get("dataset_name"),
        "kwargs": jsonable(kwargs, include_path),
    }


def _generations(samples: Sequence[Mapping], keep: int) -> list[dict]:
    """The first ``keep`` documents' generations: the raw text (think tags included), what
    each filter extracted and the metrics (lm-eval logs one sample per document and filter)."""
    by_doc: dict[int, dict] = {}
    for sample in samples:
        doc_id = sample["doc_id"]
        if doc_id not in by_doc:
            if len(by_doc) >= keep:
                continue
            by_doc[doc_id] = {
                "doc_id": doc_id,
                "doc": jsonable(sample["doc"]),
                "target": jsonable(sample["target"]),
                "generation": jsonable(sample["resps"][0][0]),
                "filtered": {},
                "metrics": {},
            }
        filter_name = sample["filter"]
        by_doc[doc_id]["filtered"][filter_name] = jsonable(sample["filtered_resps"][0])
        for metric in sample["metrics"]:
            by_doc[doc_id]["metrics"].setdefault(metric, {})[filter_name] = _number(sample[metric])
    return [by_doc[k] for k in sorted(by_doc)]


def _per_document(samples: Sequence[Mapping]) -> dict:
    """Every document's metric values, for intervals over documents (lm-eval logs one sample
    per document and filter): ``{"doc_id": [...], "document": [...], "values": {metric:
    {filter: [one value per document, in doc_id order]}}}``.  ``document`` is the source
    document each was cut from (the ``document`` field of the task's data, where it has one:
    the lambada mirror's passages), else the doc_id itself.  A loglikelihood task's
    ``perplexity`` value is the target's log-likelihood (the task's perplexity is
    ``exp(-mean)`` of them), a rolling task's values are ``[log-likelihood, words or
    bytes]``."""
    ids = sorted({sample["doc_id"] for sample in samples})
    where = {doc_id: i for i, doc_id in enumerate(ids)}
    documents: list = list(ids)
    values: dict[str, dict] = {}
    for sample in samples:
        doc = sample.get("doc")
        if isinstance(doc, Mapping) and doc.get("document") is not None:
            documents[where[sample["doc_id"]]] = doc["document"]
        for metric in sample["metrics"]:
            column = values.setdefault(metric, {}).setdefault(sample["filter"], [None] * len(ids))
            value = sample[metric]
            column[where[sample["doc_id"]]] = (
                [_number(v) for v in value] if isinstance(value, list | tuple) else _number(value)
            )
    return {"doc_id": ids, "document": documents, "values": values}


def task_results(results: Mapping, settings: Mapping, include_path: str | Path | None) -> dict:
    """Every task's entry (groups left out): metrics and stderrs, what it ran (shots,
    documents, version, data set), a generation task's first ``settings["samples"]``
    documents' generations, and every document's values (:func:`_per_document`)."""
    configs = results.get("configs", {})
    tasks = {}
    for name in results["results"]:
        if name in results.get("groups", {}):
            continue
        values, stderr = _metrics(results["results"][name])
        config = configs.get(name, {})
        entry = {
            "alias": results["results"][name].get("alias", name),
            "metrics": values,
            "stderr": stderr,
            "higher_is_better": jsonable(results.get("higher_is_better", {}).get(name, {})),
            "n_shot": results.get("n-shot", {}).get(name),
            "n_samples": jsonable(results.get("n-samples", {}).get(name)),
            "version": jsonable(results.get("versions", {}).get(name)),
            "output_type": config.get("output_type"),
            "dataset": _dataset(config, include_path),
        }
        logged = results.get("samples", {}).get(name, [])
        if config.get("output_type") == "generate_until":
            entry["generation_kwargs"] = jsonable(config.get("generation_kwargs"))
            entry["generations"] = _generations(logged, settings["samples"])
        entry["per_document"] = _per_document(logged)
        tasks[name] = entry
    return tasks


def group_results(results: Mapping) -> dict:
    """Every group's entry: its aggregated metrics and stderrs and the tasks it holds."""
    groups = {}
    for name, entry in results.get("groups", {}).items():
        values, stderr = _metrics(entry)
        groups[name] = {
            "alias": entry.get("alias", name),
            "metrics": values,
            "stderr": stderr,
            "tasks": list(results.get("group_subtasks", {}).get(name, [])),
        }
    return groups
