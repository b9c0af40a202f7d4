"""The paper tables: pandas frames from the runs' metrics, written as CSV, Markdown and LaTeX.

Every table is built from result JSONs alone (no model is loaded), so it can be rebuilt and
tested cheaply; figures reported on the model card stand beside the reproduced ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from stylemerge.core.files import read_json
from stylemerge.evaluate.task_data import LAMBADA_TEXTS
from stylemerge.report.values import pct_change, percent, reported
from stylemerge.stats import intervals, per_document

log = logging.getLogger(__name__)


def adapters_table(adapters: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per domain: held-out style reward and fluency before -> after GRPO (mean ± se), the
    paired change in standard errors, and whether it cleared 2 se without fluency falling."""
    rows = []
    for domain, metrics in sorted(adapters.items()):
        style = metrics["heldout"]["style_contrast"]
        fluency = metrics["heldout"]["fluency_logprob"]
        z = style["change"]["mean"] / style["change"]["se"] if style["change"]["se"] else None
        rows.append(
            {
                "domain": domain,
                "style_before": style["before"]["mean"],
                "style_after": style["after"]["mean"],
                "style_change": style["change"]["mean"],
                "style_change_se": style["change"]["se"],
                "style_change_z": z,
                "fluency_before": fluency["before"]["mean"],
                "fluency_after": fluency["after"]["mean"],
                "fluency_change": fluency["change"]["mean"],
                "fluency_change_se": fluency["change"]["se"],
                "improved_2se": bool(z is not None and z > 2),
                # standard errors over documents (results from before they were recorded:
                # over prompts, n then counting prompts)
                "prompts": metrics.get("heldout_prompts", style["change"]["n"]),
                "documents": style["change"]["n"] if "values" in style["change"] else None,
                "steps": metrics["steps"],
            }
        )
    return pd.DataFrame(rows)


def merges_table(merges: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per merge: mean next-token entropy and held-out loss of the merge, its inputs and the
    base; the entropy change vs the inputs' mean; the calibration, if any."""
    rows = []
    for name, metrics in sorted(merges.items()):
        entropy = metrics["entropy"]
        losses = [v["loss"] for v in entropy["inputs"].values()]
        calibration = metrics.get("calibration") or {}
        final = calibration.get("after", entropy["merged"])
        rows.append(
            {
                "merge": name,
                "method": metrics["method"],
                "space": metrics["space"],
                "entropy_inputs_mean": entropy["inputs_mean"],
                "entropy_base": entropy["base"]["entropy"],
                "entropy_merged": entropy["merged"]["entropy"],
                "entropy_change_vs_inputs_pct": pct_change(
                    entropy["merged"]["entropy"], entropy["inputs_mean"]
                ),
                "loss_inputs_mean": sum(losses) / len(losses),
                "loss_base": entropy["base"]["loss"],
                "loss_merged": entropy["merged"]["loss"],
                "logit_scale": calibration.get("logit_scale"),
                "entropy_calibrated": final["entropy"] if calibration else None,
                "loss_calibrated": final["loss"] if calibration else None,
            }
        )
    return pd.DataFrame(rows)


def think_table(think: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per model: held-out cross-entropy on the traces before -> after optimising the think
    rows (overall and at the tags), the change with a paired bootstrap interval over traces,
    and the card's figure beside it."""
    card = reported()["think_heldout_ce_change"]
    rows = []
    for model, metrics in sorted(think.items()):
        before, after = metrics["heldout_ce_before"], metrics["heldout_ce_after"]
        change = per_document.think_ce_change(metrics, f"think/{model}") or {}
        rows.append(
            {
                "model": model,
                "ce_before": before["overall"],
                "ce_after": after["overall"],
                "ce_change_pct": pct_change(after["overall"], before["overall"]),
                "ce_change_ci_low_pct": change.get("ci_low"),
                "ce_change_ci_high_pct": change.get("ci_high"),
                "ce_change_p": change.get("p_value"),
                "heldout_traces": metrics.get("heldout_traces"),
                # the run added <think>/</think> (SmolLM2): new rows, not comparable to the card
                "tags_added": bool(metrics.get("think_tokens_added")),
                "ce_change_pct_reported": card,
                "tag_ce_before": before["think_tags"],
                "tag_ce_after": after["think_tags"],
                "steps": metrics["steps"],
                "other_params_max_change": metrics["frozen_max_abs_change_overall"],
            }
        )
    return pd.DataFrame(rows)


# lm-eval task names: the harness's own (paper scale) first, then the packaged mirrors.
GSM8K_PROMPTS = {"think tags": ("stylemerge_gsm8k_think", "stylemerge_gsm8k"), "stock": ("gsm8k",)}
BPB_TASKS = ("uncheatable_eval_{domain}", "stylemerge_bpb_{domain}")


def task_metric(result: Mapping, tasks, metric: str, filter_: str = "none") -> float | None:
    """A metric from an lm_eval.json: the first of ``tasks`` that ran."""
    found = per_document.task_entry(result, tasks)
    return None if found is None else found[1]["metrics"].get(metric, {}).get(filter_)


def lambada_table(evals: Mapping[str, Mapping], comparison: str | None = None) -> pd.DataFrame:
    """Per text (``text``: out-of-domain, the card's ``lambada_openai`` claim, then in-domain,
    :data:`stylemerge.evaluate.task_data.LAMBADA_TEXTS`) and model: lambada perplexity and accuracy,
    % change vs the base and vs the comparison model (paired, the same passages), with the
    card's figures beside them; a text no model ran has no rows.  Intervals are bootstraps
    over the documents the passages were cut from (``documents``), not over the passages."""
    card = reported()
    rows = []
    for text, tasks in LAMBADA_TEXTS.items():
        lls = {  # each model's per-passage log-likelihoods (None, with a warning, if missing)
            model: per_document.values(result, tasks, "perplexity", model=model)
            for model, result in evals.items()
            if task_metric(result, tasks, "perplexity") is not None
        }
        if not lls:
            continue
        base = task_metric(evals.get("base", {}), tasks, "perplexity")
        other = task_metric(evals.get(comparison, {}), tasks, "perplexity") if comparison else None
        base_lls, other_lls = lls.get("base"), lls.get(comparison)
        for model, result in evals.items():
            ppl = task_metric(result, tasks, "perplexity")
            own = lls.get(model)
            ppl_ci = per_document.perplexity(own) or {}
            vs_base = per_document.perplexity_change(base_lls, own) or {}
            vs_other = per_document.perplexity_change(other_lls, own) or {}
            rows.append(
                {
                    "model": model,
                    "text": text,
                    "perplexity": ppl,
                    "perplexity_ci_low": ppl_ci.get("ci_low"),
                    "perplexity_ci_high": ppl_ci.get("ci_high"),
                    "acc": task_metric(result, tasks, "acc"),
                    "passages": _documents(result, tasks),
                    "documents": ppl_ci.get("n"),
                    "ppl_change_vs_base_pct": pct_change(ppl, base),
                    "vs_base_ci_low_pct": vs_base.get("ci_low"),
                    "vs_base_ci_high_pct": vs_base.get("ci_high"),
                    "vs_base_p": vs_base.get("p_value"),
                    "ppl_change_vs_comparison_pct": pct_change(ppl, other),
                    "vs_comparison_ci_low_pct": vs_other.get("ci_low"),
                    "vs_comparison_ci_high_pct": vs_other.get("ci_high"),
                    "vs_comparison_p": vs_other.get("p_value"),
                    "reported_vs_base_pct": card["lambada_perplexity_change_vs_base"],
                    "reported_vs_comparison_pct": card["lambada_perplexity_change_vs_comparison"],
                }
            )
    return pd.DataFrame(rows)


def _documents(result: Mapping, tasks) -> int | None:
    """How many documents the first of ``tasks`` that ran scored."""
    found = per_document.task_entry(result, tasks)
    return ((found[1].get("n_samples") or {}).get("effective") if found else None) or None


def _accuracy(result: Mapping, model: str, tasks) -> tuple[dict | None, dict | None]:
    """gsm8k strict-match per-problem values and the Wilson interval of the accuracy (from
    the values, or else from the accuracy and the number of problems)."""
    correct = per_document.values(result, tasks, "exact_match", "strict-match", model)
    if correct is not None:
        return correct, per_document.accuracy(correct)
    value = task_metric(result, tasks, "exact_match", "strict-match")
    n = _documents(result, tasks)
    if value is None or not n:
        return None, None
    return None, intervals.wilson(int(round(value * n)), n)


def gsm8k_table(evals: Mapping[str, Mapping], think_pairs: Mapping[str, str]) -> pd.DataFrame:
    """3-shot gsm8k accuracy, original vs optimised think rows, per pair ``{original: think
    model}`` and task run (think-tagged exemplars first, the card's claim, then stock gsm8k):
    Wilson intervals, change in points (paired bootstrap interval), exact McNemar test."""
    card = reported()["gsm8k_3shot_accuracy"]
    rows = []
    pairs = [(o, t, p, ts) for o, t in think_pairs.items() for p, ts in GSM8K_PROMPTS.items()]
    for original, optimised, prompt, tasks in pairs:
        ran = [per_document.task_entry(evals.get(m, {}), tasks) for m in (original, optimised)]
        ran = next((found[0] for found in ran if found), None)
        if ran is None and prompt != "think tags":
            continue  # the think-tags row stays, empty where none ran: the card's claim
        before = task_metric(evals.get(original, {}), tasks, "exact_match", "strict-match")
        after = task_metric(evals.get(optimised, {}), tasks, "exact_match", "strict-match")
        values_b, wilson_b = _accuracy(evals.get(original, {}), original, tasks)
        values_a, wilson_a = _accuracy(evals.get(optimised, {}), optimised, tasks)
        change = per_document.accuracy_change(values_b, values_a) or {}
        test = change.get("mcnemar") or {}
        rows.append(
            {
                "model": original,
                "task": ran,
                "problems": (wilson_b or {}).get("n"),
                "correct_original": (wilson_b or {}).get("successes"),
                "correct_optimised": (wilson_a or {}).get("successes"),
                "accuracy_original": None if before is None else 100 * before,
                "original_ci_low": percent((wilson_b or {}).get("ci_low")),
                "original_ci_high": percent((wilson_b or {}).get("ci_high")),
                "accuracy_optimised": None if after is None else 100 * after,
                "optimised_ci_low": percent((wilson_a or {}).get("ci_low")),
                "optimised_ci_high": percent((wilson_a or {}).get("ci_high")),
                "change_points": None if None in (before, after) else 100 * (after - before),
                "change_ci_low": change.get("ci_low"),
                "change_ci_high": change.get("ci_high"),
                "mcnemar_b": test.get("b"),
                "mcnemar_c": test.get("c"),
                "mcnemar_p": test.get("p_value"),
                "reported_original": card["original"],
                "reported_optimised": card["optimised"],
            }
        )
    return pd.DataFrame(rows)


def bpb_table(evals: Mapping[str, Mapping], domains: list[str]) -> pd.DataFrame:
    """Bits per byte per model (rows) and domain (columns), Uncheatable-Eval style, each with
    a bootstrap interval over the domain's held-out documents (``<domain>_ci_low``,
    ``<domain>_ci_high``)."""
    rows = []
    for model, result in evals.items():
        row = {"model": model}
        for domain in domains:
            tasks = [t.format(domain=domain) for t in BPB_TASKS]
            row[domain] = task_metric(result, tasks, "bits_per_byte")
            pairs = None
            if row[domain] is not None:
                pairs = per_document.values(result, tasks, "bits_per_byte", model=model)
            ci = per_document.bits_per_byte(pairs) or {}
            row[f"{domain}_ci_low"], row[f"{domain}_ci_high"] = ci.get("ci_low"), ci.get("ci_high")
        rows.append(row)
    columns = [c for d in domains for c in (d, f"{d}_ci_low", f"{d}_ci_high")]
    return pd.DataFrame(rows, columns=["model", *columns])


def diversity_table(diversity_dirs: Mapping[str, str | Path]) -> pd.DataFrame:
    """Per domain and model: distinct-1, EAD-1 and self-diversity with their intervals, and
    the changes vs the base on the same prompts: distinct-1 (paired delete-one-document
    jackknife) and self-diversity, 1 - pairwise BLEU (paired bootstrap over documents), each
    raw and length-controlled (``_lc``: both models' samples cut to a common length,
    :func:`stylemerge.evaluate.diversity.scores.common_length`), with the samples' change of length
    beside them and the card's figures.  ``diversity_dirs``: {model:
    results/eval/<model>/diversity}."""
    from stylemerge.evaluate.diversity.bleu import self_diversity_per_prompt
    from stylemerge.evaluate.diversity.measure import read_generations

    card = reported()["distinct_1_change_vs_base"]
    metrics = {m: read_json(Path(p) / "metrics.json") for m, p in diversity_dirs.items()}
    generations = {
        m: read_generations(Path(p) / "generations.jsonl") for m, p in diversity_dirs.items()
    }
    base = generations.get("base")
    # the base's per-prompt self-diversity, once per domain rather than once per model
    base_self = {
        domain: self_diversity_per_prompt(d["samples"]) for domain, d in (base or {}).items()
    }
    rows = []
    for model, result in metrics.items():
        for domain, values in sorted(result["domains"].items()):
            changes = _changes_vs_base(base, generations[model], domain, base_self)
            rows.append(_diversity_row(domain, model, values, changes, card))
    return pd.DataFrame(rows)


def _changes_vs_base(
    base: Mapping | None, own: Mapping, domain: str, base_self: Mapping
) -> dict[str, dict]:
    """A model's changes vs the base in ``domain`` (``own``, ``base``: each one's generations
    by domain), keyed ``distinct``, ``pairwise``, ``distinct_lc`` and ``pairwise_lc``; none
    unless both sampled the same prompts."""
    from stylemerge.evaluate.diversity.scores import distinct_change, self_diversity_change

    changes: dict[str, dict] = {}
    paired = (
        base is not None
        and domain in base
        and domain in own
        and base[domain]["prompts"] == own[domain]["prompts"]
    )
    if not paired:
        return changes
    a, b = base[domain], own[domain]
    for suffix, controlled in (("", False), ("_lc", True)):
        changes["distinct" + suffix] = distinct_change(
            a["samples"],
            b["samples"],
            n=1,
            documents=a["documents"],
            length_controlled=controlled,
        )
        changes["pairwise" + suffix] = self_diversity_change(
            a["samples"],
            b["samples"],
            seed=per_document.SEED,
            n_boot=per_document.ITERS,
            # cut to a common length per pair, the base's samples lose their cached values
            base_values=None if controlled else base_self[domain],
            documents=a["documents"],
            length_controlled=controlled,
        )
    return changes


def _diversity_row(
    domain: str, model: str, values: Mapping, changes: Mapping, card: Mapping
) -> dict:
    """One row of the diversity table: the model's own values in ``domain``, its changes vs
    the base (:func:`_changes_vs_base`), raw then length-controlled, and the card's figure."""
    row = {
        "domain": domain,
        "model": model,
        "distinct_1": values["distinct_1"]["value"],
        "distinct_1_ci_low": values["distinct_1"]["ci_low"],
        "distinct_1_ci_high": values["distinct_1"]["ci_high"],
        "ead_1": values["ead_1"]["value"],
        "self_diversity": values["self_diversity"]["value"],
        "self_diversity_ci_low": values["self_diversity"]["ci_low"],
        "self_diversity_ci_high": values["self_diversity"]["ci_high"],
        "mean_tokens": values.get("mean_ngram_tokens"),
        "length_change_vs_base_pct": percent(changes.get("distinct_lc", {}).get("length_change")),
    }
    for suffix in ("", "_lc"):
        change = changes.get("distinct" + suffix, {})
        pairwise = changes.get("pairwise" + suffix, {})
        row.update(
            {
                f"distinct_1_change_vs_base_pct{suffix}": percent(change.get("value")),
                f"change_ci_low_pct{suffix}": percent(change.get("ci_low")),
                f"change_ci_high_pct{suffix}": percent(change.get("ci_high")),
                f"change_p{suffix}": change.get("p_value"),
                f"self_diversity_change_vs_base_pct{suffix}": percent(pairwise.get("value")),
                f"self_diversity_change_ci_low_pct{suffix}": percent(pairwise.get("ci_low")),
                f"self_diversity_change_ci_high_pct{suffix}": percent(pairwise.get("ci_high")),
                f"self_diversity_change_p{suffix}": pairwise.get("p_value"),
            }
        )
    row.update(
        {
            "reported_change_pct": card.get(domain),
            "prompts": values["distinct_1"].get("n_prompts"),
            "documents": values["distinct_1"].get("n_documents"),
        }
    )
    return row
