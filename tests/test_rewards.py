import logging
import math

import pytest
import torch

from stylemerge.models import load_model, load_tokenizer
from stylemerge.rewards import REWARDS, ProxyScorer, build_rewards, repeated_ngram_fraction
from stylemerge.shards import read_shard

DEFAULT_REWARDS = {
    "style_contrast": {"weight": 1.0},
    "fluency_floor": {"weight": 1.0, "floor": -6.0},
    "repetition": {"weight": 0.5},
}


def scorer(ref) -> ProxyScorer:
    return ProxyScorer(load_model(ref), load_tokenizer(ref), batch_size=3)


@pytest.fixture(scope="module")
def scorers(bbc_proxy, tiny_general_proxy, tiny_base):
    # the domain scorer uses the base's Qwen3 model and tokenizer, the general one a Llama
    # with another vocabulary: rewards must work across tokenizers
    return {
        "bbc": scorer(bbc_proxy),
        "general": scorer(tiny_general_proxy),
        "base": scorer(tiny_base),
    }


def test_mean_logprob_matches_a_direct_computation(scorers):
    s = scorers["general"]
    prompt, completion = "The council said", " the road would reopen on Monday."
    p = s.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = s.tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = s.model(input_ids=torch.tensor([p + c])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    expected = sum(logp[len(p) + i - 1, tok].item() for i, tok in enumerate(c)) / len(c)
    (value,) = s.mean_logprobs([prompt], [completion])
    assert value == pytest.approx(expected, abs=1e-4)


def test_batching_and_padding_do_not_change_scores(scorers):
    s = scorers["base"]
    prompts = ["a", "The council said on Tuesday that", "def f(x):", "Police", "x"]
    completions = [
        " short",
        " longer text that goes on for a while here",
        "\n    return x",
        " said",
        " y",
    ]
    batched = s.mean_logprobs(prompts, completions)
    s._last = None
    single = [s.mean_logprobs([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    assert batched == pytest.approx(single, abs=1e-4)


def test_rewards_work_across_tokenizers(scorers):
    assert len(scorers["bbc"].tokenizer) != len(scorers["base"].tokenizer)
    funcs, weights = build_rewards(DEFAULT_REWARDS, scorers["base"], scorers["general"])
    values = [f(prompts=["The council said"], completions=[" it would act."]) for f in funcs]
    assert all(len(v) == 1 and math.isfinite(v[0]) for v in values)
    assert weights == [1.0, 1.0, 0.5]


def test_empty_and_unscorable_completions_get_a_finite_penalty_and_a_warning(scorers, caplog):
    funcs, _ = build_rewards(DEFAULT_REWARDS, scorers["bbc"], scorers["general"])
    with caplog.at_level(logging.WARNING):
        for func in funcs:
            values = func(prompts=["a", "b", "c"], completions=["", "   ", None])
            assert values == [-1.0, -1.0, -1.0], func.__name__
    assert "style_contrast: 3 of 3 completions were empty or unscorable" in caplog.text


def test_repeating_one_token_is_not_rewarded_over_domain_text(scorers, shards):
    funcs, weights = build_rewards(DEFAULT_REWARDS, scorers["bbc"], scorers["general"])
    docs = [r["text"] for r in read_shard(shards["bbc_news"]["heldout"])][:4]
    prompts = [d[:80] for d in docs]
    natural = [d[80:400] for d in docs]
    repeated = [" the" * 60 for _ in docs]

    def total(completions):
        per_func = [f(prompts=prompts, completions=completions) for f in funcs]
        return [
            sum(w * v[i] for w, v in zip(weights, per_func, strict=True))
            for i in range(len(prompts))
        ]

    assert all(n > r for n, r in zip(total(natural), total(repeated), strict=True))


def test_repeated_ngram_fraction():
    assert repeated_ngram_fraction("a b c d e f") == 0.0
    assert repeated_ngram_fraction("x x x x x x x x") == pytest.approx(5 / 6)
    assert repeated_ngram_fraction("too short") == 0.0


def test_unknown_reward_name():
    with pytest.raises(KeyError, match="unknown reward 'styel'"):
        build_rewards({"styel": {"weight": 1}}, None, None)


def test_schema_lists_exactly_the_registered_rewards(schema_path):
    import yaml

    schema = yaml.safe_load(schema_path.read_text())
    assert set(schema["$defs"]["grpo"]["properties"]["rewards"]["properties"]) == set(REWARDS)
