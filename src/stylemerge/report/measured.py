"""What this run measured for each of the card's claims (:mod:`stylemerge.report.claims`):
the chosen model's row of a table's frame (:mod:`stylemerge.report.tables`, or a frame
pooled over seeds, :mod:`stylemerge.report.replicates`), read as ``ours``, ``ci_low``,
``ci_high``, ``n``, ``p``, ``seed_columns`` and a ``detail`` (and, where they apply,
``floor`` and ``comparable``): the mapping :func:`stylemerge.report.claims.card_table` makes
a claim's row from.

Frames may be older ones, without the columns a later table has: a missing column reads as
None, never as an error.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from stylemerge.evaluate.task_data import IN_DOMAIN, OUT_OF_DOMAIN
from stylemerge.report.values import format_interval
from stylemerge.stats.intervals import finite

# Why an in-domain lambada row is not the card's claim: the card's lambada_openai is book text.
IN_DOMAIN_ONLY = (
    "in-domain text (the domains the adapters trained on), where the card's "
    "lambada_openai is book text none trained on; this run has no out-of-domain "
    "row (evaluate.lm_eval.lambada_ood)"
)


def _int(value) -> int | None:
    return None if finite(value) is None else int(value)


def _pct(value) -> str:
    value = finite(value)
    return "n/a" if value is None else f"{value:+.3g} %"


def _interval(low, high) -> str:
    text = format_interval(low, high)
    return f" {text}" if text else ""


def lookup(frame: pd.DataFrame, **keys) -> Mapping | None:
    """The first row of ``frame`` whose columns equal ``keys`` (NaN read as None); None when
    there is none, or the frame lacks one of the columns."""
    if frame is None or frame.empty or any(k not in frame for k in keys):
        return None
    match = frame
    for key, value in keys.items():
        match = match[match[key] == value]
    if match.empty:
        return None
    return {k: (None if pd.isna(v) else v) for k, v in match.iloc[0].items()}


def seed_columns(row: Mapping | None, prefix: str = "") -> dict:
    """A row's seed summary (``<prefix>seeds``, ``seed_estimates``, ``seed_sd``,
    ``seeds_same_sign``: all None in a single seed's frame)."""
    keys = ("seeds", "seed_estimates", "seed_sd", "seeds_same_sign")
    return {k: (row or {}).get(prefix + k) for k in keys}


def lambada_row(frame: pd.DataFrame | None, model: str) -> Mapping | None:
    """The lambada row the card's claim reads: the out-of-domain text's, else (a run without
    one) the in-domain text's, which is then not comparable; a table without a ``text``
    column (an older one) has one row per model."""
    if frame is not None and "text" in frame:
        for text in (OUT_OF_DOMAIN, IN_DOMAIN):
            found = lookup(frame, model=model, text=text)
            measured = ("perplexity", "ppl_change_vs_base_pct")  # a table's, a pooled one's
            if found is not None and any(found.get(k) is not None for k in measured):
                return found
        return None
    return lookup(frame, model=model)


def lambada_measured(lambada: Mapping | None, prefix: str, column: str) -> dict | None:
    """A lambada claim from :func:`lambada_row`: the change in ``column``, its interval, p
    and seeds under ``prefix`` (``vs_base``, ``vs_comparison``); not comparable when the row
    is the in-domain text's.  None when the row has no such change."""
    if lambada is None or lambada.get(column) is None:
        return None
    in_domain = lambada.get("text") == IN_DOMAIN
    # where n counts documents, the detail names the passages cut from them
    passages = (
        f"{_int(lambada.get('passages'))} passages" if lambada.get("documents") is not None else ""
    )
    details = (
        f"{lambada['text']} text" if lambada.get("text") and not in_domain else "",
        passages,
        IN_DOMAIN_ONLY if in_domain else "",
    )
    return {
        "ours": lambada[column],
        "ci_low": lambada.get(f"{prefix}_ci_low_pct"),
        "ci_high": lambada.get(f"{prefix}_ci_high_pct"),
        "p": lambada.get(f"{prefix}_p"),
        "seed_columns": seed_columns(lambada, f"{prefix}_"),
        "n": _int(lambada.get("documents") or lambada.get("passages")),
        "comparable": not in_domain,
        "detail": "; ".join(x for x in details if x),
    }


def diversity_measured(
    found: Mapping, value: str, prefix: str, detail: str = "", seeds: str = ""
) -> dict:
    """A diversity claim: the length-controlled change (``_lc`` columns) where the table has
    it, the raw change and the samples' length change in the detail."""
    controlled = found.get(f"{value}_lc") is not None
    suffix = "_lc" if controlled else ""
    raw = (
        ""
        if found.get(value) is None and controlled
        else f"raw {_pct(found.get(value))}"
        f"{_interval(found.get(f'{prefix}_ci_low_pct'), found.get(f'{prefix}_ci_high_pct'))}"
        f"; samples' length {_pct(found.get('length_change_vs_base_pct'))}"
        if controlled
        else "not length-controlled (an older table)"
    )
    return {
        "ours": found.get(value + suffix),
        "ci_low": found.get(f"{prefix}_ci_low_pct{suffix}"),
        "ci_high": found.get(f"{prefix}_ci_high_pct{suffix}"),
        "p": found.get(("change_p" if prefix == "change" else f"{prefix}_p") + suffix),
        "n": _int(found.get("documents") or found.get("prompts")),
        "seed_columns": seed_columns(found, seeds),
        "detail": "; ".join(x for x in (detail, raw) if x),
    }


def gsm8k_measured(found: Mapping | None) -> dict | None:
    """The gsm8k claim from the chosen model's ``gsm8k_think`` row: the change in points,
    original -> optimised think rows, its interval and the test's p, with the counts in the
    detail; a floor or ceiling where neither model could move.  None without a change."""
    if found is None or found.get("change_points") is None:
        return None
    # pooled over seeds: the bootstrap's p (one problem in k seeds is not k pairs)
    pooled_p = found.get("change_p")
    p = pooled_p if pooled_p is not None else found.get("mcnemar_p")
    columns = seed_columns(found)
    problems = _int(found.get("problems"))
    before, after = _int(found.get("correct_original")), _int(found.get("correct_optimised"))
    floor = None
    if problems and before == after and before in (0, problems):
        floor = "floor: no problem solved by either" if before == 0 else "ceiling: all solved"
    if pooled_p is not None:
        test = f"bootstrap p = {p:.3g}"
    elif p is not None:
        test = f"exact McNemar p = {p:.3g}"
    else:
        test = "no per-problem values: no paired test (rerun the evaluation)"
    return {
        "ours": found["change_points"],
        "ci_low": found.get("change_ci_low"),
        "ci_high": found.get("change_ci_high"),
        "n": problems,
        "p": p,
        "floor": floor,
        "seed_columns": columns,
        "detail": f"{before}/{problems} -> {after}/{problems}; {test}",
    }


def think_measured(found: Mapping) -> dict:
    """The think rows' claim from the chosen model's ``think`` row: the change of held-out
    cross-entropy; not comparable where the run added the ``<think>`` tokens itself."""
    added = bool(found.get("tags_added"))
    return {
        "ours": found.get("ce_change_pct"),
        "ci_low": found.get("ce_change_ci_low_pct"),
        "ci_high": found.get("ce_change_ci_high_pct"),
        "p": found.get("ce_change_p"),
        "seed_columns": seed_columns(found),
        "n": _int(found.get("heldout_traces")),
        "comparable": not added,
        "detail": "this run added the <think> tokens (new rows, trained from their "
        "initialisation), where the card's Qwen3 has trained ones"
        if added
        else "",
    }
