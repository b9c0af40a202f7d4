"""The MARA ablation table: each domain model and the chosen merge trained without and with
MARA (arms "" and "-mara", see ``ARMS`` in workflow/rules/common.smk), side by side.

Both arms of a domain are scored on the same held-out prompts with the same seed (the GRPO
job's held-out evaluation, and measure_diversity's prompts), so every MARA-vs-plain figure
is a paired comparison, its interval over the held-out documents the prompts (passages)
were cut from:

- diversity: distinct-1 and self-diversity change vs the base for each arm, and MARA vs plain
  directly, length-controlled, with the samples' change of length beside it (delete-one-
  document jackknife / paired bootstrap over documents,
  :mod:`stylemerge.evaluate.diversity.scores`);
- held-out style reward and fluency (the GRPO job's ``heldout_per_prompt``): each arm's change
  from before training, and the difference of the changes, MARA − plain, with a paired
  bootstrap over documents;
- lambada perplexity of the two merges, MARA vs plain (paired bootstrap over documents).

The question the table answers (issue: MARA against mode collapse): does MARA lose less
diversity vs the base, at no more than a stated cost in style reward?  The answer is the
ablation's own pre-registered family (``ablation_family`` in ``reported.yaml``,
:func:`judge_family`): the domain models' distinct-1 tests, Holm-adjusted (the merge's rows
are secondary, unadjusted), and a style non-inferiority margin: MARA must keep at least
``retain`` of plain GRPO's style gain.  ``criterion`` says, per row, whether both held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from stylemerge.evaluate.task_data import LAMBADA_TASKS, lambada_text
from stylemerge.models.names import MARA_ARM
from stylemerge.report.claims import NOT_MEASURED, NOT_SIGNIFICANT
from stylemerge.report.values import format_interval, percent, reported
from stylemerge.stats import intervals, per_document

ARM = MARA_ARM


def _mean_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (b - a).mean(axis=-1)


def _weighted_mean_diff(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (w * (b - a)).sum(axis=-1) / w.sum(axis=-1)


def _changes(metrics: Mapping, component: str) -> list[float]:
    per_prompt = metrics["heldout_per_prompt"]
    before, after = per_prompt["before"][component], per_prompt["after"][component]
    return [a - b for b, a in zip(before, after, strict=True)]


def change_difference(plain: Mapping, mara: Mapping, component: str) -> dict | None:
    """(after − before) of the MARA arm minus that of the plain arm, per held-out prompt,
    mean with a paired bootstrap interval over the documents the prompts were cut from
    (over prompts for results from before those were recorded); None without per-prompt
    values (older results)."""
    if "heldout_per_prompt" not in plain or "heldout_per_prompt" not in mara:
        return None
    documents = plain.get("heldout_documents")
    if documents is not None and documents == mara.get("heldout_documents"):
        return pooled_change_difference({0: (plain, mara)}, component)
    pairs = [
        (p, m)
        for p, m in zip(_changes(plain, component), _changes(mara, component), strict=True)
        if math.isfinite(p) and math.isfinite(m)
    ]
    return intervals.paired_bootstrap(
        _mean_diff,
        [p for p, _ in pairs],
        [m for _, m in pairs],
        per_document.ITERS,
        per_document.CI,
        per_document.SEED,
    )


def pooled_change_difference(arms: Mapping[int, tuple[Mapping, Mapping]], component: str):
    """:func:`change_difference` over seeds (``arms``: seed -> (plain, mara) metrics): every
    seed's prompts, seeds and documents resampled as crossed factors where every seed held
    out the same prompts (they are cut from the shared held-out shards), nested otherwise;
    with one seed, over documents.  None where a seed lacks per-prompt values or
    documents."""
    plain_values, mara_values, seeds, documents = [], [], [], []
    for seed, (plain, mara) in arms.items():
        docs = plain.get("heldout_documents")
        if "heldout_per_prompt" not in plain or "heldout_per_prompt" not in mara:
            return None
        if docs is None or docs != mara.get("heldout_documents"):
            return None
        for p, m, d in zip(
            _changes(plain, component), _changes(mara, component), docs, strict=True
        ):
            if math.isfinite(p) and math.isfinite(m):
                plain_values.append(p)
                mara_values.append(m)
                seeds.append(seed)
                documents.append(d)
    several = len(arms) > 1
    held_out = [plain.get("heldout_documents") for plain, _ in arms.values()]
    return intervals.hierarchical_bootstrap(
        _weighted_mean_diff,
        plain_values,
        mara_values,
        levels=[seeds, documents] if several else [documents],
        iters=per_document.ITERS,
        ci=per_document.CI,
        seed=per_document.SEED,
        crossed=several and all(h == held_out[0] for h in held_out),
    )


def verdict(result: Mapping | None, positive: str, negative: str) -> str:
    """A paired comparison's verdict in the claims' words, with the comparison's own names
    for its two directions."""
    side = intervals.excludes_zero(result)
    if side is None:
        return NOT_MEASURED
    if not side:
        return NOT_SIGNIFICANT
    return positive if result["value"] > 0 else negative


def _diversity_rows(
    unit: str, plain: str, mara: str, generations: Mapping, diversity: pd.DataFrame
) -> list[dict]:
    """Per domain: both arms' distinct-1 change vs the base (read from the diversity table,
    computed once there) and MARA vs plain (paired over the same prompts)."""
    from stylemerge.evaluate.diversity.scores import distinct_change, self_diversity_change

    rows = []
    for domain in sorted(set(generations.get(plain, {})) & set(generations.get(mara, {}))):
        a, b = generations[plain][domain], generations[mara][domain]
        if a["prompts"] != b["prompts"]:
            continue
        row = {
            "unit": unit,
            "domain": domain,
            "prompts": len(a["prompts"]),
            "documents": len(set(a["documents"])),
        }
        for arm, model in (("plain", plain), ("mara", mara)):
            vs_base = _vs_base(diversity, domain, model)
            row[f"distinct_1_vs_base_pct_{arm}"] = vs_base["value"]
            row[f"distinct_1_vs_base_ci_{arm}"] = ci_text(vs_base, 1.0)
        # length-controlled (MARA's anchors could change the samples' length) and over the
        # documents the prompts were cut from
        d1 = distinct_change(
            a["samples"], b["samples"], n=1, documents=a["documents"], length_controlled=True
        )
        sd = self_diversity_change(
            a["samples"],
            b["samples"],
            seed=per_document.SEED,
            n_boot=per_document.ITERS,
            documents=a["documents"],
            length_controlled=True,
        )
        row.update(
            {
                "length_mara_vs_plain_pct": percent(d1["length_change"]),
                "distinct_1_mara_vs_plain_pct": percent(d1["value"]),
                "distinct_1_mara_vs_plain_ci": ci_text(d1),
                "distinct_1_mara_vs_plain_p": d1.get("p_value"),
                "self_diversity_mara_vs_plain_pct": percent(sd["value"]),
                "self_diversity_mara_vs_plain_ci": ci_text(sd),
            }
        )
        rows.append(row)
    return rows


def _vs_base(diversity: pd.DataFrame, domain: str, model: str) -> dict:
    """A model's distinct-1 change vs the base on a domain, in percent, from the diversity
    table (:func:`stylemerge.report.tables.diversity_table`)."""
    match = diversity[(diversity["domain"] == domain) & (diversity["model"] == model)]
    columns = {
        "value": "distinct_1_change_vs_base_pct",
        "ci_low": "change_ci_low_pct",
        "ci_high": "change_ci_high_pct",
    }
    if match.empty:
        return dict.fromkeys(columns)
    row = match.iloc[0]
    return {k: None if pd.isna(row[c]) else float(row[c]) for k, c in columns.items()}


def ci_text(result: Mapping | None, scale: float = 100.0) -> str | None:
    if not result or result.get("ci_low") is None or result.get("ci_high") is None:
        return None
    return format_interval(scale * result["ci_low"], scale * result["ci_high"])


def mara_ablation_table(
    adapters: Mapping[str, Mapping],
    diversity_dirs: Mapping[str, str | Path],
    diversity: pd.DataFrame,
    evals: Mapping[str, Mapping],
    chosen: str | None,
    family: Mapping | None = None,
) -> pd.DataFrame:
    """One row per domain model (and per domain of the chosen merge): the plain arm against
    the MARA arm.  ``adapters``: {<domain> or <domain>-mara: metrics.json}; diversity
    directories and lm-eval results keyed by evaluated model name (domain_<d>,
    domain_<d>-mara, <chosen>, <chosen>-mara, base); ``diversity``: the diversity table of
    those directories (:func:`stylemerge.report.tables.diversity_table`); ``family``: the
    ablation's (default ``reported.yaml``'s ``ablation_family``: :func:`judge_family`)."""
    from stylemerge.evaluate.diversity.measure import read_generations

    generations = {
        m: read_generations(Path(p) / "generations.jsonl") for m, p in diversity_dirs.items()
    }
    rows = []
    for domain in sorted(d for d in adapters if not d.endswith(ARM) and d + ARM in adapters):
        plain, mara = adapters[domain], adapters[domain + ARM]
        arm_rows = _diversity_rows(
            "domain model", f"domain_{domain}", f"domain_{domain}{ARM}", generations, diversity
        )
        row = next((r for r in arm_rows if r["domain"] == domain), None) or {
            "unit": "domain model",
            "domain": domain,
        }
        # MARA compares sequence sums: completions cut at the cap are in the open
        for arm, metrics in (("plain", plain), ("mara", mara)):
            completions = metrics.get("completions") or {}
            row[f"completion_length_{arm}"] = completions.get("mean_length")
            row[f"clipped_ratio_{arm}"] = completions.get("clipped_ratio")
        for component, name in (("style_contrast", "style"), ("fluency_logprob", "fluency")):
            for arm, metrics in (("plain", plain), ("mara", mara)):
                change = metrics["heldout"][component]["change"]
                row[f"{name}_change_{arm}"] = change["mean"]
                row[f"{name}_change_se_{arm}"] = change["se"]
            diff = change_difference(plain, mara, component)
            row[f"{name}_mara_minus_plain"] = (diff or {}).get("value")
            row[f"{name}_mara_minus_plain_ci"] = ci_text(diff, 1.0)
            if component == "style_contrast":
                row["style_verdict"] = verdict(
                    diff, "MARA gains style", "MARA costs style"
                ).replace(NOT_SIGNIFICANT, "no significant cost")
                row["_style_low"] = (diff or {}).get("ci_low")
        rows.append(row)
    if chosen is not None and chosen + ARM in generations:
        merge_rows = _diversity_rows(
            f"merge {chosen}", chosen, chosen + ARM, generations, diversity
        )
        if chosen in evals and chosen + ARM in evals:

            def lls(model):
                return per_document.values(evals[model], LAMBADA_TASKS, "perplexity", model=model)

            lambada = per_document.perplexity_change(lls(chosen), lls(chosen + ARM))
            ran = per_document.task_entry(evals[chosen], LAMBADA_TASKS)
            for row in merge_rows:
                row["lambada_text"] = lambada_text(ran[0]) if ran else None
                row["lambada_ppl_mara_vs_plain_pct"] = (lambada or {}).get("value")
                row["lambada_ppl_mara_vs_plain_ci"] = ci_text(lambada, 1.0)
        rows.extend(merge_rows)
    return pd.DataFrame(judge_family(rows, family or reported()["ablation_family"]))


KEEPS_MORE, KEEPS_LESS = "MARA keeps more", "MARA keeps less"


def judge_family(rows: list[dict], family: Mapping) -> list[dict]:
    """The ablation's verdicts (``family``: ``alpha``, ``retain``; see ``reported.yaml``):
    ``diversity_verdict`` from the distinct-1 p-value, Holm-adjusted over the domain models'
    rows (``family`` primary) and unadjusted on the merge's (secondary); ``style_margin``
    (−(1 − retain) × plain GRPO's style change) and ``style_noninferior`` (the lower bound
    of MARA − plain's style change above it); ``criterion``: whether MARA met both."""
    alpha, retain = family["alpha"], family["retain"]
    primary = [i for i, r in enumerate(rows) if r["unit"] == "domain model"]
    adjusted = intervals.holm([rows[i].get("distinct_1_mara_vs_plain_p") for i in primary])
    for i, p_holm in zip(primary, adjusted, strict=True):
        rows[i]["distinct_1_mara_vs_plain_p_holm"] = p_holm
    for i, row in enumerate(rows):
        row["family"] = "primary" if i in primary else "secondary"
        p = row.get(
            "distinct_1_mara_vs_plain_p_holm" if i in primary else "distinct_1_mara_vs_plain_p"
        )
        value = row.get("distinct_1_mara_vs_plain_pct")
        if p is None or value is None:
            row["diversity_verdict"] = NOT_MEASURED
        elif p < alpha and value != 0:
            row["diversity_verdict"] = KEEPS_MORE if value > 0 else KEEPS_LESS
        else:
            row["diversity_verdict"] = NOT_SIGNIFICANT
        low, plain = row.pop("_style_low", None), row.get("style_change_plain")
        noninferior = None
        if plain is not None and plain > 0 and low is not None:
            row["style_margin"] = -(1 - retain) * plain
            noninferior = bool(low > row["style_margin"])
        row["style_noninferior"] = noninferior
        row["criterion"] = _criterion(row["diversity_verdict"], noninferior, plain, i in primary)
    return rows


def _criterion(diversity: str, noninferior: bool | None, plain_style, primary: bool) -> str:
    if not primary:
        return "secondary (a merge of the domain models: not in the family)"
    if diversity == NOT_MEASURED:
        return "not assessable: no distinct-1 test"
    if noninferior is None:
        return (
            "not assessable: plain GRPO gained no style (no margin)"
            if plain_style is not None and plain_style <= 0
            else "not assessable: no style interval"
        )
    failed = [
        *([] if diversity == KEEPS_MORE else [f"distinct-1: {diversity}"]),
        *([] if noninferior else ["style below the non-inferiority margin"]),
    ]
    return "met" if not failed else "not met (" + "; ".join(failed) + ")"
