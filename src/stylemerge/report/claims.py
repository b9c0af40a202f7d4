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
is read from the other tables' frames (:mod:`stylemerge.report.tables`), so each number and interval
is computed once; a frame without a p-value column gets the p-value its interval implies
(normal approximation).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

import pandas as pd

from stylemerge.evaluate.task_data import IN_DOMAIN, OUT_OF_DOMAIN
from stylemerge.stats.intervals import holm, z_value

AGREES, OPPOSITE, NOT_SIGNIFICANT, NOT_MEASURED, UNAVAILABLE = (
    "agrees",
    "opposite",
    "not significant",
    "not measured",
    "unavailable",
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


def finite_number(value) -> float | None:
    """``value`` (a number, or a CSV cell's text) as a float; None when missing, not a
    number, or not finite."""
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
    informative: bool = True,
    comparable: bool = True,
) -> str:
    """The verdict on one claim: ``card_sign`` is the card's figure (or just its sign),
    ``value`` ours with its interval ``[low, high]``; ``significant`` (the family-adjusted
    test) overrides the interval's own test where given; ``informative``: whether the run
    could have detected the card's figure; ``comparable``: whether ours measures what the
    card's does."""
    value, low, high = finite_number(value), finite_number(low), finite_number(high)
    if value is None or low is None or high is None or finite_number(card_sign) is None:
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
    value, low, high = finite_number(value), finite_number(low), finite_number(high)
    if value is None or low is None or high is None:
        return None
    se = (high - low) / (2 * z_value(ci))
    if se <= 0:
        return 1.0 if value == 0 else 0.0
    return min(1.0, 2 * statistics.NormalDist().cdf(-abs(value) / se))


def minimum_detectable(low, high, alpha: float, power: float, ci: float = 0.95) -> float | None:
    """The smallest true change the run detects with probability ``power`` at level
    ``alpha``: ``(z_{1-alpha/2} + z_power) * se``, ``se`` from the interval's half-width."""
    low, high = finite_number(low), finite_number(high)
    if low is None or high is None:
        return None
    se = (high - low) / (2 * z_value(ci))
    return (z_value(1 - alpha) + statistics.NormalDist().inv_cdf(power)) * se


def _row(claim, model, card, unit, interval, found: Mapping | None, **fields) -> dict:
    """One claim: ``found`` holds ``ours``, ``ci_low``, ``ci_high``, ``n`` (and ``detail``,
    ``p``, ``floor``, ``comparable``) or is None when the claim was not
    measured.  The verdict is set by :func:`_judge`, once the family's p-values are
    adjusted."""
    found = dict(found or {})
    ours, low, high = (finite_number(found.get(k)) for k in ("ours", "ci_low", "ci_high"))
    detail = found.get("detail") or ""
    if found and ours is not None and (low is None or high is None):
        detail = detail or "no interval (no per-document values: rerun the evaluation)"
    p = finite_number(found.get("p"))
    if p is None:
        p = implied_p_value(ours, low, high)
    seeds = _seeds(found.get("seed_columns"))
    if seeds and seeds[1]:
        detail = f"{detail}; {seeds[1]}" if detail else seeds[1]
    inside = None
    if finite_number(card) is not None and low is not None and high is not None:
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
    if not columns or finite_number(columns.get("seeds")) is None:
        return None
    k = int(columns["seeds"])
    if k < 2:
        return k, ""
    same, sd = columns.get("seeds_same_sign"), finite_number(columns.get("seed_sd"))
    text = f"seeds {columns.get('seed_estimates')}"
    if same is not None:
        text += f"; {int(same)} of {k} with the pooled sign"
    if sd is not None:
        text += f"; between-seed SD {sd:.3g}"
    return k, text


def _seed_columns(row: Mapping | None, prefix: str = "") -> dict:
    keys = ("seeds", "seed_estimates", "seed_sd", "seeds_same_sign")
    return {k: (row or {}).get(prefix + k) for k in keys}


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
        card = finite_number(row["card"])
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


def _lookup(frame: pd.DataFrame, **keys) -> Mapping | None:
    if frame is None or frame.empty or any(k not in frame for k in keys):
        return None
    match = frame
    for key, value in keys.items():
        match = match[match[key] == value]
    if match.empty:
        return None
    return {k: (None if pd.isna(v) else v) for k, v in match.iloc[0].items()}


def _lambada_row(frame: pd.DataFrame | None, model: str) -> Mapping | None:
    """The lambada row the card's claim reads: the out-of-domain text's, else (a run without
    one) the in-domain text's, which is then not comparable; a table without a ``text``
    column (an older one) has one row per model."""
    if frame is not None and "text" in frame:
        for text in (OUT_OF_DOMAIN, IN_DOMAIN):
            found = _lookup(frame, model=model, text=text)
            measured = ("perplexity", "ppl_change_vs_base_pct")  # a table's, a pooled one's
            if found is not None and any(found.get(k) is not None for k in measured):
                return found
        return None
    return _lookup(frame, model=model)


def _int(value) -> int | None:
    return None if finite_number(value) is None else int(value)


def _pct(value) -> str:
    value = finite_number(value)
    return "n/a" if value is None else f"{value:+.3g} %"


def _interval(low, high) -> str:
    low, high = finite_number(low), finite_number(high)
    return "" if low is None or high is None else f" [{low:+.3g}, {high:+.3g}]"


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
    model = chosen or "-"
    rows = []
    lambada = _lambada_row(frames.get("lambada"), chosen) if chosen else None
    in_domain = bool(lambada) and lambada.get("text") == IN_DOMAIN

    def lambada_found(prefix: str, column: str) -> dict | None:
        if lambada is None or lambada.get(column) is None:
            return None
        passages = (
            f"{_int(lambada.get('passages'))} passages"
            if lambada.get("documents") is not None
            else ""
        )
        return {
            "ours": lambada[column],
            "ci_low": lambada.get(f"{prefix}_ci_low_pct"),
            "ci_high": lambada.get(f"{prefix}_ci_high_pct"),
            "p": lambada.get(f"{prefix}_p"),
            "seed_columns": _seed_columns(lambada, f"{prefix}_"),
            "n": _int(lambada.get("documents") or lambada.get("passages")),
            "comparable": not in_domain,
            "detail": "; ".join(
                x
                for x in (
                    f"{lambada['text']} text" if lambada.get("text") and not in_domain else "",
                    passages,
                    "in-domain text (the domains the adapters trained on), where the card's "
                    "lambada_openai is book text none trained on; this run has no out-of-domain "
                    "row (evaluate.lm_eval.lambada_ood)"
                    if in_domain
                    else "",
                )
                if x
            ),
        }

    over_documents = "paired bootstrap over documents"
    rows.append(
        _row(
            "lambada perplexity vs base",
            model,
            reported["lambada_perplexity_change_vs_base"],
            "%",
            over_documents,
            lambada_found("vs_base", "ppl_change_vs_base_pct"),
            key="lambada_vs_base",
        )
    )
    rows.append(
        _row(
            f"lambada perplexity vs {comparison or 'the comparison model'}",
            model,
            reported["lambada_perplexity_change_vs_comparison"],
            "%",
            over_documents,
            lambada_found("vs_comparison", "ppl_change_vs_comparison_pct") if comparison else None,
            key="lambada_vs_comparison",
        )
    )
    if not comparison:
        rows[-1]["detail"] = "no comparison model in this run (evaluate.comparison)"
    elif comparison_unavailable:
        rows[-1].update(
            ours=None, detail=f"comparison model {comparison} unavailable: {comparison_unavailable}"
        )
        rows[-1]["_unavailable"] = True
    diversity = frames.get("diversity")
    for domain, card in reported["distinct_1_change_vs_base"].items():
        found = _lookup(diversity, model=chosen, domain=domain) if chosen else None
        rows.append(
            _row(
                f"distinct-1 vs base, {domain}",
                model,
                card,
                "%",
                "paired jackknife over documents, length-controlled",
                found
                and _diversity_found(
                    found, "distinct_1_change_vs_base_pct", "change", seeds="distinct_"
                ),
                key=f"distinct_1/{domain}",
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
                "paired bootstrap over documents, length-controlled",
                found
                and _diversity_found(
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
    gsm = reported["gsm8k_3shot_accuracy"]
    found = _lookup(frames.get("gsm8k_think"), model=chosen) if chosen else None
    if found is not None and found.get("change_points") is not None:
        # pooled over seeds: the bootstrap's p (one problem in k seeds is not k pairs)
        pooled_p = found.get("change_p")
        p = pooled_p if pooled_p is not None else found.get("mcnemar_p")
        seed_columns = _seed_columns(found)
        problems = _int(found.get("problems"))
        before, after = _int(found.get("correct_original")), _int(found.get("correct_optimised"))
        counts = f"{before}/{problems} -> {after}/{problems}"
        floor = None
        if problems and before == after and before in (0, problems):
            floor = "floor: no problem solved by either" if before == 0 else "ceiling: all solved"
        found = {
            "ours": found["change_points"],
            "ci_low": found.get("change_ci_low"),
            "ci_high": found.get("change_ci_high"),
            "n": problems,
            "p": p,
            "floor": floor,
            "seed_columns": seed_columns,
            "detail": f"{counts}; "
            + (
                f"bootstrap p = {p:.3g}"
                if pooled_p is not None
                else f"exact McNemar p = {p:.3g}"
                if p is not None
                else "no per-problem values: no paired test (rerun the evaluation)"
            ),
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
            "paired bootstrap over problems; test: exact McNemar",
            found,
            key="gsm8k",
        )
    )
    found = _lookup(frames.get("think"), model=chosen) if chosen else None
    added = bool(found and found.get("tags_added"))
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
                "p": found.get("ce_change_p"),
                "seed_columns": _seed_columns(found),
                "n": _int(found.get("heldout_traces")),
                "comparable": not added,
                "detail": "this run added the <think> tokens (new rows, trained from their "
                "initialisation), where the card's Qwen3 has trained ones"
                if added
                else "",
            },
            key="think_ce",
        )
    )
    _judge(rows, reported.get("family") or DEFAULT_FAMILY)
    return pd.DataFrame(rows, columns=COLUMNS)


def _diversity_found(
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
        "seed_columns": _seed_columns(found, seeds),
        "detail": "; ".join(x for x in (detail, raw) if x),
    }
