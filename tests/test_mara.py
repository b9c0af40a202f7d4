"""MARA (stylemerge.grpo.mara): the defining property on hand-made numbers, the config's refusals,
and GRPO with MARA training the tiny models through trl."""

import math

import pandas as pd
import pytest
import torch
from test_grpo import run

from stylemerge.grpo.mara import augment, mara_config_errors, threshold_args
from stylemerge.workflow.config import ConfigError, validate_config

BETA = 0.1


def target_mass(rewards, ref_logps, beta=BETA):
    """log of the KL-regularised optimum's unnormalised mass, log π_ref + r/β."""
    return ref_logps + rewards / beta


def test_anchored_completions_get_equal_target_mass_and_the_others_keep_their_reward():
    # two groups of four: rewards and sequence log-probs under the reference
    rewards = torch.tensor([1.0, 0.9, 0.2, 0.95, -0.5, 0.3, 0.31, 0.1])
    ref = torch.tensor([-12.0, -5.0, -1.0, -30.0, -2.0, -9.0, -4.0, -20.0])
    out = augment(rewards, ref, group_size=4, beta=BETA, threshold=0.3)
    high = rewards >= 0.3
    assert out.anchored.tolist() == high.tolist()
    # below the threshold: unchanged
    assert torch.equal(out.rewards[~high], rewards[~high])
    # the anchor is the high-reward completion most likely under the reference
    assert out.anchors.tolist() == [False, True, False, False, False, False, True, False]
    for group in (slice(0, 4), slice(4, 8)):
        mass = target_mass(out.rewards[group], ref[group])[high[group]]
        assert torch.allclose(mass, mass[0].expand_as(mass), atol=1e-4)
    # the anchor keeps its own reward; raw rewards did not have equal mass
    assert out.rewards[1] == rewards[1] and out.rewards[6] == rewards[6]
    raw_mass = target_mass(rewards[:4], ref[:4])[high[:4]]
    assert raw_mass.max() - raw_mass.min() > 1.0


def test_a_quantile_threshold_is_taken_per_group():
    rewards = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0])
    ref = torch.tensor([-1.0, -2.0, -3.0, -4.0, -1.0, -2.0, -3.0, -4.0])
    out = augment(rewards, ref, group_size=4, beta=BETA, quantile=0.5)
    # each group's median is 1.5 and 11.5: the upper two of each group are anchored
    assert out.anchored.tolist() == [False, False, True, True] * 2
    assert torch.equal(out.rewards[[0, 1, 4, 5]], rewards[[0, 1, 4, 5]])
    assert out.rewards[3] == pytest.approx(2.0 + BETA * (-3.0 - -4.0))


def test_masked_and_unscorable_completions_are_never_anchored():
    rewards = torch.tensor([1.0, 1.0, math.nan, 1.0])
    ref = torch.tensor([-1.0, -3.0, -0.5, -2.0])
    valid = torch.tensor([False, True, True, True])  # the first: empty mask (truncated)
    out = augment(rewards, ref, group_size=4, beta=BETA, threshold=0.5, valid=valid)
    assert out.anchored.tolist() == [False, True, False, True]
    assert out.anchors.tolist() == [False, False, False, True]  # -2 beats -3; -1 is masked
    assert out.rewards[0] == 1.0 and math.isnan(out.rewards[2])
    assert out.rewards[1] == pytest.approx(1.0 + BETA * (-2.0 - -3.0))


def test_a_group_with_no_completion_over_the_threshold_is_unchanged():
    rewards = torch.tensor([0.1, 0.2])
    out = augment(rewards, torch.tensor([-1.0, -2.0]), group_size=2, beta=BETA, threshold=5)
    assert torch.equal(out.rewards, rewards) and not out.anchored.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.0, "threshold": 0.0}, "beta > 0"),
        ({"beta": BETA}, "exactly one"),
        ({"beta": BETA, "threshold": 0.0, "quantile": 0.5}, "exactly one"),
    ],
)
def test_invalid_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment(torch.zeros(2), torch.zeros(2), group_size=2, **kwargs)


def test_threshold_args_read_the_config_forms():
    assert threshold_args({"quantile": 0.75}) == {"threshold": None, "quantile": 0.75}
    assert threshold_args(0.2) == {"threshold": 0.2, "quantile": None}


@pytest.mark.parametrize(
    ("trainer", "key"),
    [
        ({"beta": 0.0, "scale_rewards": "none"}, "grpo.trainer.beta"),
        ({"beta": 0.04}, "grpo.trainer.scale_rewards"),  # trl's default is "group"
        ({"beta": 0.04, "scale_rewards": "batch"}, "grpo.trainer.scale_rewards"),
        (
            {"beta": 0.04, "scale_rewards": "none", "multi_objective_aggregation": "x"},
            "grpo.trainer.multi_objective_aggregation",
        ),
    ],
)
def test_mara_refuses_settings_that_break_it(trainer, key):
    trainer = {"mask_truncated_completions": True, **trainer}
    problems = mara_config_errors({"mara": {"enabled": True}, "trainer": trainer})
    assert len(problems) == 1 and f"'{key}'" in problems[0]
    assert mara_config_errors({"mara": {"enabled": False}, "trainer": trainer}) == []


SOUND = {"beta": 0.04, "scale_rewards": "none", "mask_truncated_completions": True}


@pytest.mark.parametrize(
    "key,value",
    [
        ("use_bias_correction_kl", False),  # the KL term is then not the reverse KL's
        ("importance_sampling_level", "sequence"),
        ("temperature", 0.7),  # trl's reference log-probs would be at 0.7
        ("sync_ref_model", True),  # the reference, and so the target, would move
        ("mask_truncated_completions", False),  # partial sums favour short anchors
    ],
)
def test_mara_refuses_what_its_target_cannot_hold_under(key, value):
    assert mara_config_errors({"mara": {"enabled": True}, "trainer": SOUND}) == []
    problems = mara_config_errors({"mara": {"enabled": True}, "trainer": {**SOUND, key: value}})
    assert len(problems) == 1 and f"'grpo.trainer.{key}'" in problems[0], problems


def test_mara_with_truncated_completions_only_where_the_config_says_why():
    trainer = {**SOUND, "mask_truncated_completions": False}
    refused = mara_config_errors({"mara": {"enabled": True}, "trainer": trainer})
    assert "'grpo.mara.truncated_completions'" in refused[0]
    why = "every completion reaches the cap: all sums are over as many tokens"
    allowed = {"enabled": True, "truncated_completions": why}
    assert mara_config_errors({"mara": allowed, "trainer": trainer}) == []
    # trl's own default masks nothing: unset, it is refused too
    unset = {k: v for k, v in SOUND.items() if k != "mask_truncated_completions"}
    assert len(mara_config_errors({"mara": {"enabled": True}, "trainer": unset})) == 1


def test_the_config_checks_mara_per_domain_and_for_the_ablation_arm(schema_path):
    domains = {"bbc_news": {"source": {"type": "builtin"}}}
    ok = {"trainer": {"scale_rewards": "none", "mask_truncated_completions": True}}
    validate_config({"domains": domains, "grpo": {**ok, "mara": {"enabled": True}}}, schema_path)
    validate_config({"domains": domains, "grpo": ok, "ablation": {"mara": True}}, schema_path)
    # the -mara arm of the ablation needs what MARA needs
    with pytest.raises(ConfigError, match=r"'grpo\.trainer\.scale_rewards'"):
        validate_config({"domains": domains, "ablation": {"mara": True}}, schema_path)
    # a domain override that turns MARA on is checked and named
    override = {"bbc_news": {"source": {"type": "builtin"}, "grpo": {"mara": {"enabled": True}}}}
    with pytest.raises(ConfigError, match=r"'domains\.bbc_news\.grpo\.trainer\.scale_rewards'"):
        validate_config({"domains": override}, schema_path)
    # the ablation compares MARA off against on: the recipe's arm must have it off
    with pytest.raises(ConfigError, match=r"'grpo\.mara\.enabled'"):
        validate_config(
            {
                "domains": domains,
                "grpo": {**ok, "mara": {"enabled": True}},
                "ablation": {"mara": True},
            },
            schema_path,
        )
    with pytest.raises(ConfigError, match=r"grpo\.mara\.threshold"):
        validate_config(
            {"domains": domains, "grpo": {**ok, "mara": {"threshold": {"quantile": 1.5}}}},
            schema_path,
        )


def test_grpo_with_mara_trains_the_tiny_models(
    tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy
):
    why = "the tiny model's 8-token completions all reach the cap"
    mara = {"mara": {"enabled": True, "threshold": {"quantile": 0.5}, "truncated_completions": why}}
    metrics = run(tmp_path, shards, tiny_base, bbc_proxy, tiny_general_proxy, overrides=mara,
                  scale_rewards="none", num_generations=4)  # fmt: skip
    assert metrics["steps"] == 4
    history = pd.read_csv(tmp_path / "adapter" / "log_history.csv")
    steps = history.dropna(subset=["mara/anchored_frac"])
    assert len(steps) == 4
    # the median splits each group of four: at least half of every group is anchored
    assert (steps["mara/anchored_frac"] >= 0.5).all()
    # the bonus column is the augmentation: trl's reward is the raw reward plus it
    assert steps["reward"].to_numpy() == pytest.approx(
        (steps["mara/raw_reward"] + steps["rewards/mara_bonus/mean"]).to_numpy(), abs=1e-5
    )
    # anchored completions other than the anchor are less likely under the reference: bonus ≥ 0
    assert (steps["mara/bonus_anchored_mean"] >= 0).all()
    # the held-out evaluation scores the raw rewards only
    assert "mara_bonus" not in metrics["heldout"]


def test_only_the_reference_pass_is_recorded(tmp_path, tiny_base):
    """trl calls the same log-prob method for the old policy (adapter on) and the reference
    (adapter disabled); MARA must take the reference one, summed over the completion mask."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig
    from trl.trainer.utils import use_adapter

    from stylemerge.grpo.mara import make_trainer_class, mara_bonus
    from stylemerge.models.reference import load_model, load_tokenizer

    def constant(prompts, completions, **kwargs):
        return [0.0] * len(completions)

    tokenizer = load_tokenizer(tiny_base)
    trainer = make_trainer_class()(
        model=load_model(tiny_base),
        reward_funcs=[constant, mara_bonus],
        args=GRPOConfig(
            output_dir=str(tmp_path),
            max_steps=1,
            per_device_train_batch_size=2,
            num_generations=2,
            beta=0.04,
            scale_rewards="none",
            mask_truncated_completions=True,
            use_cpu=True,
            bf16=False,
            report_to=[],
        ),
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
        mara={"threshold": 0.0},
    )
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 10, 11, 12]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 3)
        assert trainer._ref_sequence is None  # the adapter is on: the policy, not the reference
        with use_adapter(trainer.model, adapter_name=None):
            trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 3)
        logits = load_model(tiny_base)(input_ids=ids, attention_mask=mask).logits
    recorded, valid = trainer._ref_sequence
    logps = torch.log_softmax(logits[:, -4:-1].float(), -1).gather(2, ids[:, -3:, None])[..., 0]
    expected = (logps * mask[:, -3:]).sum(1)
    assert torch.allclose(recorded, expected, atol=1e-4)
    assert valid.tolist() == [True, True]


@pytest.mark.parametrize(
    ("quantile", "generations", "anchored"), [(0.5, 4, 2), (0.75, 4, 1), (0.75, 8, 2), (0.5, 2, 1)]
)
def test_a_quantile_that_anchors_one_completion_is_refused(quantile, generations, anchored):
    """A group's best completion alone is its own anchor: MARA would be plain GRPO (seen on
    the smol tier: quantile 0.75 of 4 generations trained exactly the plain adapter)."""
    rewards = torch.arange(float(generations))
    out = augment(rewards, -rewards, generations, BETA, quantile=quantile)
    assert int(out.anchored.sum()) == anchored
    trainer = {**SOUND, "num_generations": generations}
    mara = {"enabled": True, "threshold": {"quantile": quantile}}
    problems = mara_config_errors({"mara": mara, "trainer": trainer})
    assert bool(problems) == (anchored < 2)
    if problems:
        assert "'grpo.mara.threshold'" in problems[0] and "change nothing" in problems[0]
