"""The card table (``tables/card.md``, first of the tables): one row per claim of the model
card, with the card's figure, ours, its 95 % interval, n, the p-value of "no change" (raw
and Holm-adjusted) and a verdict.

The card's claims are one pre-registered family (``family`` in ``reported.yaml``): with
seven or eight claims at 5 % each, about one run in three would call at least one of them
"agrees" or "opposite" by chance, so each verdict reads the Holm-adjusted p-value
(:func:`stylemerge.stats.intervals.holm`).  Verdicts (:func:`verdict`):

- ``agrees``: the adjusted p-value is below ``alpha`` and ours has the card's sign;
- ``opposite``: the adjusted p-value is below ``alpha`` and ours has the other sign;
- ``not significant``: not below ``alpha``, and the run could have detected the card's
  figure (its minimum detectable effect, at ``power``, is no larger): evidence against a
  change of the card's size;
- ``uninformative``: not below ``alpha``, and the run could not have told: a floor or ceiling
  (gsm8k: both models at 0 % or both at 100 %), or a minimum detectable effect larger than the
  card's figure;
- ``not comparable``: measured differently from the card (the think rows' held-out
  cross-entropy when the run added the ``<think>`` tokens itself: new, untrained rows, not
  the card's Qwen3 rows; lambada perplexity on in-domain text, when the run has no
  out-of-domain lambada row: the card's ``lambada_openai`` is book text no adapter trained
  on); no test;
- ``not measured``: no value or no interval (no comparison model, a domain not in the run, a
  result from before per-document values were recorded);
- ``unavailable``: the comparison model could not be evaluated (not found, or no safetensors
  weights: :mod:`stylemerge.models.availability`); the detail says which and why.

``card_in_interval`` says whether the card's own figure lies inside our interval.  Every row
is read from the other tables' frames (:mod:`stylemerge.report.tables`, read by
:mod:`stylemerge.report.measured`), so each number and interval is computed once; a frame
without a p-value column gets the p-value its interval implies (normal approximation).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

import pandas as pd

from stylemerge.models.availability import UNAVAILABLE
from stylemerge.report.measured import (
    diversity_measured,
    gsm8k_measured,
    lambada_measured,
    lambada_row,
    lookup,
    think_measured,
)
from stylemerge.stats.intervals import finite, holm, z_value

AGREES, OPPOSITE, NOT_SIGNIFICANT, NOT_MEASURED = (
    "agrees",
    "opposite",
    "not significant",
    "not measured",
)
UNINFORMATIVE, NOT_COMPARABLE = "uninformative", "not comparable"
COLUMNS = [
    "claim",
    "model",
    "card",
    "ours",
    "ci_low",
    "ci_high",
    "unit",
    "n",
    "seeds",
    "interval",
    "p",
    "p_holm",
    "card_in_interval",
    "verdict",
    "detail",
]
# What each verdict means, in one sentence each (the model card quotes it).
VERDICTS = (
    "Verdicts read the p-value Holm-adjusted over the card's claims (one family). "
    "**agrees**: below 0.05, ours with the card's sign; **opposite**: below 0.05, the other "
    "sign; **not significant**: not below, and the run could have detected the card's figure "
    "(80 % power); **uninformative**: not below, and it could not (a floor, or too wide an "
    "interval); **not comparable**: measured differently from the card; **not measured**: "
    "not in this run."
)
# the family's settings when reported.yaml has none (an older copy)
DEFAULT_FAMILY = {"alpha": 0.05, "power": 0.8}


def verdict(
    card_sign: float | None,
    value: float | None,
    low: float | None,
    high: float | None,
    significant: bool | None = None,
    informative: bool = True,
    comparable: bool = True,
) -> str:
    """The verdict on one claim: ``card_sign`` is the card's figure (or just its sign),
    ``value`` ours with its interval ``[low, high]``; ``significant`` (the family-adjusted
    test) overrides the interval's own test where given; ``informative``: whether the run
    could have detected the card's figure; ``comparable``: whether ours measures what the
    card's does."""
    value, low, high = finite(value), finite(low), finite(high)
    if value is None or low is None or high is None or finite(card_sign) is None:
        return NOT_MEASURED
    if not comparable:
        return NOT_COMPARABLE
    if significant is None:
        significant = low > 0 or high < 0
    if not significant or value == 0:
        return NOT_SIGNIFICANT if informative else UNINFORMATIVE
    return AGREES if (value > 0) == (card_sign > 0) else OPPOSITE


def implied_p_value(value, low, high, ci: float = 0.95) -> float | None:
    """The two-sided p-value of 0 that an interval implies (normal approximation: its
    half-width is ``z * se``)."""
    value, low, high = finite(value), finite(low), finite(high)
    if value is None or low is None or high is None:
        return None
    se = (high - low) / (2 * z_value(ci))
    if se <= 0:
        return 1.0 if value == 0 else 0.0
    return min(1.0, 2 * statistics.NormalDist().cdf(-abs(value) / se))


def minimum_detectable(low, high, alpha: float, power: float, ci: float = 0.95) -> float | None:
    """The smallest true change the run detects with probability ``power`` at level
    ``alpha``: ``(z_{1-alpha/2} + z_power) * se``, ``se`` from the interval's half-width."""
    low, high = finite(low), finite(high)
    if low is None or high is None:
        return None
    se = (high - low) / (2 * z_value(ci))
    return (z_value(1 - alpha) + statistics.NormalDist().inv_cdf(power)) * se


def _row(claim, model, card, unit, interval, found: Mapping | None, **fields) -> dict:
    """One claim: ``found`` holds ``ours``, ``ci_low``, ``ci_high``, ``n`` (and ``detail``,
    ``p``, ``floor``, ``comparable``: :mod:`stylemerge.report.measured`) or is None when the
    claim was not measured.  The verdict is set by :func:`_judge`, once the family's p-values
    are adjusted."""
    found = dict(found or {})
    ours, low, high = (finite(found.get(k)) for k in ("ours", "ci_low", "ci_high"))
    detail = found.get("detail") or ""
    if found and ours is not None and (low is None or high is None):
        detail = detail or "no interval (no per-document values: rerun the evaluation)"
    p = finite(found.get("p"))
    if p is None:
        p = implied_p_value(ours, low, high)
    seeds = _seeds(found.get("seed_columns"))
    if seeds and seeds[1]:
        detail = f"{detail}; {seeds[1]}" if detail else seeds[1]
    inside = None
    if finite(card) is not None and low is not None and high is not None:
        inside = "inside" if low <= card <= high else "outside"
    return {
        "claim": claim,
        "model": model,
        "card": card,
        "ours": ours,
        "ci_low": low,
        "ci_high": high,
        "unit": unit,
        "n": found.get("n"),
        "seeds": seeds[0] if seeds else (1 if found else None),
        "interval": interval,
        "p": p,
        "p_holm": None,
        "card_in_interval": inside,
        "verdict": None,
        "detail": detail if found else "not in this run",
        # read by _judge, then dropped
        "_sign": fields.get("sign", card),
        "_floor": found.get("floor"),
        "_comparable": found.get("comparable", True),
        "_key": fields["key"],
    }


def _seeds(columns: Mapping | None) -> tuple[int, str] | None:
    """(seeds, what they say) from a pooled frame's ``seeds``, ``seed_estimates``,
    ``seeds_same_sign`` and ``seed_sd``; None for a single seed's frame."""
    if not columns or finite(columns.get("seeds")) is None:
        return None
    k = int(columns["seeds"])
    if k < 2:
        return k, ""
    same, sd = columns.get("seeds_same_sign"), finite(columns.get("seed_sd"))
    text = f"seeds {columns.get('seed_estimates')}"
    if same is not None:
        text += f"; {int(same)} of {k} with the pooled sign"
    if sd is not None:
        text += f"; between-seed SD {sd:.3g}"
    return k, text


def _judge(rows: list[dict], family: Mapping) -> None:
    """Holm-adjust the p-values of the family's claims and set every row's verdict."""
    alpha = family.get("alpha", DEFAULT_FAMILY["alpha"])
    power = family.get("power", DEFAULT_FAMILY["power"])
    members = set(family.get("claims") or [r["_key"] for r in rows])
    tested = [
        i
        for i, r in enumerate(rows)
        if r["_key"] in members
        and r["_comparable"]
        and r["p"] is not None
        and r["ours"] is not None
        and not r.get("_unavailable")
    ]
    for i, adjusted in zip(tested, holm([rows[i]["p"] for i in tested]), strict=True):
        rows[i]["p_holm"] = adjusted
    for row in rows:
        if row.get("_unavailable"):
            row["verdict"], row["p"] = UNAVAILABLE, None
            continue
        significant = None if row["p_holm"] is None else row["p_holm"] < alpha
        if row["_key"] not in members and row["p"] is not None:
            significant = row["p"] < alpha  # outside the family: unadjusted
        detectable = minimum_detectable(row["ci_low"], row["ci_high"], alpha, power)
        card = finite(row["card"])
        if detectable == 0 and not row["_floor"]:  # e.g. no discordant problem at all
            row["_floor"] = "no variation between the two (a zero-width interval)"
        informative = not row["_floor"] and not (
            card is not None and detectable is not None and detectable > abs(card)
        )
        row["verdict"] = verdict(
            row["_sign"],
            row["ours"],
            row["ci_low"],
            row["ci_high"],
            significant,
            informative=informative,
            comparable=row["_comparable"],
        )
        if row["verdict"] == UNINFORMATIVE:
            why = (
                row["_floor"]
                if row["_floor"]
                else f"the smallest change this run detects ({detectable:.3g} {row['unit']} at "
                f"{power:.0%} power) is larger than the card's"
            )
            row["detail"] = f"{row['detail']}; {why}" if row["detail"] else why
    for row in rows:
        for key in [k for k in row if k.startswith("_")]:
            del row[key]


def card_table(
    frames: Mapping[str, pd.DataFrame],
    reported: Mapping,
    chosen: str | None,
    comparison: str | None = None,
    comparison_unavailable: str | None = None,
    ci: float = 0.95,
) -> pd.DataFrame:
    """One row per claim of the card (``reported``: :func:`stylemerge.report.values.reported`), ours
    the ``chosen`` merge's, read from the ``lambada``, ``diversity``, ``gsm8k_think`` and
    ``think`` frames, verdicts Holm-adjusted over ``reported["family"]``.
    ``comparison_unavailable``: why the comparison model was not evaluated, if it was not
    (its claim's verdict is then ``unavailable``)."""
    # the card's claims in its order; judged together, as one family, once all are read
    rows = _lambada_claims(
        frames.get("lambada"), reported, chosen, comparison, comparison_unavailable
    )
    rows += _diversity_claims(frames.get("diversity"), reported, chosen)
    rows.append(_gsm8k_claim(frames.get("gsm8k_think"), reported, chosen))
    rows.append(_think_claim(frames.get("think"), reported, chosen))
    _judge(rows, reported.get("family") or DEFAULT_FAMILY)
    return pd.DataFrame(rows, columns=COLUMNS)


def _lambada_claims(
    frame: pd.DataFrame | None,
    reported: Mapping,
    chosen: str | None,
    comparison: str | None,
    comparison_unavailable: str | None,
) -> list[dict]:
    """The lambada perplexity claims, vs the base and vs the comparison model: the latter
    not measured without a comparison model, unavailable where it could not be evaluated."""
    model = chosen or "-"
    lambada = lambada_row(frame, chosen) if chosen else None
    over_documents = "paired bootstrap over documents"
    vs_base = _row(
        "lambada perplexity vs base",
        model,
        reported["lambada_perplexity_change_vs_base"],
        "%",
        over_documents,
        lambada_measured(lambada, "vs_base", "ppl_change_vs_base_pct"),
        key="lambada_vs_base",
    )
    vs_comparison = _row(
        f"lambada perplexity vs {comparison or 'the comparison model'}",
        model,
        reported["lambada_perplexity_change_vs_comparison"],
        "%",
        over_documents,
        lambada_measured(lambada, "vs_comparison", "ppl_change_vs_comparison_pct")
        if comparison
        else None,
        key="lambada_vs_comparison",
    )
    if not comparison:
        vs_comparison["detail"] = "no comparison model in this run (evaluate.comparison)"
    elif comparison_unavailable:
        vs_comparison.update(
            ours=None, detail=f"comparison model {comparison} unavailable: {comparison_unavailable}"
        )
        vs_comparison["_unavailable"] = True
    return [vs_base, vs_comparison]


def _diversity_claims(
    frame: pd.DataFrame | None, reported: Mapping, chosen: str | None
) -> list[dict]:
    """Per domain of the card, distinct-1 vs the base (the card's figures); then per domain,
    pairwise diversity vs the base (the card claims its direction, with no figure)."""
    model = chosen or "-"
    domains = reported["distinct_1_change_vs_base"]
    rows = []
    for domain, card in domains.items():
        found = lookup(frame, model=chosen, domain=domain) if chosen else None
        rows.append(
            _row(
                f"distinct-1 vs base, {domain}",
                model,
                card,
                "%",
                "paired jackknife over documents, length-controlled",
                found
                and diversity_measured(
                    found, "distinct_1_change_vs_base_pct", "change", seeds="distinct_"
                ),
                key=f"distinct_1/{domain}",
            )
        )
    for domain in domains:
        found = lookup(frame, model=chosen, domain=domain) if chosen else None
        rows.append(
            _row(
                f"pairwise diversity (1 - self-BLEU) vs base, {domain}",
                model,
                None,
                "%",
                "paired bootstrap over documents, length-controlled",
                found
                and diversity_measured(
                    found,
                    "self_diversity_change_vs_base_pct",
                    "self_diversity_change",
                    "the card claims more diverse sampling, without a figure",
                    seeds="pairwise_",
                ),
                sign=1.0,
                key=f"pairwise/{domain}",
            )
        )
    return rows


def _gsm8k_claim(frame: pd.DataFrame | None, reported: Mapping, chosen: str | None) -> dict:
    """gsm8k 3-shot accuracy, original -> optimised think rows: the change in points."""
    model = chosen or "-"
    gsm = reported["gsm8k_3shot_accuracy"]
    found = gsm8k_measured(lookup(frame, model=chosen) if chosen else None)
    return _row(
        f"gsm8k 3-shot accuracy, original -> optimised think tokens "
        f"({gsm['original']} -> {gsm['optimised']} %)",
        f"{model} -> think_{model}",
        round(gsm["optimised"] - gsm["original"], 6),
        "points",
        "paired bootstrap over problems; test: exact McNemar",
        found,
        key="gsm8k",
    )


def _think_claim(frame: pd.DataFrame | None, reported: Mapping, chosen: str | None) -> dict:
    """The think rows' held-out cross-entropy change."""
    found = lookup(frame, model=chosen) if chosen else None
    return _row(
        "think tokens: held-out cross-entropy",
        chosen or "-",
        reported["think_heldout_ce_change"],
        "%",
        "paired bootstrap over held-out traces",
        found and think_measured(found),
        key="think_ce",
    )
