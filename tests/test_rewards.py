import logging
import math

import pytest
import torch

from stylemerge.data.shards import read_shard
from stylemerge.grpo.rewards import (
    CHAR_CLASSES,
    REWARDS,
    CharProfile,
    ProxyScorer,
    build_rewards,
    char_class,
    digit_punct_fraction,
    repeated_ngram_fraction,
)
from stylemerge.models.reference import load_model, load_tokenizer

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


def test_scoring_only_the_completions_rows_gives_the_whole_tensors_values(scorers):
    """The scorer takes the softmax at the scored positions only; on the same padded batch
    the values are those of a softmax over every position (bit for bit on this machine's
    CPU; the test allows float32's last digit)."""
    s = scorers["base"]
    prompts = ["The council said on Tuesday that", "def f(x):", "Police"]
    completions = [" the road would reopen.", "\n    return x", " said on Monday that it"]
    pairs = [s._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((3, width), s.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((3, width), dtype=torch.long)
    target = torch.zeros((3, width), dtype=torch.bool)
    for row, (seq, n) in enumerate(pairs):
        ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
        target[row, len(seq) - n : len(seq)] = True
    with torch.no_grad():
        logits = s.model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    whole = ((logp * target[:, 1:]).sum(-1) / target[:, 1:].sum(-1)).tolist()
    s._last = None
    assert s.mean_logprobs(prompts, completions) == pytest.approx(whole, rel=1e-6, abs=0)


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


# --- character-class drift: the guard against digit-and-punctuation runs (github_python) ---

PROSE = (
    "The council said on Tuesday that the road would reopen on Monday, after three weeks of "
    "repairs. Residents had complained about the noise.\n"
)
CODE = (
    "def put(self, key, value):\n    if key in self.data:\n        self.data.move_to_end(key)\n"
    "    self.data[key] = value\n    if len(self.data) > self.capacity:\n"
    "        self.data.popitem(last=False)\n"
)
DIGIT_RUN = "0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [[0.0, 0.0], [1.0, 2.0]]); 1234567890)(*&^%$#@!"


def test_character_classes():
    assert [CHAR_CLASSES[char_class(c)] for c in "aZé7٣ \n\t#+(€\u0301\x00"] == [
        "letter", "letter", "letter", "digit", "digit", "space", "space", "space",
        "punct", "punct", "punct", "punct", "other", "other",
    ]  # fmt: skip


def test_character_profile_and_distance_on_hand_made_strings():
    for reference in (PROSE, CODE):
        profile = CharProfile.of_texts([reference, reference])
        assert sum(profile.fractions) == pytest.approx(1.0)
        assert profile.distance(reference) == pytest.approx(0.0, abs=1e-12)
        assert profile.distance(reference * 5) == pytest.approx(0.0, abs=1e-12)
        assert profile.distance(DIGIT_RUN) > 0.5  # a run of digits and punctuation
        assert profile.distance("1234567890") == pytest.approx(1.0 - profile.fractions[1])
    # text drawn from the profile, character by character, is ~0 away from it
    profile = CharProfile.of_texts([CODE])
    pools = ["abcxyzQ", "0123456789", " \n", "()[]:=.,>", ""]
    rng = __import__("random").Random(0)
    drawn = "".join(
        rng.choice(pools[rng.choices(range(5), weights=profile.fractions)[0]])
        for _ in range(20_000)
    )
    assert profile.distance(drawn) < 0.02
    # prose and code are told apart, but much less than a digit run from either
    prose, code = CharProfile.of_texts([PROSE]), CharProfile.of_texts([CODE])
    assert 0.05 < code.distance(PROSE) < prose.distance(DIGIT_RUN)
    assert math.isnan(code.distance("")) and math.isnan(code.distance(" \n "))
    with pytest.raises(ValueError, match="no text"):
        CharProfile.of_texts(["", ""])
    with pytest.raises(ValueError, match="fractions summing to 1"):
        CharProfile((0.5, 0.5, 0.5, 0.0, 0.0))
    assert set(code.as_dict()) == set(CHAR_CLASSES)


def test_digit_punct_fraction():
    assert digit_punct_fraction("abc def") == 0.0
    assert digit_punct_fraction("12,34") == 1.0
    assert digit_punct_fraction("ab 12") == pytest.approx(2 / 5)
    assert math.isnan(digit_punct_fraction("  "))


def test_char_profile_reward_contract(caplog):
    profile = CharProfile.of_texts([CODE])
    (func,), weights = build_rewards(
        {"char_profile": {"weight": 2.0, "tolerance": 0.2}}, None, None, profile=profile
    )
    assert weights == [2.0] and func.__name__ == "char_profile"
    with caplog.at_level(logging.WARNING):
        values = func(prompts=["def f(x):"] * 5, completions=[CODE, DIGIT_RUN, "", "   ", None])
    assert all(math.isfinite(v) for v in values)
    assert values[0] == 0.0  # within tolerance: no penalty
    assert values[1] == pytest.approx(0.2 - profile.distance(DIGIT_RUN)) and values[1] < -0.3
    assert values[2:] == [-1.0, -1.0, -1.0]  # empty, blank, missing: the invalid value
    assert "char_profile: 3 of 5 completions were empty or unscorable" in caplog.text
    # chat-format completions (message lists) are read as their text
    chat = func(prompts=["x"], completions=[[{"role": "assistant", "content": DIGIT_RUN}]])
    assert chat == [values[1]]
    (func,), _ = build_rewards(
        {"char_profile": {"weight": 1.0, "invalid": -3.0}}, None, None, profile=profile
    )
    assert func(prompts=["x"], completions=[""]) == [-3.0]


def test_char_profile_reward_needs_the_domain_profile():
    with pytest.raises(ValueError, match="needs the domain's character profile"):
        build_rewards({"char_profile": {"weight": 1.0}}, None, None)


def test_char_profile_python_defaults_match_the_schema(schema_path):
    # per-domain overrides stay sparse (no schema defaults filled in): the factory's own
    # defaults are what a domain that adds the reward gets
    import inspect

    import yaml

    schema = yaml.safe_load(schema_path.read_text())
    keys = schema["$defs"]["grpo"]["properties"]["rewards"]["properties"]["char_profile"]
    signature = inspect.signature(REWARDS["char_profile"]).parameters
    for name in ("tolerance", "invalid"):
        assert signature[name].default == keys["properties"][name]["default"]


def test_config_accepts_and_refuses_char_profile_keys(schema_path):
    from stylemerge.workflow.config import ConfigError, stage_settings, validate_config

    domains = {
        "code": {
            "source": {"type": "builtin"},
            "grpo": {"rewards": {"char_profile": {"weight": 2.0, "tolerance": 0.25}}},
        },
        "news": {"source": {"type": "builtin"}},
    }
    config = validate_config({"domains": domains}, schema_path)
    code, news = stage_settings(config, "grpo", "code"), stage_settings(config, "grpo", "news")
    assert code["rewards"]["char_profile"] == {"weight": 2.0, "tolerance": 0.25}
    assert "char_profile" not in news["rewards"]
    assert set(code["rewards"]) == {"style_contrast", "fluency_floor", "repetition", "char_profile"}
    top = validate_config({"grpo": {"rewards": {"char_profile": {"weight": 1}}}}, schema_path)
    assert top["grpo"]["rewards"]["char_profile"] == {
        "weight": 1,
        "tolerance": 0.2,
        "invalid": -1.0,
    }

    def rejected(rewards) -> str:
        with pytest.raises(ConfigError) as err:
            validate_config({"grpo": {"rewards": rewards}}, schema_path)
        return str(err.value)

    message = rejected({"char_profile": {"weight": 1, "tolerence": 0.2}})
    assert (
        "grpo.rewards.char_profile.tolerence" in message and "did you mean 'tolerance'" in message
    )
    assert "grpo.rewards.char_profile.tolerance" in rejected(
        {"char_profile": {"weight": 1, "tolerance": 1.5}}
    )
    assert "'weight' is a required property" in rejected({"char_profile": {"tolerance": 0.2}})
    assert "did you mean 'char_profile'" in rejected({"char_profil": {"weight": 1}})
    with pytest.raises(ConfigError, match="domains.code.grpo.rewards.char_profile.tolerance"):
        bad = {"code": {**domains["code"], "grpo": {"rewards": {"char_profile": {
            "weight": 1, "tolerance": -0.1}}}}}  # fmt: skip
        validate_config({"domains": bad}, schema_path)


def test_smol_tier_guards_only_github_python(schema_path):
    import yaml

    from conftest import ROOT
    from stylemerge.workflow.config import stage_settings, validate_config

    config = validate_config(
        yaml.safe_load((ROOT / "config" / "smol.yaml").read_text()), schema_path
    )
    for domain in config["domains"]:
        rewards = stage_settings(config, "grpo", domain)["rewards"]
        assert ("char_profile" in rewards) == (domain == "github_python"), domain
        assert rewards["style_contrast"]["weight"] == 1.0


def test_heldout_evaluation_records_character_drift(monkeypatch):
    """grpo.evaluate_policy: per prompt, the mean drift of its samples (blank ones left
    out); summarise() pairs them before/after like the rewards."""
    from stylemerge.grpo import train as grpo

    profile = CharProfile.of_texts([CODE])
    samples = {
        "before": [[CODE, CODE[:60]], [CODE[20:], ""]],
        "after": [[DIGIT_RUN, CODE], [DIGIT_RUN, DIGIT_RUN]],
    }

    class General:
        def mean_logprobs(self, prompts, completions):
            return [-1.0 for _ in completions]

    settings = {"trainer": {}, "eval_samples": 2}
    runs = {}
    for name, completions in samples.items():
        monkeypatch.setattr(grpo, "sample_completions", lambda *a, c=completions, **k: c)
        runs[name] = grpo.evaluate_policy(
            None, None, ["p0", "p1"], [], [], General(), settings, seed=0, profile=profile
        )
    before = runs["before"]["per_prompt"]
    assert before["char_profile_tv"][1] == profile.distance(CODE[20:])  # blank sample skipped
    assert before["digit_punct_fraction"][0] == pytest.approx(
        (digit_punct_fraction(CODE) + digit_punct_fraction(CODE[:60])) / 2
    )
    summary = grpo.summarise(runs["before"], runs["after"])
    assert summary["char_profile_tv"]["change"]["mean"] > 0.3
    assert summary["digit_punct_fraction"]["change"]["mean"] > 0.3
    assert summary["char_profile_tv"]["change"]["n"] == 2
    # without a profile only the profile-free fraction is recorded
    monkeypatch.setattr(grpo, "sample_completions", lambda *a, **k: samples["after"])
    plain = grpo.evaluate_policy(None, None, ["p0", "p1"], [], [], General(), settings, seed=0)
    assert "char_profile_tv" not in plain["per_prompt"]
    assert "digit_punct_fraction" in plain["per_prompt"]
