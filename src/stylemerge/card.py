"""The card table (``tables/card.md``, first of the tables): one row per claim of the model
card, with the card's figure, ours, its 95 % interval, n and a verdict.

Verdicts (:func:`verdict`):

- ``agrees``: the interval excludes 0 and ours has the card's sign;
- ``opposite``: the interval excludes 0 and ours has the other sign;
- ``not significant``: the interval includes 0 (for gsm8k: the exact McNemar test of the
  paired problems has p >= 0.05);
- ``not measured``: no value or no interval (no comparison model, a domain not in the run, a
  result from before per-document values were recorded);
- ``unavailable``: the comparison model could not be evaluated (not found, or no safetensors
  weights: :mod:`stylemerge.availability`); the detail says which and why.

Every row is read from the other tables' frames (:mod:`stylemerge.tables`), so each number
and interval is computed once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

AGREES, OPPOSITE, NOT_SIGNIFICANT, NOT_MEASURED, UNAVAILABLE = (
    "agrees",
    "opposite",
    "not significant",
    "not measured",
    "unavailable",
)
COLUMNS = [
    "claim",
    "model",
    "card",
    "ours",
    "ci_low",
    "ci_high",
    "unit",
    "n",
    "interval",
    "verdict",
    "detail",
]


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def verdict(
    card_sign: float | None,
    value: float | None,
    low: float | None,
    high: float | None,
    significant: bool | None = None,
) -> str:
    """The verdict on one claim: ``card_sign`` is the card's figure (or just its sign),
    ``value`` ours with its interval ``[low, high]``; ``significant`` overrides the interval's
    test (a McNemar test) where given."""
    value, low, high = _number(value), _number(low), _number(high)
    if value is None or low is None or high is None or _number(card_sign) is None:
        return NOT_MEASURED
    if significant is None:
        significant = low > 0 or high < 0
    if not significant or value == 0:
        return NOT_SIGNIFICANT
    return AGREES if (value > 0) == (card_sign > 0) else OPPOSITE


def _row(claim, model, card, unit, interval, found: Mapping | None, **fields) -> dict:
    """One claim: ``found`` holds ``ours``, ``ci_low``, ``ci_high``, ``n`` (and ``detail``,
    ``significant``) or is None when the claim was not measured."""
    found = dict(found or {})
    ours, low, high = (_number(found.get(k)) for k in ("ours", "ci_low", "ci_high"))
    sign = fields.pop("sign", card)
    detail = found.get("detail") or ""
    if found and ours is not None and (low is None or high is None):
        detail = detail or "no interval (no per-document values: rerun the evaluation)"
    return {
        "claim": claim,
        "model": model,
        "card": card,
        "ours": ours,
        "ci_low": low,
        "ci_high": high,
        "unit": unit,
        "n": found.get("n"),
        "interval": interval,
        "verdict": verdict(sign, ours, low, high, found.get("significant")),
        "detail": detail if found else "not in this run",
    }


def _lookup(frame: pd.DataFrame, **keys) -> Mapping | None:
    if frame is None or frame.empty or any(k not in frame for k in keys):
        return None
    match = frame
    for key, value in keys.items():
        match = match[match[key] == value]
    if match.empty:
        return None
    return {k: (None if pd.isna(v) else v) for k, v in match.iloc[0].items()}


def _int(value) -> int | None:
    return None if _number(value) is None else int(value)


def card_table(
    frames: Mapping[str, pd.DataFrame],
    reported: Mapping,
    chosen: str | None,
    comparison: str | None = None,
    comparison_unavailable: str | None = None,
    ci: float = 0.95,
) -> pd.DataFrame:
    """One row per claim of the card (``reported``: :func:`stylemerge.tables.reported`), ours
    the ``chosen`` merge's, read from the ``lambada``, ``diversity``, ``gsm8k_think`` and
    ``think`` frames.  ``comparison_unavailable``: why the comparison model was not
    evaluated, if it was not (its claim's verdict is then ``unavailable``)."""
    model = chosen or "-"
    rows = []
    lambada = _lookup(frames.get("lambada"), model=chosen) if chosen else None

    def lambada_found(prefix: str, column: str) -> dict | None:
        if lambada is None or lambada.get(column) is None:
            return None
        return {
            "ours": lambada[column],
            "ci_low": lambada.get(f"{prefix}_ci_low_pct"),
            "ci_high": lambada.get(f"{prefix}_ci_high_pct"),
            "n": _int(lambada.get("passages")),
        }

    rows.append(
        _row(
            "lambada perplexity vs base",
            model,
            reported["lambada_perplexity_change_vs_base"],
            "%",
            "paired bootstrap over passages",
            lambada_found("vs_base", "ppl_change_vs_base_pct"),
        )
    )
    rows.append(
        _row(
            f"lambada perplexity vs {comparison or 'the comparison model'}",
            model,
            reported["lambada_perplexity_change_vs_comparison"],
            "%",
            "paired bootstrap over passages",
            lambada_found("vs_comparison", "ppl_change_vs_comparison_pct") if comparison else None,
        )
    )
    if not comparison:
        rows[-1]["detail"] = "no comparison model in this run (evaluate.comparison)"
    elif comparison_unavailable:
        rows[-1].update(
            ours=None,
            verdict=UNAVAILABLE,
            detail=f"comparison model {comparison} unavailable: {comparison_unavailable}",
        )
    diversity = frames.get("diversity")
    for domain, card in reported["distinct_1_change_vs_base"].items():
        found = _lookup(diversity, model=chosen, domain=domain) if chosen else None
        rows.append(
            _row(
                f"distinct-1 vs base, {domain}",
                model,
                card,
                "%",
                "paired jackknife over prompts",
                found
                and {
                    "ours": found.get("distinct_1_change_vs_base_pct"),
                    "ci_low": found.get("change_ci_low_pct"),
                    "ci_high": found.get("change_ci_high_pct"),
                    "n": _int(found.get("prompts")),
                },
            )
        )
    for domain in reported["distinct_1_change_vs_base"]:
        found = _lookup(diversity, model=chosen, domain=domain) if chosen else None
        rows.append(
            _row(
                f"pairwise diversity (1 - self-BLEU) vs base, {domain}",
                model,
                None,
                "%",
                "paired bootstrap over prompts",
                found
                and {
                    "ours": found.get("self_diversity_change_vs_base_pct"),
                    "ci_low": found.get("self_diversity_change_ci_low_pct"),
                    "ci_high": found.get("self_diversity_change_ci_high_pct"),
                    "n": _int(found.get("prompts")),
                    "detail": "the card claims more diverse sampling, without a figure",
                },
                sign=1.0,
            )
        )
    gsm = reported["gsm8k_3shot_accuracy"]
    found = _lookup(frames.get("gsm8k_think"), model=chosen) if chosen else None
    if found is not None and found.get("change_points") is not None:
        p = found.get("mcnemar_p")
        counts = f"{_int(found.get('correct_original'))}/{_int(found.get('problems'))}"
        counts += f" -> {_int(found.get('correct_optimised'))}/{_int(found.get('problems'))}"
        found = {
            "ours": found["change_points"],
            "ci_low": found.get("change_ci_low"),
            "ci_high": found.get("change_ci_high"),
            "n": _int(found.get("problems")),
            "significant": None if p is None else p < 1 - ci,
            "detail": f"{counts}; exact McNemar p = {p:.3g}"
            if p is not None
            else f"{counts}; no per-problem values: no paired test (rerun the evaluation)",
        }
    else:
        found = None
    rows.append(
        _row(
            f"gsm8k 3-shot accuracy, original -> optimised think tokens "
            f"({gsm['original']} -> {gsm['optimised']} %)",
            f"{model} -> think_{model}",
            round(gsm["optimised"] - gsm["original"], 6),
            "points",
            "paired bootstrap over problems; verdict: exact McNemar",
            found,
        )
    )
    found = _lookup(frames.get("think"), model=chosen) if chosen else None
    rows.append(
        _row(
            "think tokens: held-out cross-entropy",
            model,
            reported["think_heldout_ce_change"],
            "%",
            "paired bootstrap over held-out traces",
            found
            and {
                "ours": found.get("ce_change_pct"),
                "ci_low": found.get("ce_change_ci_low_pct"),
                "ci_high": found.get("ce_change_ci_high_pct"),
                "n": _int(found.get("heldout_traces")),
            },
        )
    )
    return pd.DataFrame(rows, columns=COLUMNS)
