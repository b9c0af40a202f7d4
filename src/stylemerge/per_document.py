"""Intervals over documents for the lm-eval and think-token figures of the tables.

``evaluate_lm`` keeps every task's per-document metric values in ``lm_eval.json``
(``tasks.<task>.per_document``: ``doc_id`` and ``values.<metric>.<filter>``), and the think
stage keeps each held-out trace's summed cross-entropy and token count
(``heldout_ce_{before,after}.per_document``).  From these:

- lambada perplexity, ``exp(-mean log-likelihood of the target)`` as the harness defines it:
  a bootstrap over passages (:func:`perplexity`), and the percent change between two models
  on the same passages, a paired bootstrap (:func:`perplexity_change`);
- bits per byte, ``-sum(log-likelihood) / sum(bytes) / ln 2``: a bootstrap over documents
  (:func:`bits_per_byte`);
- gsm8k accuracy: Wilson intervals, the exact McNemar test of original vs optimised on the
  same problems and a paired bootstrap of the change in points (:func:`accuracy_change`);
- the think stage's held-out cross-entropy change: a paired bootstrap over traces
  (:func:`think_ce_change`).

Results written before these values were recorded have none: the functions then return
``None`` (or the point value without an interval) and log a warning naming the file's model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from stylemerge import intervals

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
    """``{"doc_id", "values", "data"}`` of one metric of the first of ``tasks`` that ran
    (``data``: the test file's sha256, where the task's data were written here); None, with a
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
    return {"doc_id": list(per_doc["doc_id"]), "values": column, "data": data}


def paired(a: Mapping | None, b: Mapping | None, what: str = "") -> bool:
    """Whether two models' per-document values are of the same documents (ids, and the data
    file's hash where both record one)."""
    if a is None or b is None:
        return False
    same = a["doc_id"] == b["doc_id"] and (a["data"] is None or b["data"] in (None, a["data"]))
    if not same:
        log.warning("%s: the two results are not of the same documents: no paired interval", what)
    return same


def _neg_exp_mean(lls: np.ndarray) -> np.ndarray:
    return np.exp(-lls.mean(axis=-1))


def _pct_ratio_of_exp(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    # exp(-mean(other)) / exp(-mean(base)) - 1, in percent
    return 100.0 * np.expm1((base - other).mean(axis=-1))


def perplexity(lls: Mapping | None, ci: float = CI, iters: int = ITERS, seed: int = SEED):
    """Perplexity ``exp(-mean(ll))`` of per-passage log-likelihoods with a bootstrap interval
    over passages; None without values."""
    if lls is None:
        return None
    return intervals.bootstrap(_neg_exp_mean, lls["values"], iters=iters, ci=ci, seed=seed)


def perplexity_change(
    base: Mapping | None, other: Mapping | None, ci: float = CI, iters=ITERS, seed=SEED
) -> dict | None:
    """Percent change of perplexity from ``base`` to ``other`` on the same passages, with a
    paired bootstrap interval over passages (the ratio of the two perplexities is
    ``exp(mean(ll_base - ll_other))``); None unless both have values of the same passages."""
    if not paired(base, other, "lambada perplexity change"):
        return None
    return intervals.paired_bootstrap(
        _pct_ratio_of_exp, base["values"], other["values"], iters, ci, seed
    )


def _bpb(ll: np.ndarray, size: np.ndarray) -> np.ndarray:
    return -ll.sum(axis=-1) / size.sum(axis=-1) / math.log(2)


def bits_per_byte(pairs: Mapping | None, ci: float = CI, iters=ITERS, seed=SEED) -> dict | None:
    """Bits per byte of ``[log-likelihood, bytes]`` per document (the harness's
    ``bits_per_byte``) with a bootstrap interval over documents; None without values."""
    if pairs is None:
        return None
    ll = [p[0] for p in pairs["values"]]
    size = [p[1] for p in pairs["values"]]
    return intervals.bootstrap(_bpb, ll, size, iters=iters, ci=ci, seed=seed)


def _points_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return 100.0 * (after - before).mean(axis=-1)


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
    change = intervals.paired_bootstrap(
        _points_change, before["values"], after["values"], iters, ci, seed
    )
    change["mcnemar"] = intervals.mcnemar(
        [v > 0.5 for v in before["values"]], [v > 0.5 for v in after["values"]]
    )
    return change


def _ce_change_pct(nb: np.ndarray, tb: np.ndarray, na: np.ndarray, ta: np.ndarray) -> np.ndarray:
    before = nb.sum(axis=-1) / tb.sum(axis=-1)
    return 100.0 * (na.sum(axis=-1) / ta.sum(axis=-1) / before - 1)


def think_ce_change(metrics: Mapping, model: str = "", ci=CI, iters=ITERS, seed=SEED):
    """Percent change of the held-out cross-entropy per token (overall) from before to after
    the think-token optimisation, with a paired bootstrap over held-out traces; None (with a
    warning) for metrics without per-trace values."""
    before = metrics["heldout_ce_before"].get("per_document")
    after = metrics["heldout_ce_after"].get("per_document")
    if not before or not after or len(before["nats"]) != len(after["nats"]):
        _warn(model, "think held-out cross-entropy")
        return None
    return intervals.bootstrap(
        _ce_change_pct,
        before["nats"],
        before["tokens"],
        after["nats"],
        after["tokens"],
        iters=iters,
        ci=ci,
        seed=seed,
        method="paired_bootstrap",
    )
