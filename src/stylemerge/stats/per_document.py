"""Intervals over documents for the lm-eval and think-token figures of the tables.

``evaluate_lm`` keeps every task's per-document metric values in ``lm_eval.json``
(``tasks.<task>.per_document``: ``doc_id``, the source ``document`` each was cut from, and
``values.<metric>.<filter>``), and the think stage keeps each held-out trace's summed
cross-entropy and token count (``heldout_ce_{before,after}.per_document``).

Intervals resample the unit that is independent: the source document (a lambada passage is
one of several cut from a held-out document; a gsm8k problem or a think trace is its own),
and, where values of several seeds are pooled (:func:`pool`), the seeds first
(:func:`stylemerge.stats.intervals.hierarchical_bootstrap`).  ``n`` is the number of documents.
From these values:

- lambada perplexity, ``exp(-mean log-likelihood of the target)`` as the harness defines it
  (:func:`perplexity`), and the percent change between two models on the same passages,
  paired (:func:`perplexity_change`);
- bits per byte, ``-sum(log-likelihood) / sum(bytes) / ln 2`` (:func:`bits_per_byte`);
- gsm8k accuracy: Wilson intervals, the exact McNemar test of original vs optimised on the
  same problems and a paired bootstrap of the change in points (:func:`accuracy_change`);
- the think stage's held-out cross-entropy change, paired over traces
  (:func:`think_ce_change`).

Results written before these values were recorded have none: the functions then return
``None`` (or the point value without an interval) and log a warning naming the file's model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from stylemerge.stats import intervals

log = logging.getLogger(__name__)

ITERS, SEED, CI = 10_000, 0, 0.95


def _warn(model: str, what: str) -> None:
    log.warning(
        "%s: %s has no per-document values (a result from before they were recorded): "
        "no interval; rerun its evaluation to get one",
        model,
        what,
    )


def task_entry(result: Mapping, tasks: Sequence[str]) -> tuple[str, Mapping] | None:
    """The first of ``tasks`` that ran, and its entry in an ``lm_eval.json``."""
    for task in tasks:
        entry = result.get("tasks", {}).get(task)
        if entry is not None:
            return task, entry
    return None


def values(
    result: Mapping, tasks: Sequence[str], metric: str, filter_: str = "none", model: str = ""
) -> dict | None:
    """``{"doc_id", "document", "seed", "values", "data"}`` of one metric of the first of
    ``tasks`` that ran: ``document`` the source document of each value (results from before
    it was recorded: each value its own), ``seed`` None (one run; :func:`pool` sets it),
    ``data`` the test file's sha256 where the task's data were written here.  None, with a
    warning, when the result has no per-document values."""
    found = task_entry(result, tasks)
    if found is None:
        return None
    task, entry = found
    per_doc = entry.get("per_document")
    column = ((per_doc or {}).get("values", {}).get(metric) or {}).get(filter_)
    if not column or any(v is None for v in column):
        _warn(model or str(result.get("model", "?")), task)
        return None
    data = ((result.get("task_data") or {}).get(task) or {}).get("test", {}).get("sha256")
    ids = list(per_doc["doc_id"])
    documents = per_doc.get("document") or ids
    return {
        "doc_id": ids,
        "document": [str(d) for d in documents],
        "seed": None,
        "values": column,
        "data": data,
    }


def pool(per_seed: Mapping[int, Mapping | None]) -> dict | None:
    """One seed's values after another (:func:`values` of each seed's result), each row
    labelled with its seed, for intervals that resample seeds, then documents.  None when a
    seed has no values."""
    if not per_seed or any(v is None for v in per_seed.values()):
        return None
    pooled: dict = {"doc_id": [], "document": [], "seed": [], "values": [], "data": []}
    for seed, v in per_seed.items():
        for key in ("doc_id", "document", "values"):
            pooled[key].extend(v[key])
        pooled["seed"].extend([seed] * len(v["values"]))
        pooled["data"].append(v["data"])
    pooled["data"] = pooled["data"][0] if len(set(pooled["data"])) == 1 else None
    return pooled


def levels(v: Mapping) -> list[list]:
    """What a bootstrap of ``v`` resamples: seeds then documents where several seeds are
    pooled, documents otherwise."""
    if v.get("seed") is not None and len(set(v["seed"])) > 1:
        return [list(v["seed"]), list(v["document"])]
    return [list(v["document"])]


def crossed(v: Mapping) -> bool:
    """Whether pooled seeds scored the same documents (one data file, by its sha256, in every
    seed: lambada's passages of the shared shards): seeds and documents are then crossed
    factors, resampled independently.  Where each seed made its own (gsm8k-style problems
    are drawn with the seed) they are nested."""
    return len(levels(v)) == 2 and v.get("data") is not None


def paired(a: Mapping | None, b: Mapping | None, what: str = "") -> bool:
    """Whether two models' per-document values are of the same documents (ids, and the data
    file's hash where both record one)."""
    if a is None or b is None:
        return False
    same = (
        a["doc_id"] == b["doc_id"]
        and a.get("seed") == b.get("seed")
        and (a["data"] is None or b["data"] in (None, a["data"]))
    )
    if not same:
        log.warning("%s: the two results are not of the same documents: no paired interval", what)
    return same


def _mean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (w * x).sum(axis=-1) / w.sum(axis=-1)


def _neg_exp_mean(w: np.ndarray, lls: np.ndarray) -> np.ndarray:
    return np.exp(-_mean(w, lls))


def _pct_ratio_of_exp(w: np.ndarray, base: np.ndarray, other: np.ndarray) -> np.ndarray:
    # exp(-mean(other)) / exp(-mean(base)) - 1, in percent
    return 100.0 * np.expm1(_mean(w, base - other))


def _clustered(stat, v: Mapping, *columns, ci=CI, iters=ITERS, seed=SEED) -> dict:
    return intervals.hierarchical_bootstrap(
        stat, *columns, levels=levels(v), iters=iters, ci=ci, seed=seed, crossed=crossed(v)
    )


def perplexity(lls: Mapping | None, ci: float = CI, iters: int = ITERS, seed: int = SEED):
    """Perplexity ``exp(-mean(ll))`` of per-passage log-likelihoods with a bootstrap interval
    over documents (seeds, then documents, where pooled); None without values."""
    if lls is None:
        return None
    return _clustered(_neg_exp_mean, lls, lls["values"], ci=ci, iters=iters, seed=seed)


def perplexity_change(
    base: Mapping | None, other: Mapping | None, ci: float = CI, iters=ITERS, seed=SEED
) -> dict | None:
    """Percent change of perplexity from ``base`` to ``other`` on the same passages (the
    ratio of the two perplexities is ``exp(mean(ll_base - ll_other))``), with a paired
    bootstrap interval over the documents the passages were cut from; None unless both have
    values of the same passages."""
    if not paired(base, other, "lambada perplexity change"):
        return None
    return _clustered(
        _pct_ratio_of_exp, base, base["values"], other["values"], ci=ci, iters=iters, seed=seed
    )


def _bpb(w: np.ndarray, ll: np.ndarray, size: np.ndarray) -> np.ndarray:
    return -(w * ll).sum(axis=-1) / (w * size).sum(axis=-1) / math.log(2)


def bits_per_byte(pairs: Mapping | None, ci: float = CI, iters=ITERS, seed=SEED) -> dict | None:
    """Bits per byte of ``[log-likelihood, bytes]`` per document (the harness's
    ``bits_per_byte``) with a bootstrap interval over documents; None without values."""
    if pairs is None:
        return None
    ll = [p[0] for p in pairs["values"]]
    size = [p[1] for p in pairs["values"]]
    return _clustered(_bpb, pairs, ll, size, ci=ci, iters=iters, seed=seed)


def _points_change(w: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return 100.0 * _mean(w, after - before)


def accuracy(correct: Mapping | None, ci: float = CI) -> dict | None:
    """Accuracy with its Wilson interval, from per-problem 0/1 values."""
    if correct is None:
        return None
    return intervals.wilson(int(round(sum(correct["values"]))), len(correct["values"]), ci)


def accuracy_change(
    before: Mapping | None, after: Mapping | None, ci: float = CI, iters=ITERS, seed=SEED
) -> dict | None:
    """Change of accuracy in points from ``before`` to ``after`` on the same problems: a
    paired bootstrap interval over problems, and the exact McNemar test (``mcnemar``: the
    discordant counts ``b``, ``c`` and ``p_value``); None unless paired."""
    if not paired(before, after, "accuracy change"):
        return None
    change = _clustered(
        _points_change, before, before["values"], after["values"], ci=ci, iters=iters, seed=seed
    )
    change["mcnemar"] = intervals.mcnemar(
        [v > 0.5 for v in before["values"]], [v > 0.5 for v in after["values"]]
    )
    return change


def _ce_change_pct(w, nb, tb, na, ta) -> np.ndarray:
    before = (w * nb).sum(axis=-1) / (w * tb).sum(axis=-1)
    return 100.0 * ((w * na).sum(axis=-1) / (w * ta).sum(axis=-1) / before - 1)


def think_ce_change(metrics: Mapping, model: str = "", ci=CI, iters=ITERS, seed=SEED):
    """Percent change of the held-out cross-entropy per token (overall) from before to after
    the think-token optimisation, with a paired bootstrap over held-out traces (each its own
    problem); None (with a warning) for metrics without per-trace values."""
    before = metrics["heldout_ce_before"].get("per_document")
    after = metrics["heldout_ce_after"].get("per_document")
    if not before or not after or len(before["nats"]) != len(after["nats"]):
        _warn(model, "think held-out cross-entropy")
        return None
    traces = {"document": list(range(len(before["nats"]))), "seed": None}
    columns = (before["nats"], before["tokens"], after["nats"], after["tokens"])
    return _clustered(_ce_change_pct, traces, *columns, ci=ci, iters=iters, seed=seed)
