"""Pairwise-BLEU diversity metrics: stylemerge's ``BleuIndex`` vs a per-pair sacrebleu loop.

Measured: ``stylemerge.evaluate.diversity.bleu.self_diversity_per_prompt`` and
``across_prompt_diversity``
(what ``measure_diversity`` reports as self- and across-prompt diversity: 1 - mean pairwise
sentence BLEU / 100, both directions), against the straightforward loop that calls
``sacrebleu.sentence_bleu(hyp, [ref])`` once per ordered pair, on the same texts and the same
across-prompt partners. The values must be equal (they are computed with the same
floating-point operations; the script asserts a max abs difference <= 1e-12 and prints it).

Texts: P prompts x K samples of 30-60 words each, cut from the builtin corpus (the K samples
of a prompt are overlapping windows of one document, so that BLEU between them ranges from
near 0 to high, as between a model's samples for one prompt).

Goal: >= 10x faster at P=200, K=8 (``measure_diversity`` at paper scale).

    .venv/bin/python benchmarks/diversity_metrics.py [--quick] [--prompts P] [--samples K]
"""

from __future__ import annotations

import argparse
import random
import sys

from _common import best_of, machine

GOAL = 10.0
TOLERANCE = 1e-12


def synthetic_groups(prompts: int, samples: int, seed: int) -> list[list[str]]:
    """``prompts`` groups of ``samples`` texts of 30-60 words from the builtin corpus."""
    from stylemerge.data.sources import builtin_corpora, read_builtin

    documents = [
        doc.text.split()
        for corpus in builtin_corpora()
        for doc in read_builtin({"type": "builtin"}, corpus)
    ]
    documents = [words for words in documents if len(words) >= 150]
    rng = random.Random(seed)
    rng.shuffle(documents)
    groups = []
    for p in range(prompts):
        words = documents[p % len(documents)]
        anchor = rng.randrange(len(words) - 120)
        group = []
        for _ in range(samples):
            start = anchor + rng.randrange(60)
            group.append(" ".join(words[start : start + rng.randint(30, 60)]))
        groups.append(group)
    return groups


def _mean(values):
    return sum(values) / len(values)


def baseline(groups, partners: int, seed: int) -> tuple[list[float], list[float]]:
    """Self- and across-prompt diversity per prompt, one ``sentence_bleu`` call per pair."""
    from sacrebleu import sentence_bleu

    from stylemerge.evaluate.diversity.bleu import across_prompt_partners

    within = []
    for group in groups:
        scores = [
            sentence_bleu(group[i], [group[j]]).score
            for i in range(len(group))
            for j in range(len(group))
            if i != j
        ]
        within.append(1.0 - _mean(scores) / 100.0)
    across = []
    for p, others in enumerate(across_prompt_partners(len(groups), partners, seed)):
        scores = []
        for q in others:
            for a in groups[p]:
                for b in groups[q]:
                    scores.append(sentence_bleu(a, [b]).score)
                    scores.append(sentence_bleu(b, [a]).score)
        across.append(1.0 - _mean(scores) / 100.0)
    return within, across


def library(groups, partners: int, seed: int) -> tuple[list[float], list[float]]:
    from stylemerge.evaluate.diversity.bleu import (
        across_prompt_diversity,
        self_diversity_per_prompt,
    )

    return self_diversity_per_prompt(groups), across_prompt_diversity(groups, partners, seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=200, help="P (default 200)")
    parser.add_argument("--samples", type=int, default=8, help="K (default 8)")
    parser.add_argument("--partners", type=int, default=1, help="across_prompts (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each (best kept)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true", help="P=50")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts = 50

    groups = synthetic_groups(args.prompts, args.samples, args.seed)
    words = [len(t.split()) for g in groups for t in g]
    ours, loop = best_of(
        args.repeats,
        lambda: library(groups, args.partners, args.seed),
        lambda: baseline(groups, args.partners, args.seed),
    )
    diffs = [
        abs(a - b)
        for mine, theirs in zip(ours.result, loop.result, strict=True)
        for a, b in zip(mine, theirs, strict=True)
    ]
    max_diff = max(diffs)
    k = args.samples
    pairs = args.prompts * k * (k - 1) + args.prompts * min(args.partners, args.prompts - 1) * (
        2 * k * k
    )
    ratio, cpu_ratio = loop.wall / ours.wall, loop.cpu / ours.cpu
    self_mean = _mean(ours.result[0])
    across_mean = _mean(ours.result[1])

    print(
        f"pairwise BLEU diversity: P={args.prompts} x K={k} texts of {min(words)}-{max(words)} "
        f"words (mean {_mean(words):.1f}), across_prompts={args.partners}: {pairs:,} ordered "
        f"pairs"
    )
    print(f"{machine()}; best of {args.repeats}")
    print(f"  stylemerge (BleuIndex)        {ours.wall:7.2f} s wall {ours.cpu:7.2f} s cpu")
    print(f"  sacrebleu.sentence_bleu loop  {loop.wall:7.2f} s wall {loop.cpu:7.2f} s cpu")
    print(
        f"  self-diversity {self_mean:.4f}, across-prompt {across_mean:.4f}; max abs diff "
        f"{max_diff:.3g} over {len(diffs)} per-prompt values (tolerance {TOLERANCE:g})"
    )
    print(
        f"  speed-up: {ratio:.1f}x wall, {cpu_ratio:.1f}x cpu "
        f"(goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'NOT met'})"
    )
    if max_diff > TOLERANCE:
        print("  FAILED: values differ beyond the tolerance")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
