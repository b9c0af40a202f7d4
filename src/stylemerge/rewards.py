"""Reward functions for GRPO, in a registry selected by name in config.

Each reward is a plain function with trl's signature ``(prompts, completions,
completion_ids, **kwargs) -> list[float]``.  The style rewards score text with proxy models
through :class:`ProxyScorer`, which re-tokenizes prompt and completion with the proxy's own
tokenizer (at paper scale the policy is Qwen3 and the proxies SmolLM2: different
vocabularies).  A reward never returns NaN: an empty or unscorable completion gets the
configured ``invalid`` value and a warning.  Any other non-finite value (a proxy whose logits
broke, a reward that misbehaves) stops the run with the GRPO step and the value
(:func:`finite`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence

import torch

log = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]


def as_text(item) -> str:
    """A prompt or completion as plain text (trl passes message lists for chat data)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and item and isinstance(item[-1], dict):
        return str(item[-1].get("content", ""))
    return ""


class ProxyScorer:
    """Mean per-token log-probability of a completion given its prompt under one causal LM.

    Batched, without gradients; remembers the last batch so that several rewards scoring the
    same completions in one GRPO step share one forward pass.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self._last: tuple[tuple, list[float]] | None = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _encode(self, prompt: str, completion: str) -> tuple[list[int], int]:
        if not completion.strip():  # blank text has nothing to score
            return [], 0
        ids_prompt = self.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
        ids_completion = self.tokenizer(completion, add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
        ids_completion = ids_completion[: self.max_length - 1]
        keep = self.max_length - len(ids_completion)
        ids_prompt = ids_prompt[-keep:] if keep > 0 else []
        return ids_prompt + ids_completion, len(ids_completion)

    @torch.no_grad()
    def mean_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One value per completion; NaN where the completion is blank or has no token to
        score."""
        key = (tuple(prompts), tuple(completions))
        if self._last is not None and self._last[0] == key:
            return list(self._last[1])
        scores: list[float] = []
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        pairs = [self._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            if width < 2:  # nothing to predict anywhere in this batch
                scores.extend(math.nan for _ in batch)
                continue
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (ids, n_completion) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, : len(ids)] = 1
                # score completion tokens that have a preceding token to predict them from
                first = max(len(ids) - n_completion, 1)
                target[row, first : len(ids)] = True
            input_ids, mask, target = (t.to(self.device) for t in (input_ids, mask, target))
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            token_logp = logp.gather(-1, input_ids[:, 1:, None])[..., 0]
            target = target[:, 1:]
            total = (token_logp * target).sum(-1)
            count = target.sum(-1)
            for t, n in zip(total.tolist(), count.tolist(), strict=True):
                if n and not math.isfinite(t):  # text to score, but the model's logits broke
                    name = getattr(self.model, "name_or_path", "") or type(self.model).__name__
                    raise FloatingPointError(
                        f"proxy {name}: log-probability is {t} on a completion of {n} tokens "
                        "(the proxy's logits are not finite)"
                    )
                scores.append(t / n if n else math.nan)
        self._last = (key, scores)
        return list(scores)


def _finite_or(values: Sequence[float], invalid: float, name: str) -> list[float]:
    out = []
    bad = 0
    for value in values:
        if math.isfinite(value):
            out.append(float(value))
        else:
            out.append(float(invalid))
            bad += 1
    if bad:
        log.warning(
            "%s: %d of %d completions were empty or unscorable; reward %s",
            name,
            bad,
            len(values),
            invalid,
        )
    return out


def _texts(prompts, completions) -> tuple[list[str], list[str]]:
    return [as_text(p) for p in prompts], [as_text(c) for c in completions]


def style_contrast(
    domain: ProxyScorer, general: ProxyScorer, invalid: float = -1.0, **_
) -> RewardFunc:
    """Domain proxy's mean log-prob minus the general proxy's: "sounds like this domain"."""

    def style_contrast(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        p, c = _texts(prompts, completions)
        mine = domain.mean_logprobs(p, c)
        theirs = general.mean_logprobs(p, c)
        return _finite_or(
            [a - b for a, b in zip(mine, theirs, strict=True)], invalid, "style_contrast"
        )

    return style_contrast


def fluency_floor(general: ProxyScorer, floor: float, invalid: float = -1.0, **_) -> RewardFunc:
    """0 while the general proxy finds the text fluent; linear penalty below ``floor``.

    Guards the contrast reward against being gamed by text that both proxies find
    unlikely (the policy otherwise drifts to byte soup)."""

    def fluency_floor(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        values = general.mean_logprobs(*_texts(prompts, completions))
        penalties = [min(0.0, v - floor) if math.isfinite(v) else math.nan for v in values]
        return _finite_or(penalties, invalid, "fluency_floor")

    return fluency_floor


def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that repeat an earlier one (0: none repeat)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def repetition(n: int = 3, invalid: float = -1.0, **_) -> RewardFunc:
    """Minus the share of repeated word n-grams: loops and stuck tokens cost reward."""

    def repetition(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        texts = [as_text(c) for c in completions]
        values = [-repeated_ngram_fraction(t, n) if t.strip() else math.nan for t in texts]
        return _finite_or(values, invalid, "repetition")

    return repetition


# name -> factory(domain=ProxyScorer, general=ProxyScorer, **params) -> reward function
REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "style_contrast": style_contrast,
    "fluency_floor": fluency_floor,
    "repetition": repetition,
}


def build_rewards(
    specs: Mapping[str, Mapping], domain: ProxyScorer, general: ProxyScorer
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and their weights from ``{name: {weight, **params}}``."""
    funcs, weights = [], []
    for name, spec in specs.items():
        if name not in REWARDS:
            raise KeyError(f"unknown reward {name!r} (known: {', '.join(REWARDS)})")
        params = {k: v for k, v in spec.items() if k != "weight"}
        funcs.append(finite(REWARDS[name](domain=domain, general=general, **params)))
        weights.append(float(spec.get("weight", 1.0)))
    return funcs, weights


def finite(func: RewardFunc) -> RewardFunc:
    """``func``, stopping the run on a NaN, infinite or missing reward with the GRPO step and
    the value.  trl would take such a reward as "not applicable" (it averages with nanmean
    and sums with nansum) and train on without it."""

    @functools.wraps(func)
    def checked(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        state = kwargs.get("trainer_state")
        where = (
            f"at step {state.global_step}"
            if state is not None
            else "outside training (held-out evaluation)"
        )
        try:
            values = func(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs
            )
        except FloatingPointError as err:
            raise FloatingPointError(f"reward {func.__name__} {where}: {err}") from err
        bad = [
            (i, v)
            for i, v in enumerate(values)
            if not isinstance(v, int | float) or not math.isfinite(v)
        ]
        if bad:
            index, value = bad[0]
            raise FloatingPointError(
                f"reward {func.__name__} is {value} {where} (completion {index}; "
                f"{len(bad)} of {len(values)} completions not finite): training stopped"
            )
        return values

    return checked
