"""Distinct-n and expectation-adjusted distinct (EAD) from n-gram counts.

Tokens are :func:`ngram_tokens` (words and single punctuation characters, case folded), not the
model's tokenizer, so that models with different vocabularies compare. ``distinct_n`` is unique
n-grams / all n-grams (:func:`distinct_from_counts`); EAD divides the unique n-grams by the
number expected when that many n-grams are drawn uniformly from the possible types
(:func:`expected_distinct`, :func:`ead_from_counts`). :func:`leave_one_prompt_out` gives the
counts a delete-one-prompt jackknife needs (:mod:`stylemerge.evaluate.diversity.scores`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

# Words (Unicode letters, digits, underscore) and single punctuation or symbol characters.
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def ngram_tokens(text: str) -> list[str]:
    """The tokens that distinct-n and EAD count: ``text.casefold()`` split into runs of word
    characters and single punctuation/symbol characters; whitespace only separates.

    ``"Don't stop--GO!"`` -> ``["don", "'", "t", "stop", "-", "-", "go", "!"]``.

    Why this and not the model's tokenizer: the same text gets the same tokens whichever model
    wrote it (models with different vocabularies compare), and words rather than sub-word
    pieces are what "lexical diversity" means. Case is folded so that a capitalised
    sentence-initial word is not a new type. Punctuation counts, one character per token
    (``==`` is two), because in the code domains it carries much of the style. ``\\w`` is
    Unicode-aware, so any script that separates words with spaces tokenizes the same way;
    scripts written without spaces (Chinese, Japanese) come out as whole runs, which this
    metric then treats as words.
    """
    return TOKEN_PATTERN.findall(text.casefold())


def _ngrams(tokens: Sequence, n: int) -> Iterable[tuple]:
    return zip(*(tokens[i:] for i in range(n)), strict=False)


def ngram_counts(token_lists: Iterable[Sequence[str]], n: int) -> Counter:
    """Counts of the n-grams of every token list (none spans two lists)."""
    counts: Counter = Counter()
    for tokens in token_lists:
        counts.update(_ngrams(tokens, n))
    return counts


def expected_distinct(total: int, vocab_size: int) -> float:
    """Expected number of distinct types among ``total`` draws, uniform over ``vocab_size``
    types: ``V * (1 - ((V - 1) / V) ** C)``, computed without cancellation for large V."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
    if total <= 0:
        return 0.0
    if vocab_size == 1:
        return 1.0
    return vocab_size * -math.expm1(total * math.log1p(-1.0 / vocab_size))


def distinct_from_counts(unique: int, total: int) -> float:
    """Distinct-n: ``unique`` n-grams / ``total`` n-grams (NaN when there is no n-gram)."""
    return unique / total if total else math.nan


def ead_from_counts(unique: int, total: int, types: int) -> float:
    """Expectation-adjusted distinct (Liu et al. 2022): ``unique`` n-grams divided by the
    number expected among ``total`` n-grams drawn uniformly from ``types`` possible ones
    (``vocab_size ** n`` for n-grams); NaN when there is no n-gram."""
    return unique / expected_distinct(total, types) if total else math.nan


def leave_one_prompt_out(
    token_groups: Sequence[Sequence[Sequence[str]]], n: int, clusters: Sequence | None = None
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(unique, total) n-grams over all prompts, and without each prompt in turn; with
    ``clusters`` (a label per prompt: its source document), without each cluster's prompts
    in turn, in the order the clusters first appear."""
    if clusters is None:
        per_prompt = [ngram_counts(group, n) for group in token_groups]
    else:
        grouped: dict = {}
        for group, cluster in zip(token_groups, clusters, strict=True):
            grouped.setdefault(cluster, []).extend(group)
        per_prompt = [ngram_counts(group, n) for group in grouped.values()]
    everything: Counter = Counter()
    for counts in per_prompt:
        everything.update(counts)
    unique, total = len(everything), sum(everything.values())
    without = [
        (
            unique - sum(1 for g, c in counts.items() if everything[g] == c),
            total - sum(counts.values()),
        )
        for counts in per_prompt
    ]
    return (unique, total), without
