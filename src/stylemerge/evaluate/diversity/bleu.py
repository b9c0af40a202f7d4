"""Pairwise sentence BLEU among samples, and the self- and across-prompt diversity built on it.

Pairwise BLEU is sacrebleu's ``sentence_bleu`` (13a tokenizer, mixed case, exponential
smoothing, effective order, 4-grams) with one sample as hypothesis and the other as the
single reference. BLEU is not symmetric (precision denominators and brevity penalty come
from the hypothesis), so a pair counts in both directions: the mean over ordered pairs
``i != j``, which is the mean over unordered pairs of ``(BLEU(a, b) + BLEU(b, a)) / 2``.
:class:`BleuIndex` computes exactly sacrebleu's values while tokenizing and counting each
text's n-grams once, not once per pair.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

import numpy as np

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


def group_indices(groups: Sequence[Sequence]) -> list[list[int]]:
    """The positions of each group's members in the flat list of all groups' members:
    ``[[0, 1], [2, 3, 4]]`` for groups of 2 and 3 (how a :class:`BleuIndex` of every prompt's
    samples numbers them)."""
    indices, start = [], 0
    for group in groups:
        indices.append(list(range(start, start + len(group))))
        start += len(group)
    return indices


def within_groups(index: BleuIndex, members: Sequence[Sequence[int]]) -> list[float]:
    """Per group of ``index``'s texts (``members[p]``: their positions), ``1 - mean BLEU /
    100`` over its ordered pairs of distinct texts: :func:`self_diversity_per_prompt` on an
    index built once."""
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


def across_groups(
    index: BleuIndex, members: Sequence[Sequence[int]], partners: int, seed: int
) -> list[float]:
    """:func:`across_prompt_diversity` on an index built once (``members[p]``: the positions
    of prompt p's samples)."""
    values = []
    for p, others in enumerate(across_prompt_partners(len(members), partners, seed)):
        scores = [s for q in others for s in index.between(members[p], members[q])]
        values.append(1.0 - _mean(scores) / 100.0)
    return values


def self_diversity_per_prompt(groups: Sequence[Sequence[str]]) -> list[float]:
    """Per prompt (``groups[p]``: its samples), ``1 - mean pairwise BLEU / 100`` over the
    ordered pairs ``i != j`` of its samples, each BLEU ``sacrebleu.sentence_bleu(groups[p][i],
    [groups[p][j]])``: 0 when all samples are equal, 1 when no two share a word; NaN for
    fewer than two samples."""
    index = BleuIndex([t for group in groups for t in group])
    return within_groups(index, group_indices(groups))


def across_prompt_diversity(
    groups: Sequence[Sequence[str]], partners: int, seed: int
) -> list[float]:
    """Per prompt p: ``1 - mean BLEU / 100`` over every pair of a sample of p and a sample of
    one of its ``partners`` other prompts (:func:`across_prompt_partners`), both directions."""
    index = BleuIndex([t for group in groups for t in group])
    return across_groups(index, group_indices(groups), partners, seed)
