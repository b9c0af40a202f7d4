"""Every diversity metric of one domain's samples (:func:`score_samples`), with intervals over
prompts, and the paired changes between two models' samples for the same prompts.

Intervals, at level ``ci`` over prompts (the unit that is sampled): means of per-prompt
values (self, across-prompt, embedding diversity) get a percentile bootstrap over prompts
(:func:`bootstrap_ci`). Distinct-n and EAD are not means of per-prompt values, and a
bootstrap resample biases them downwards (a prompt drawn twice adds n-grams but no new
types, so the resampled values sit below the estimate and the interval can miss it); their
intervals come from the delete-one-prompt jackknife (normal approximation,
:func:`jackknife_ci`). Two models sampled on the same prompts (one tokenizer, one seed)
compare with :func:`distinct_change`, a paired jackknife of the relative change, and
:func:`self_diversity_change`, a paired bootstrap.  Given each prompt's source document
(prompts cut from one document are not independent), both resample documents instead: a
delete-one-document jackknife with Student t quantiles (few documents), a bootstrap over
documents.

Distinct-n falls as samples grow longer (a sample 10 % shorter has a few percent higher
distinct-1 from length alone), so a change of length can pass for a change of diversity.
``length_controlled`` comparisons cut both models' k-th samples of a prompt to the shorter
of the two (:func:`common_length`): both then count the same number of tokens everywhere,
and what is left of the change is not length.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Sequence

import numpy as np

from stylemerge.evaluate.diversity.bleu import (
    BleuIndex,
    across_groups,
    group_indices,
    self_diversity_per_prompt,
    within_groups,
)
from stylemerge.evaluate.diversity.embeddings import (
    Embed,
    embedding_across_prompt_diversity,
    embedding_diversity,
)
from stylemerge.evaluate.diversity.ngrams import (
    distinct_from_counts,
    ead_from_counts,
    leave_one_prompt_out,
    ngram_tokens,
)
from stylemerge.stats import intervals

NGRAM_ORDERS = (1, 2, 3)


# --- intervals over prompts -------------------------------------------------------------------


def _per_prompt(result: dict) -> dict:
    """An :mod:`stylemerge.stats.intervals` result with its count named ``n_prompts``."""
    result = dict(result)
    result["n_prompts"] = result.pop("n")
    for key in ("iters", "seed"):
        result.pop(key, None)
    return result


def bootstrap_ci(
    values: Sequence[float],
    seed: int,
    n_boot: int = 1000,
    alpha: float = 0.05,
    documents: Sequence | None = None,
) -> dict:
    """The mean of per-prompt ``values`` with a percentile bootstrap interval
    (:func:`stylemerge.stats.intervals.bootstrap`: ``n_boot`` resamples of the prompts with
    replacement, numpy ``default_rng(seed)``, interval between the ``alpha/2`` and
    ``1 - alpha/2`` quantiles of the resampled means); given each prompt's source
    ``documents``, of the documents (``n_documents``). NaN values (a prompt without a value)
    are left out. Fewer than two values: no interval."""
    keep = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    clean = [values[i] for i in keep]
    if documents is None:
        return _per_prompt(
            intervals.bootstrap(_mean_last, clean, iters=n_boot, ci=1 - alpha, seed=seed)
        )
    result = intervals.hierarchical_bootstrap(
        _weighted_mean, clean, levels=[[documents[i] for i in keep]], iters=n_boot,
        ci=1 - alpha, seed=seed,
    )  # fmt: skip
    return _by_document(result, len(clean))


def _by_document(result: dict, prompts: int) -> dict:
    """A result over documents, with ``n_documents`` and ``n_prompts`` named."""
    result = _per_prompt(result)
    result["n_documents"] = result["n_prompts"]
    result["n_prompts"] = prompts
    result.pop("units", None)
    return result


def _mean_last(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=-1)


def _weighted_mean(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (w * values).sum(axis=-1) / w.sum(axis=-1)


def jackknife_ci(
    estimate: float, leave_one_out: Sequence[float], alpha: float = 0.05, t: bool = False
) -> dict:
    """``estimate`` with a delete-one jackknife interval (:func:`stylemerge.stats.intervals.
    jackknife`: normal approximation, or with ``t`` Student t quantiles, for few units)."""
    return _per_prompt(intervals.jackknife(estimate, leave_one_out, ci=1 - alpha, t=t))


def ngram_metrics(
    token_groups: Sequence[Sequence[Sequence[str]]],
    n: int,
    vocab_size: int,
    alpha: float = 0.05,
    documents: Sequence | None = None,
) -> tuple[dict, dict]:
    """Distinct-n and EAD-n over all samples, with delete-one-prompt jackknife intervals
    (delete-one-document, t quantiles, given each prompt's source ``documents``).
    ``token_groups[p]`` holds the token lists of prompt p's samples."""
    (unique, total), without = leave_one_prompt_out(token_groups, n, documents)
    results = (
        jackknife_ci(
            distinct_from_counts(unique, total),
            [distinct_from_counts(u, t) for u, t in without],
            alpha,
            t=documents is not None,
        ),
        jackknife_ci(
            ead_from_counts(unique, total, vocab_size**n),
            [ead_from_counts(u, t, vocab_size**n) for u, t in without],
            alpha,
            t=documents is not None,
        ),
    )
    if documents is None:
        return results
    return tuple(
        {**r, "n_documents": r["n_prompts"], "n_prompts": len(token_groups)} for r in results
    )


# --- one domain, one model -------------------------------------------------------------------


def derive_seed(seed: int, *parts: str) -> int:
    """A 31-bit seed from the run's seed and names (stable across runs and machines)."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def score_samples(
    groups: Sequence[Sequence[str]],
    vocab_size: int,
    seed: int,
    n_boot: int = 1000,
    ci: float = 0.95,
    across_prompts: int = 1,
    embed: Embed | None = None,
    embedding_missing: str | None = None,
    documents: Sequence | None = None,
) -> dict:
    """Every diversity metric of one domain's samples (``groups[p]``: the samples of
    prompt p); each prompt is compared with ``across_prompts`` others for the across-prompt
    diversity.  ``documents``: each prompt's source document, the unit the intervals then
    resample (prompts cut from one document are not independent)."""
    alpha = 1 - ci
    tokens = [[ngram_tokens(t) for t in group] for group in groups]
    flat = [t for group in groups for t in group]
    lengths = [len(t) for group in tokens for t in group]
    result: dict = {
        "prompts": len(groups),
        "samples": len(flat),
        "empty_samples": sum(1 for t in flat if not t.strip()),
        "mean_ngram_tokens": statistics.fmean(lengths) if lengths else None,
        "ead_vocab_size": vocab_size,
    }
    if documents is not None:
        result["documents"] = len(set(documents))
    for n in NGRAM_ORDERS:
        result[f"distinct_{n}"], result[f"ead_{n}"] = ngram_metrics(
            tokens, n, vocab_size, alpha, documents
        )

    index = BleuIndex(flat)
    members = group_indices(groups)
    within = within_groups(index, members)
    across = across_groups(index, members, across_prompts, derive_seed(seed, "across_prompts"))
    boot = derive_seed(seed, "bootstrap")
    result["self_diversity"] = bootstrap_ci(within, boot, n_boot, alpha, documents)
    result["across_prompt_diversity"] = {
        **bootstrap_ci(across, boot, n_boot, alpha, documents),
        "partners_per_prompt": min(across_prompts, len(groups) - 1),
    }
    if embed is None:
        missing = {"value": None, "reason": embedding_missing or "no embedding model"}
        result["embedding_diversity"] = dict(missing)
        result["embedding_across_prompt_diversity"] = dict(missing)
    else:
        vectors = np.asarray(embed(flat), dtype=np.float64)
        per_prompt = [vectors[m] for m in members]
        result["embedding_diversity"] = bootstrap_ci(
            embedding_diversity(per_prompt), boot, n_boot, alpha, documents
        )
        result["embedding_across_prompt_diversity"] = bootstrap_ci(
            embedding_across_prompt_diversity(per_prompt), boot, n_boot, alpha, documents
        )
    return result


# --- two models, the same prompts ------------------------------------------------------------


def common_length(
    base: Sequence[Sequence[str]], other: Sequence[Sequence[str]]
) -> tuple[list[list[list[str]]], list[list[list[str]]], dict]:
    """Both models' samples as :func:`ngram_tokens` lists, the k-th sample of prompt p of
    each cut to the shorter of the two, and ``{"tokens_base", "tokens_other",
    "length_change"}``: the uncut token counts and ``other / base - 1``."""
    cut_base, cut_other, sizes = [], [], [0, 0]
    for group_b, group_o in zip(base, other, strict=True):
        if len(group_b) != len(group_o):
            raise ValueError(f"unpaired: {len(group_b)} samples against {len(group_o)}")
        row_b, row_o = [], []
        for text_b, text_o in zip(group_b, group_o, strict=True):
            tokens_b, tokens_o = ngram_tokens(text_b), ngram_tokens(text_o)
            sizes[0] += len(tokens_b)
            sizes[1] += len(tokens_o)
            keep = min(len(tokens_b), len(tokens_o))
            row_b.append(tokens_b[:keep])
            row_o.append(tokens_o[:keep])
        cut_base.append(row_b)
        cut_other.append(row_o)
    change = sizes[1] / sizes[0] - 1 if sizes[0] else math.nan
    return (
        cut_base,
        cut_other,
        {
            "tokens_base": sizes[0],
            "tokens_other": sizes[1],
            "length_change": change,
        },
    )


def distinct_change(
    base: Sequence[Sequence[str]],
    other: Sequence[Sequence[str]],
    n: int = 1,
    alpha: float = 0.05,
    documents: Sequence | None = None,
    length_controlled: bool = False,
) -> dict:
    """Relative change of distinct-n from ``base`` to ``other`` (``other / base - 1``), two
    models' samples for the same prompts (``base[p]``, ``other[p]``: the samples of prompt
    p), with a paired delete-one jackknife interval: both models lose the same prompt (or,
    given each prompt's source ``documents``, the same document's prompts, with t
    quantiles) together, so variation common to both cancels.  ``length_controlled``: on
    the samples cut to a common length (:func:`common_length`); the result then carries
    ``length_change``, the uncut samples' relative change of length."""
    if len(base) != len(other):
        raise ValueError(f"unpaired: {len(base)} prompts against {len(other)}")
    if length_controlled:
        tokens_b, tokens_o, lengths = common_length(base, other)
    else:
        tokens_b = [[ngram_tokens(t) for t in group] for group in base]
        tokens_o = [[ngram_tokens(t) for t in group] for group in other]
        lengths = {}

    (ub, tb), base_without = leave_one_prompt_out(tokens_b, n, documents)
    (uo, to), other_without = leave_one_prompt_out(tokens_o, n, documents)

    def change(ub, tb, uo, to):
        before, after = distinct_from_counts(ub, tb), distinct_from_counts(uo, to)
        return after / before - 1 if before else math.nan

    loo = [change(*b, *o) for b, o in zip(base_without, other_without, strict=True)]
    result = jackknife_ci(change(ub, tb, uo, to), loo, alpha, t=documents is not None)
    if documents is not None:
        result = {**result, "n_documents": result["n_prompts"], "n_prompts": len(base)}
    if length_controlled:
        result["length_change"] = lengths["length_change"]
    return result


def _cut_texts(token_groups: Sequence[Sequence[Sequence[str]]]) -> list[list[str]]:
    return [[" ".join(tokens) for tokens in group] for group in token_groups]


def self_diversity_change(
    base: Sequence[Sequence[str]],
    other: Sequence[Sequence[str]],
    seed: int = 0,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    base_values: Sequence[float] | None = None,
    documents: Sequence | None = None,
    length_controlled: bool = False,
) -> dict:
    """Relative change of self-diversity (1 - pairwise BLEU / 100, the mean over prompts)
    from ``base`` to ``other`` (``mean(other) / mean(base) - 1``), two models' samples for
    the same prompts, with a paired bootstrap over prompts, or, given each prompt's source
    ``documents``, over documents (:func:`stylemerge.stats.intervals.hierarchical_bootstrap`): a
    prompt without a value in either model is left out of both.  ``base_values``:
    ``self_diversity_per_prompt(base)``, where the caller compares many models with one base
    and has it already (not with ``length_controlled``, whose cut depends on the pair:
    :func:`common_length`, the cut samples' tokens joined by spaces)."""
    if len(base) != len(other):
        raise ValueError(f"unpaired: {len(base)} prompts against {len(other)}")
    if length_controlled:
        cut_b, cut_o, _ = common_length(base, other)
        base, other, base_values = _cut_texts(cut_b), _cut_texts(cut_o), None
    if base_values is None:
        base_values = self_diversity_per_prompt(base)
    other_values = self_diversity_per_prompt(other)
    keep = [
        i
        for i, (b, o) in enumerate(zip(base_values, other_values, strict=True))
        if math.isfinite(b) and math.isfinite(o)
    ]
    b_kept = [base_values[i] for i in keep]
    o_kept = [other_values[i] for i in keep]
    if documents is None:
        result = intervals.paired_bootstrap(_ratio_change, b_kept, o_kept, n_boot, 1 - alpha, seed)
        return _per_prompt(result)
    result = intervals.hierarchical_bootstrap(
        _weighted_ratio_change,
        b_kept,
        o_kept,
        levels=[[documents[i] for i in keep]],
        iters=n_boot,
        ci=1 - alpha,
        seed=seed,
    )
    return _by_document(result, len(keep))


def _ratio_change(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    return other.mean(axis=-1) / base.mean(axis=-1) - 1


def _weighted_ratio_change(w: np.ndarray, base: np.ndarray, other: np.ndarray) -> np.ndarray:
    return (w * other).sum(axis=-1) / (w * base).sum(axis=-1) - 1
