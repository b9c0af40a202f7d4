"""The card's figures pooled over replicates (seeds): one run is one draw of the recipe.

With ``replicates`` every stage from GRPO on ran once per seed, on the same held-out
documents.  For each figure the card reads, :func:`pooled_frames` gives the pooled effect,
its interval and p-value, each seed's own estimate, how many seeds agree in sign with the
pooled one and the between-seed SD, in the columns the card table reads
(:func:`stylemerge.report.claims.card_table`):

- lambada perplexity change, gsm8k accuracy change, think held-out CE change and
  self-diversity change are means (or ratios of sums) over passages, problems, traces or
  prompts: the rows of every seed together, with a bootstrap that draws seeds and documents
  (:func:`stylemerge.stats.intervals.hierarchical_bootstrap`): as crossed factors, independently,
  where every seed scored the same documents (lambada's passages and the diversity prompts
  come from the shared held-out shards), so that a document counts once and not once per
  seed; nested, documents within each drawn seed, where each seed drew its own (the
  arithmetic problems of gsm8k and the think traces are generated with the seed);
- distinct-1 is not a mean over prompts (a bootstrap draw of a document twice adds tokens but
  no types): the pooled change is the mean of the seeds' changes, its variance the
  between-seed variance over k seeds plus the delete-one-document jackknife variance of the
  pooled mean (the documents are the same in every seed), with Student t quantiles on k - 1
  degrees of freedom.

gsm8k's pooled test is the bootstrap's (McNemar's needs independent pairs; one problem in k
seeds is not k of them).  With the MARA ablation, its table is pooled the same way and
judged by its own family (:func:`pooled_ablation`).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stylemerge.core.files import read_json, write_json
from stylemerge.evaluate.task_data import LAMBADA_TEXTS
from stylemerge.models.availability import available_results
from stylemerge.models.names import MARA_ARM
from stylemerge.report.claims import card_table
from stylemerge.stats import intervals, per_document

log = logging.getLogger(__name__)

ITERS, SEED, CI = per_document.ITERS, per_document.SEED, per_document.CI


def seed_summary(pooled: float | None, per_seed: Mapping[int, float | None]) -> dict:
    """``seeds``, the seeds' estimates as text, the between-seed SD and how many seeds have
    the pooled estimate's sign."""
    values = {s: v for s, v in per_seed.items() if v is not None and math.isfinite(v)}
    same = (
        sum(1 for v in values.values() if pooled is not None and (v > 0) == (pooled > 0))
        if pooled is not None
        else None
    )
    return {
        "seeds": len(per_seed),
        "seed_estimates": "; ".join(f"{s}: {v:+.3g}" for s, v in values.items()),
        "seed_sd": statistics.stdev(values.values()) if len(values) > 1 else None,
        "seeds_same_sign": same,
    }


def _values(evals_by_seed, model, tasks, metric, filter_="none"):
    return per_document.pool(
        {
            seed: per_document.values(evals.get(model, {}), tasks, metric, filter_, model)
            if model in evals
            else None
            for seed, evals in evals_by_seed.items()
        }
    )


def _per_seed(pooled: Mapping, function, *others) -> dict[int, float | None]:
    """``function`` of each seed's rows alone (point value only)."""
    estimates = {}
    for seed in dict.fromkeys(pooled["seed"]):
        rows = [i for i, s in enumerate(pooled["seed"]) if s == seed]

        def part(v, rows=rows, seed=seed):
            return {
                **{k: [v[k][i] for i in rows] for k in ("doc_id", "document", "values")},
                "seed": None,
                "data": v["data"],
            }

        result = function(part(pooled), *(part(o) for o in others), iters=0)  # the point
        estimates[seed] = (result or {}).get("value")
    return estimates


def pooled_lambada(
    evals_by_seed: Mapping[int, Mapping], model: str, comparison: str | None
) -> list[dict]:
    """The lambada rows of ``model``, one per text any seed scored it on (``text``:
    out-of-domain, then in-domain): perplexity change vs the base and vs ``comparison``."""
    rows = []
    for text, tasks in LAMBADA_TEXTS.items():
        own = _values(evals_by_seed, model, tasks, "perplexity")
        if own is None:
            continue
        row: dict = {"model": model, "text": text}
        for prefix, other in (("vs_base", "base"), ("vs_comparison", comparison)):
            ref = _values(evals_by_seed, other, tasks, "perplexity") if other else None
            change = per_document.perplexity_change(ref, own) if ref else None
            seeds = (
                _per_seed(ref, lambda r, o, **kw: per_document.perplexity_change(r, o, **kw), own)
                if change
                else {}
            )
            value = (change or {}).get("value")
            row.update(
                {
                    f"ppl_change_{prefix}_pct": value,
                    f"{prefix}_ci_low_pct": (change or {}).get("ci_low"),
                    f"{prefix}_ci_high_pct": (change or {}).get("ci_high"),
                    f"{prefix}_p": (change or {}).get("p_value"),
                    **{f"{prefix}_{k}": v for k, v in seed_summary(value, seeds).items()},
                }
            )
        rows.append(
            {
                **row,
                "passages": len(own["values"]),
                "documents": len(set(own["document"])),  # the same in every seed
                "seeds": len(set(own["seed"])),
            }
        )
    return rows or [{"model": model}]


def pooled_gsm8k(evals_by_seed: Mapping[int, Mapping], original: str, optimised: str) -> dict:
    """The gsm8k row of the think-token pair: the accuracy change in points, pooled."""
    tasks = ("stylemerge_gsm8k_think", "stylemerge_gsm8k")
    before = _values(evals_by_seed, original, tasks, "exact_match", "strict-match")
    after = _values(evals_by_seed, optimised, tasks, "exact_match", "strict-match")
    change = per_document.accuracy_change(before, after) if before and after else None
    if not change:
        return {"model": original}
    seeds = _per_seed(before, lambda b, a, **kw: per_document.accuracy_change(b, a, **kw), after)
    return {
        "model": original,
        "problems": len(before["values"]),
        "correct_original": int(round(sum(before["values"]))),
        "correct_optimised": int(round(sum(after["values"]))),
        "change_points": change["value"],
        "change_ci_low": change["ci_low"],
        "change_ci_high": change["ci_high"],
        "change_p": change["p_value"],
        **seed_summary(change["value"], seeds),
    }


def _ce_change(w, nb, tb, na, ta):
    before = (w * nb).sum(axis=-1) / (w * tb).sum(axis=-1)
    return 100.0 * ((w * na).sum(axis=-1) / (w * ta).sum(axis=-1) / before - 1)


def pooled_think(think_by_seed: Mapping[int, Mapping], model: str) -> dict:
    """The think row of ``model``: held-out CE change over every seed's traces."""
    columns: list[list[float]] = [[], [], [], []]
    seeds, traces, per_seed = [], [], {}
    tags_added = False
    for seed, think in think_by_seed.items():
        metrics = think.get(model)
        before = ((metrics or {}).get("heldout_ce_before") or {}).get("per_document")
        after = ((metrics or {}).get("heldout_ce_after") or {}).get("per_document")
        if not before or not after:
            return {"model": model}
        tags_added |= bool(metrics.get("think_tokens_added"))
        rows = (before["nats"], before["tokens"], after["nats"], after["tokens"])
        for column, values in zip(columns, rows, strict=True):
            column.extend(values)
        seeds.extend([seed] * len(before["nats"]))
        traces.extend(range(len(before["nats"])))
        ones = np.ones(len(before["nats"]))
        per_seed[seed] = float(_ce_change(ones, *(np.asarray(r, dtype=float) for r in rows)))
    levels = [seeds, traces] if len(per_seed) > 1 else [traces]
    change = intervals.hierarchical_bootstrap(
        _ce_change, *columns, levels=levels, iters=ITERS, ci=CI, seed=SEED
    )
    return {
        "model": model,
        "ce_change_pct": change["value"],
        "ce_change_ci_low_pct": change["ci_low"],
        "ce_change_ci_high_pct": change["ci_high"],
        "ce_change_p": change["p_value"],
        "heldout_traces": len(seeds),
        "tags_added": tags_added,
        **seed_summary(change["value"], per_seed),
    }


def pooled_distinct(pairs: Mapping[int, tuple], ci: float = CI) -> dict:
    """Length-controlled distinct-1 change (in percent), pooled over seeds: ``pairs[seed]`` is
    (base samples, other samples, documents) of one domain (see the module's docstring)."""
    from stylemerge.evaluate.diversity.ngrams import distinct_from_counts, leave_one_prompt_out
    from stylemerge.evaluate.diversity.scores import common_length

    estimates, without = {}, {}
    for seed, (base, other, documents) in pairs.items():
        cut_b, cut_o, _ = common_length(base, other)
        (ub, tb), loo_b = leave_one_prompt_out(cut_b, 1, documents)
        (uo, to), loo_o = leave_one_prompt_out(cut_o, 1, documents)

        def change(ub, tb, uo, to):
            before = distinct_from_counts(ub, tb)
            return 100 * (distinct_from_counts(uo, to) / before - 1) if before else math.nan

        estimates[seed] = change(ub, tb, uo, to)
        order = list(dict.fromkeys(documents))
        without[seed] = dict(
            zip(order, (change(*b, *o) for b, o in zip(loo_b, loo_o, strict=True)), strict=True)
        )
    k = len(estimates)
    pooled = statistics.fmean(estimates.values())
    documents = sorted(set.intersection(*(set(w) for w in without.values())))
    n = len(documents)
    variance = 0.0
    if n >= 2:  # delete one document from every seed at once
        loo = [statistics.fmean(without[s][d] for s in without) for d in documents]
        centre = statistics.fmean(loo)
        variance += (n - 1) / n * math.fsum((x - centre) ** 2 for x in loo)
    if k >= 2:
        variance += statistics.variance(estimates.values()) / k
    df = (k - 1) if k >= 2 else (n - 1)
    low = high = p = None
    if df >= 1 and variance > 0 and math.isfinite(pooled):
        se = math.sqrt(variance)
        q = intervals.t_value(ci, df)
        low, high = pooled - q * se, pooled + q * se
        p = min(1.0, 2 * intervals.t_cdf(-abs(pooled) / se, df))
    return {
        "value": pooled,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "n_documents": n,
        **seed_summary(pooled, estimates),
    }


def _ratio_change(w, base, other):
    return 100 * ((w * other).sum(axis=-1) / (w * base).sum(axis=-1) - 1)


def pooled_self_diversity(pairs: Mapping[int, tuple], same_prompts: bool) -> dict:
    """Length-controlled self-diversity change (in percent), pooled: every seed's prompts,
    seeds and documents resampled as crossed factors where every seed sampled from the same
    prompts (``same_prompts``: prompts are cut from the shared held-out shards without a
    seed), nested otherwise."""
    from stylemerge.evaluate.diversity.bleu import self_diversity_per_prompt
    from stylemerge.evaluate.diversity.scores import _cut_texts, common_length

    base_values, other_values, seeds, documents, per_seed = [], [], [], [], {}
    for seed, (base, other, docs) in pairs.items():
        cut_b, cut_o, _ = common_length(base, other)
        b = self_diversity_per_prompt(_cut_texts(cut_b))
        o = self_diversity_per_prompt(_cut_texts(cut_o))
        keep = [i for i in range(len(b)) if math.isfinite(b[i]) and math.isfinite(o[i])]
        base_values += [b[i] for i in keep]
        other_values += [o[i] for i in keep]
        seeds += [seed] * len(keep)
        documents += [docs[i] for i in keep]
        ones = np.ones(len(keep))
        per_seed[seed] = float(
            _ratio_change(ones, np.array([b[i] for i in keep]), np.array([o[i] for i in keep]))
        )
    levels = [seeds, documents] if len(pairs) > 1 else [documents]
    result = intervals.hierarchical_bootstrap(
        _ratio_change,
        base_values,
        other_values,
        levels=levels,
        iters=ITERS,
        ci=CI,
        seed=SEED,
        crossed=len(pairs) > 1 and same_prompts,
    )
    return {**result, **seed_summary(result["value"], per_seed)}


def pooled_diversity(generations_by_seed: Mapping[int, Mapping], model: str) -> list[dict]:
    """Diversity rows of ``model`` per domain: the length-controlled changes vs the base."""
    rows = []
    first = next(iter(generations_by_seed.values()))
    for domain in sorted(first.get(model, {})):
        pairs = {}
        for seed, generations in generations_by_seed.items():
            base, other = generations.get("base", {}), generations.get(model, {})
            if domain not in base or domain not in other:
                break
            if base[domain]["prompts"] != other[domain]["prompts"]:
                break
            pairs[seed] = (
                base[domain]["samples"],
                other[domain]["samples"],
                base[domain]["documents"],
            )
        if len(pairs) != len(generations_by_seed):
            continue
        prompts = [g["base"][domain]["prompts"] for g in generations_by_seed.values()]
        same = all(p == prompts[0] for p in prompts)
        distinct, pairwise = pooled_distinct(pairs), pooled_self_diversity(pairs, same)
        rows.append(
            {
                "domain": domain,
                "model": model,
                "distinct_1_change_vs_base_pct_lc": distinct["value"],
                "change_ci_low_pct_lc": distinct["ci_low"],
                "change_ci_high_pct_lc": distinct["ci_high"],
                "change_p_lc": distinct["p_value"],
                "self_diversity_change_vs_base_pct_lc": pairwise["value"],
                "self_diversity_change_ci_low_pct_lc": pairwise["ci_low"],
                "self_diversity_change_ci_high_pct_lc": pairwise["ci_high"],
                "self_diversity_change_p_lc": pairwise["p_value"],
                "documents": distinct["n_documents"],
                **{f"distinct_{k}": v for k, v in distinct.items() if k.startswith("seed")},
                **{f"pairwise_{k}": v for k, v in pairwise.items() if k.startswith("seed")},
                "seeds": distinct["seeds"],
            }
        )
    return rows


def pooled_frames(
    evals_by_seed: Mapping[int, Mapping],
    generations_by_seed: Mapping[int, Mapping],
    think_by_seed: Mapping[int, Mapping],
    chosen: str,
    comparison: str | None,
) -> dict[str, pd.DataFrame]:
    """The frames the card reads (``lambada``, ``diversity``, ``gsm8k_think``, ``think``), for
    the ``chosen`` merge, pooled over the seeds."""
    return {
        "lambada": pd.DataFrame(pooled_lambada(evals_by_seed, chosen, comparison)),
        "diversity": pd.DataFrame(pooled_diversity(generations_by_seed, chosen)),
        "gsm8k_think": pd.DataFrame([pooled_gsm8k(evals_by_seed, chosen, f"think_{chosen}")]),
        "think": pd.DataFrame([pooled_think(think_by_seed, chosen)]),
    }


def pooled_ablation(
    adapters_by_seed: Mapping[int, Mapping],
    generations_by_seed: Mapping[int, Mapping],
    chosen: str | None,
    family: Mapping | None = None,
) -> pd.DataFrame:
    """The MARA ablation pooled over seeds, judged by its own family
    (:func:`stylemerge.report.ablation.judge_family`; ``family`` default: ``reported.yaml``'s).
    Per domain model: distinct-1, MARA vs plain, length-controlled (pooled as the card's
    distinct-1: :func:`pooled_distinct`); the style and fluency changes, MARA − plain, over
    seeds and documents (:func:`stylemerge.report.ablation.pooled_change_difference`); plain GRPO's
    style change, the seeds' mean, which the non-inferiority margin is a share of.  The
    chosen merge's distinct-1 rows follow, secondary.  ``adapters_by_seed``: seed ->
    {<domain> or <domain>-mara: metrics.json}; ``generations_by_seed``: seed -> model ->
    :func:`stylemerge.evaluate.diversity.measure.read_generations`."""
    from stylemerge.report.ablation import ARM, ci_text, judge_family, pooled_change_difference
    from stylemerge.report.values import reported

    first = next(iter(adapters_by_seed.values()))
    domains = sorted(d for d in first if not d.endswith(ARM) and d + ARM in first)
    units = [("domain model", f"domain_{d}", [d]) for d in domains]
    if chosen:
        generated = next(iter(generations_by_seed.values())).get(chosen, {})
        units.append((f"merge {chosen}", chosen, sorted(generated)))
    rows = []
    for unit, plain_model, unit_domains in units:
        for domain in unit_domains:
            pairs = {}
            for seed, generations in generations_by_seed.items():
                plain = generations.get(plain_model, {}).get(domain)
                mara = generations.get(plain_model + ARM, {}).get(domain)
                if plain is None or mara is None or plain["prompts"] != mara["prompts"]:
                    break
                pairs[seed] = (plain["samples"], mara["samples"], plain["documents"])
            if len(pairs) != len(generations_by_seed):
                continue
            distinct = pooled_distinct(pairs)
            row = {
                "unit": unit,
                "domain": domain,
                "documents": distinct["n_documents"],
                "seeds": distinct["seeds"],
                "distinct_1_mara_vs_plain_pct": distinct["value"],
                "distinct_1_mara_vs_plain_ci": ci_text(distinct, 1.0),
                "distinct_1_mara_vs_plain_p": distinct["p_value"],
                "distinct_1_seed_estimates": distinct["seed_estimates"],
                "distinct_1_seeds_same_sign": distinct["seeds_same_sign"],
            }
            if unit == "domain model":
                arms = {s: (a[domain], a[domain + ARM]) for s, a in adapters_by_seed.items()}
                row["style_change_plain"] = statistics.fmean(
                    plain["heldout"]["style_contrast"]["change"]["mean"]
                    for plain, _ in arms.values()
                )
                for component, name in (
                    ("style_contrast", "style"),
                    ("fluency_logprob", "fluency"),
                ):
                    diff = pooled_change_difference(arms, component) or {}
                    row[f"{name}_mara_minus_plain"] = diff.get("value")
                    row[f"{name}_mara_minus_plain_ci"] = ci_text(diff, 1.0)
                    if component == "style_contrast":
                        row["_style_low"] = diff.get("ci_low")
            rows.append(row)
    return pd.DataFrame(judge_family(rows, family or reported()["ablation_family"]))


def _by_replicate(paths: Sequence[str | Path], roots: Mapping[int, str]) -> dict[int, list]:
    """Each path under the replicate whose root is its longest prefix."""
    grouped: dict[int, list] = {seed: [] for seed in roots}
    for path in map(str, paths):
        seed = max(
            (s for s, root in roots.items() if path.startswith(root.rstrip("/") + "/")),
            key=lambda s: len(roots[s]),
        )
        grouped[seed].append(path)
    return grouped


def pool_replicates(
    roots: Mapping[int, str],
    lm_eval: Sequence[str | Path],
    diversity: Sequence[str | Path],
    think: Sequence[str | Path],
    chosen: str,
    comparison: str | None,
    out_dir: str | Path,
    provenance: Mapping | None = None,
    adapters: Sequence[str | Path] = (),
) -> dict[str, pd.DataFrame]:
    """Write ``out_dir``: the card pooled over the seeds (``roots``: seed -> its results
    directory) and the frames it reads, as CSV, Markdown and LaTeX; with the MARA ablation's
    arms among ``adapters`` (results/<replicate>adapters/<domain><arm>), the ablation pooled
    (:func:`pooled_ablation`)."""
    from stylemerge.evaluate.diversity.measure import read_generations
    from stylemerge.report.values import load_dirs, reported, write_table

    lm_eval, diversity, think = (_by_replicate(x, roots) for x in (lm_eval, diversity, think))
    adapters = _by_replicate(adapters, roots)
    evals, generations, thinks, unavailable = {}, {}, {}, {}
    for seed in roots:
        evals[seed], dirs, unavailable = available_results(lm_eval[seed], diversity[seed])
        generations[seed] = {m: read_generations(p / "generations.jsonl") for m, p in dirs.items()}
        thinks[seed] = {Path(p).name: read_json(Path(p) / "metrics.json") for p in think[seed]}
    frames = pooled_frames(evals, generations, thinks, chosen, comparison)
    card = card_table(frames, reported(), chosen, comparison, unavailable.get(comparison))
    out_dir = Path(out_dir)
    seeds = ", ".join(map(str, roots))
    write_table(
        card,
        out_dir / "card",
        f"The model card's claims pooled over seeds {seeds}: intervals over seeds, then "
        "documents; each seed's estimate in the tables beside it",
    )
    arms = {seed: load_dirs(paths) for seed, paths in adapters.items()}
    if any(name.endswith(MARA_ARM) for seed_arms in arms.values() for name in seed_arms):
        frames["ablation_mara"] = pooled_ablation(arms, generations, chosen)
    for name, frame in frames.items():
        write_table(frame, out_dir / name, f"{name}, pooled over seeds {seeds}")
    write_json(out_dir / "provenance.json", {"seeds": list(roots), **(provenance or {})})
    log.info("pooled %d seeds: %s", len(roots), seeds)
    return {"card": card, **frames}
