"""MARA: Mode Anchored Reward Augmentation (GX-Chen, Prakash, Guo, Fergus, Ranganath, "KL-
Regularized Reinforcement Learning is Designed to Mode Collapse", arXiv 2510.20817).

The optimum of KL-regularised RL is π*(y) ∝ π_ref(y)·exp(r(y)/β): among completions of equal
reward it keeps π_ref's ratios, so a few reference-likely completions take the mass (mode
collapse by construction).  MARA changes the reward of every completion y that clears a
threshold τ to

    r̄(y) = r(z) + β·(log π_ref(z) − log π_ref(y)),

z being the high-reward completion with the highest reference log-probability (the anchor).
Then π_ref(y)·exp(r̄(y)/β) = π_ref(z)·exp(r(z)/β) for every such y: the target puts equal
mass on all high-reward completions.  Completions below τ keep their reward.

Within GRPO the completions of one prompt form a group, and the anchoring is done per group.
τ is a fixed value when the reward range is known (``threshold``), else a quantile of the
group's sampled rewards (``quantile``).

:class:`MaraGRPOTrainer` adds this to trl's GRPOTrainer without copying its long
``_generate_and_score_completions``: trl computes the reference log-probabilities (the base
with the adapter disabled) before it calls ``_calculate_rewards``; the subclass records the
reference pass and adds r̄ − r as one more reward column (``mara_bonus``, weight 1), so trl's
own weighted sum, advantages, KL and logging run on the augmented reward.  Requirements the
config checks (see :func:`mara_config_errors`): β > 0 (β = 0 skips the reference pass),
``scale_rewards: none`` (dividing by the group's std changes the target to
π_ref^(1−1/σ) and loses the equal-mass property) and ``multi_objective_aggregation:
sum_then_normalize`` (the bonus must be added to the weighted sum, not normalised apart).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stylemerge.grpo.trl_compat import trl_default

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BONUS = "mara_bonus"


@dataclass(frozen=True)
class Augmented:
    rewards: torch.Tensor  # r̄, same shape as the raw rewards
    anchored: torch.Tensor  # bool: the completion cleared τ (its reward was replaced)
    anchors: torch.Tensor  # bool: the completion is its group's anchor z


def augment(
    rewards: torch.Tensor,
    ref_logps: torch.Tensor,
    group_size: int,
    beta: float,
    threshold: float | None = None,
    quantile: float | None = None,
    valid: torch.Tensor | None = None,
) -> Augmented:
    """MARA's augmented rewards for consecutive groups of ``group_size`` completions.

    ``rewards``: raw total reward per completion (NaN: unscorable); ``ref_logps``: the
    completion's sequence log-probability under the reference policy; ``valid``: False for
    completions with nothing to score (an empty mask, e.g. ``mask_truncated_completions``),
    which are never anchored.  Exactly one of ``threshold`` and ``quantile`` is given.
    """
    import torch

    if (threshold is None) == (quantile is None):
        raise ValueError("MARA needs exactly one of threshold and quantile")
    if beta <= 0:
        raise ValueError(f"MARA needs beta > 0 (got {beta}): r̄ is defined through β")
    if rewards.shape != ref_logps.shape or rewards.dim() != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and ref_logps {tuple(ref_logps.shape)}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} completions are no whole groups of {group_size}")
    r = rewards.view(-1, group_size).double()
    ref = ref_logps.view(-1, group_size).double().to(r.device)
    ok = torch.isfinite(r) & torch.isfinite(ref)
    if valid is not None:
        ok &= valid.view(-1, group_size).to(r.device)
    if threshold is not None:
        tau = torch.full((r.shape[0], 1), float(threshold), dtype=r.dtype, device=r.device)
    else:
        tau = torch.nanquantile(r.masked_fill(~ok, math.nan), quantile, dim=1, keepdim=True)
    high = ok & (r >= tau)  # NaN τ (a group without a scorable completion): nothing is high
    anchor_ref = ref.masked_fill(~high, -math.inf)
    anchor = anchor_ref.argmax(dim=1, keepdim=True)
    r_z = r.gather(1, anchor)
    ref_z = ref.gather(1, anchor)
    augmented = torch.where(high, r_z + beta * (ref_z - ref), r)
    anchors = torch.zeros_like(high).scatter_(1, anchor, True) & high
    return Augmented(
        rewards=augmented.view(-1).to(rewards.dtype),
        anchored=high.view(-1),
        anchors=anchors.view(-1),
    )


def mara_config_errors(grpo: Mapping, where: str = "grpo") -> list[str]:
    """Combinations of grpo settings under which MARA cannot hold (empty when it is off)."""
    mara = grpo.get("mara") or {}
    if not mara.get("enabled"):
        return []
    trainer = grpo.get("trainer") or {}
    problems = []
    threshold = mara.get("threshold", {"quantile": 0.5})
    generations = trainer.get("num_generations", trl_default("num_generations"))
    if (
        isinstance(threshold, Mapping)
        and anchored_per_group(threshold["quantile"], generations) < 2
    ):
        problems.append(
            f"config key '{where}.mara.threshold': the {threshold['quantile']} quantile of "
            f"{generations} rewards is cleared by only the best completion of a group, which is "
            "its own anchor, so MARA would change nothing; lower the quantile or raise "
            "trainer.num_generations"
        )
    if not trainer.get("beta", trl_default("beta")) > 0:
        problems.append(
            f"config key '{where}.trainer.beta': MARA needs beta > 0 (with beta 0 trl skips "
            "the reference pass, and r̄ = r(z) + beta·Δlog π_ref is defined through beta)"
        )
    if trainer.get("scale_rewards", trl_default("scale_rewards")) not in ("none", False):
        problems.append(
            f"config key '{where}.trainer.scale_rewards': MARA needs 'none' (dividing by the "
            "group's reward std changes the KL-regularised target and loses the equal mass "
            "MARA gives high-reward completions); trl's default is 'group'"
        )
    aggregation = trainer.get(
        "multi_objective_aggregation", trl_default("multi_objective_aggregation")
    )
    if aggregation != "sum_then_normalize":
        problems.append(
            f"config key '{where}.trainer.multi_objective_aggregation': MARA needs "
            "'sum_then_normalize' (its bonus is added to the weighted reward sum)"
        )
    problems += _target_errors(
        trainer, where, allow_truncated=bool(mara.get("truncated_completions"))
    )
    return problems


# MARA's target is pi_ref * exp(r / beta): the policy must be pulled towards a fixed reference
# by the reverse KL, and the anchors' log pi_ref are sums over whole completions scored at the
# sampling temperature 1.  trl's setting, what MARA needs, and why, for each (trl's defaults
# are read from trl in the tests).
TARGET_PRECONDITIONS = (
    (
        "use_bias_correction_kl",
        True,
        "the KL term's gradient is then the reverse KL's, the divergence MARA's target "
        "pi_ref * exp(r / beta) minimises (trl's default)",
    ),
    (
        "importance_sampling_level",
        "token",
        "trl's bias-corrected KL is the reverse KL's gradient only per token",
    ),
    (
        "temperature",
        1.0,
        "trl scores the reference's log-probs at the sampling temperature; MARA's anchors "
        "compare pi_ref itself",
    ),
    (
        "sync_ref_model",
        False,
        "MARA anchors on a fixed reference; a synced one moves the target every few steps",
    ),
    (
        "mask_truncated_completions",
        True,
        "MARA compares sequence sums of log pi_ref; a completion cut at max_completion_length "
        "has a partial sum, which favours short anchors (raise max_completion_length so that "
        "completions end)",
    ),
)


def _target_errors(trainer: Mapping, where: str, allow_truncated: bool) -> list[str]:
    problems = []
    for key, needed, why in TARGET_PRECONDITIONS:
        if key == "mask_truncated_completions" and allow_truncated:
            continue  # the config says why it is sound (mara.truncated_completions)
        value = trainer.get(key, trl_default(key))
        if value != needed:
            if key == "mask_truncated_completions":
                why += f", or say in '{where}.mara.truncated_completions' why it is sound here"
            problems.append(
                f"config key '{where}.trainer.{key}': MARA needs {needed!r}, got {value!r}: {why}"
            )
    return problems


def anchored_per_group(quantile: float, generations: int) -> int:
    """Completions (of distinct rewards) that clear a group's ``quantile``: torch.quantile
    interpolates at position q·(G − 1) of the sorted rewards."""
    return generations - math.ceil(quantile * (generations - 1))


def threshold_args(threshold: float | Mapping) -> dict:
    """The config's ``mara.threshold`` (a number, or ``{quantile: q}``) as :func:`augment`'s
    keyword arguments."""
    if isinstance(threshold, Mapping):
        return {"threshold": None, "quantile": float(threshold["quantile"])}
    return {"threshold": float(threshold), "quantile": None}


def mara_bonus(prompts, completions, **kwargs) -> list[float]:
    """Placeholder column for the bonus r̄ − r: MaraGRPOTrainer fills it in after the other
    rewards are known.  Zero if it ever ran outside that trainer."""
    return [0.0] * len(completions)


def _adapters_disabled(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    return bool(layers) and all(layer.disable_adapters for layer in layers)


def make_trainer_class():
    """GRPOTrainer with MARA (built in a function: the config check imports this module
    without torch or trl)."""
    import torch
    from trl import GRPOTrainer

    class MaraGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose rewards are MARA-augmented; ``reward_funcs`` must end with
        :func:`mara_bonus` at weight 1."""

        def __init__(self, *args, mara: Mapping, **kwargs):
            super().__init__(*args, **kwargs)
            if self.reward_func_names[-1] != BONUS or float(self.reward_weights[-1]) != 1.0:
                raise ValueError(f"MARA needs {BONUS} as the last reward, weight 1")
            problems = mara_config_errors(
                {"mara": {"enabled": True, **mara}, "trainer": vars(self.args)}
            )
            if problems:
                raise ValueError("; ".join(problems))
            self.mara = dict(mara)
            self._ref_sequence = None

        def _is_reference_pass(self, model) -> bool:
            if self.ref_model is not None:
                return model is self.ref_model
            unwrapped = self.accelerator.unwrap_model(model)
            if "ref" in getattr(unwrapped, "peft_config", {}):  # retraining an adapter
                return unwrapped.active_adapter == "ref"
            return _adapters_disabled(unwrapped)

        def _get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        ):
            out = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
            if self._is_reference_pass(model):
                mask = attention_mask[:, -logits_to_keep:].to(out[0].dtype)
                self._ref_sequence = ((out[0] * mask).sum(dim=1), mask.sum(dim=1) > 0)
            return out

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(
                inputs, prompts, completions, completion_ids_list
            )
            if self._ref_sequence is None:
                raise RuntimeError(
                    "MARA: no reference log-probabilities for this generation batch (trl "
                    "computes them only when beta > 0; check the installed trl version)"
                )
            ref_logps, valid = (self.accelerator.gather(t) for t in self._ref_sequence)
            self._ref_sequence = None  # never reused for another batch
            mode = "train" if self.model.training else "eval"
            group = self.num_generations if mode == "train" else self.num_generations_eval
            weights = self.reward_weights.to(rewards_per_func.device)
            raw = (rewards_per_func[:, :-1] * weights[:-1]).nansum(dim=1)
            raw[torch.isnan(rewards_per_func[:, :-1]).all(dim=1)] = math.nan
            result = augment(
                raw,
                ref_logps.to(raw.device),
                group,
                self.beta,
                valid=valid.to(raw.device),
                **threshold_args(self.mara["threshold"]),
            )
            bonus = torch.nan_to_num(result.rewards - raw, nan=0.0)
            rewards_per_func[:, -1] = bonus
            metrics = self._metrics[mode]
            metrics["mara/raw_reward"].append(torch.nanmean(raw).item())
            metrics["mara/anchored_frac"].append(result.anchored.float().mean().item())
            if result.anchored.any():
                anchored_bonus = bonus[result.anchored]
                metrics["mara/bonus_anchored_mean"].append(anchored_bonus.mean().item())
                metrics["mara/bonus_anchored_std"].append(
                    anchored_bonus.std().item() if anchored_bonus.numel() > 1 else 0.0
                )
            return rewards_per_func

    return MaraGRPOTrainer
