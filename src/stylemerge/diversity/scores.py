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
:func:`self_diversity_change`, a paired bootstrap.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Sequence

import numpy as np

from stylemerge import intervals
from stylemerge.diversity.bleu import (
    BleuIndex,
    across_groups,
    group_indices,
    self_diversity_per_prompt,
    within_groups,
)
from stylemerge.diversity.embeddings import (
    Embed,
    embedding_across_prompt_diversity,
    embedding_diversity,
)
from stylemerge.diversity.ngrams import (
    distinct_from_counts,
    ead_from_counts,
    leave_one_prompt_out,
    ngram_tokens,
)

NGRAM_ORDERS = (1, 2, 3)


# --- intervals over prompts -------------------------------------------------------------------


def _per_prompt(result: dict) -> dict:
    """An :mod:`stylemerge.intervals` result with its count named ``n_prompts``."""
    result = dict(result)
    result["n_prompts"] = result.pop("n")
    for key in ("iters", "seed"):
        result.pop(key, None)
    return result


def bootstrap_ci(
    values: Sequence[float], seed: int, n_boot: int = 1000, alpha: float = 0.05
) -> dict:
    """The mean of per-prompt ``values`` with a percentile bootstrap interval
    (:func:`stylemerge.intervals.bootstrap`: ``n_boot`` resamples of the prompts with
    replacement, numpy ``default_rng(seed)``, interval between the ``alpha/2`` and
    ``1 - alpha/2`` quantiles of the resampled means). NaN values (a prompt without a value)
    are left out. Fewer than two values: no interval."""
    clean = [v for v in values if v is not None and math.isfinite(v)]
    return _per_prompt(
        intervals.bootstrap(_mean_last, clean, iters=n_boot, ci=1 - alpha, seed=seed)
    )


def _mean_last(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=-1)


def jackknife_ci(estimate: float, leave_one_out: Sequence[float], alpha: float = 0.05) -> dict:
    """``estimate`` with a delete-one-prompt jackknife interval
    (:func:`stylemerge.intervals.jackknife`, normal approximation)."""
    return _per_prompt(intervals.jackknife(estimate, leave_one_out, ci=1 - alpha))


def ngram_metrics(
    token_groups: Sequence[Sequence[Sequence[str]]],
    n: int,
    vocab_size: int,
    alpha: float = 0.05,
) -> tuple[dict, dict]:
    """Distinct-n and EAD-n over all samples, with delete-one-prompt jackknife intervals.
    ``token_groups[p]`` holds the token lists of prompt p's samples."""
    (unique, total), without = leave_one_prompt_out(token_groups, n)
    return (
        jackknife_ci(
            distinct_from_counts(unique, total),
            [distinct_from_counts(u, t) for u, t in without],
            alpha,
        ),
        jackknife_ci(
            ead_from_counts(unique, total, vocab_size**n),
            [ead_from_counts(u, t, vocab_size**n) for u, t in without],
            alpha,
        ),
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
) -> dict:
    """Every diversity metric of one domain's samples (``groups[p]``: the samples of
    prompt p); each prompt is compared with ``across_prompts`` others for the across-prompt
    diversity."""
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
    for n in NGRAM_ORDERS:
        result[f"distinct_{n}"], result[f"ead_{n}"] = ngram_metrics(tokens, n, vocab_size, alpha)

    index = BleuIndex(flat)
    members = group_indices(groups)
    within = within_groups(index, members)
    across = across_groups(index, members, across_prompts, derive_seed(seed, "across_prompts"))
    boot = derive_seed(seed, "bootstrap")
    result["self_diversity"] = bootstrap_ci(within, boot, n_boot, alpha)
    result["across_prompt_diversity"] = {
        **bootstrap_ci(across, boot, n_boot, alpha),
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
            embedding_diversity(per_prompt), boot, n_boot, alpha
        )
        result["embedding_across_prompt_diversity"] = bootstrap_ci(
            embedding_across_prompt_diversity(per_prompt), boot, n_boot, alpha
        )
    return result


# --- two models, the same prompts ------------------------------------------------------------


def distinct_change(
    base: Sequence[Sequence[str]],
    other: Sequence[Sequence[str]],
    n: int = 1,
    alpha: float = 0.05,
) -> dict:
    """Relative change of distinct-n from ``base`` to ``other`` (``other / base - 1``), two
    models' samples for the same prompts (``base[p]``, ``other[p]``: the samples of prompt
    p), with a paired delete-one-prompt jackknife interval: both models lose the same prompt
    together, so prompt-to-prompt variation common to both cancels."""
    if len(base) != len(other):
        raise ValueError(f"unpaired: {len(base)} prompts against {len(other)}")

    def tokens(groups):
        return [[ngram_tokens(t) for t in group] for group in groups]

    (ub, tb), base_without = leave_one_prompt_out(tokens(base), n)
    (uo, to), other_without = leave_one_prompt_out(tokens(other), n)

    def change(ub, tb, uo, to):
        before, after = distinct_from_counts(ub, tb), distinct_from_counts(uo, to)
        return after / before - 1 if before else math.nan

    loo = [change(*b, *o) for b, o in zip(base_without, other_without, strict=True)]
    return jackknife_ci(change(ub, tb, uo, to), loo, alpha)


def self_diversity_change(
    base: Sequence[Sequence[str]],
    other: Sequence[Sequence[str]],
    seed: int = 0,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    base_values: Sequence[float] | None = None,
) -> dict:
    """Relative change of self-diversity (1 - pairwise BLEU / 100, the mean over prompts)
    from ``base`` to ``other`` (``mean(other) / mean(base) - 1``), two models' samples for
    the same prompts, with a paired bootstrap over prompts
    (:func:`stylemerge.intervals.paired_bootstrap`): a prompt without a value in either
    model is left out of both.  ``base_values``: ``self_diversity_per_prompt(base)``, where
    the caller compares many models with one base and has it already."""
    if len(base) != len(other):
        raise ValueError(f"unpaired: {len(base)} prompts against {len(other)}")
    if base_values is None:
        base_values = self_diversity_per_prompt(base)
    pairs = [
        (b, o)
        for b, o in zip(base_values, self_diversity_per_prompt(other), strict=True)
        if math.isfinite(b) and math.isfinite(o)
    ]
    result = intervals.paired_bootstrap(
        _ratio_change, [b for b, _ in pairs], [o for _, o in pairs], n_boot, 1 - alpha, seed
    )
    return _per_prompt(result)


def _ratio_change(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    return other.mean(axis=-1) / base.mean(axis=-1) - 1
