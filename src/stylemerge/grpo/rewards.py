"""Reward functions for GRPO, in a registry selected by name in config.

Each reward is a plain function with trl's signature ``(prompts, completions,
completion_ids, **kwargs) -> list[float]``.  The style rewards score text with proxy models
through :class:`ProxyScorer`, which re-tokenizes prompt and completion with the proxy's own
tokenizer (at paper scale the policy is Qwen3 and the proxies SmolLM2: different
vocabularies).  A reward never returns NaN: an empty or unscorable completion gets the
configured ``invalid`` value and a warning.  Any other non-finite value (a proxy whose logits
broke, a reward that misbehaves) stops the run with the GRPO step and the value
(:func:`stop_on_nonfinite`).  ``char_profile`` compares the completion's character classes with the
domain's (:class:`CharProfile`, built from its train shard) instead of using a proxy.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from stylemerge.core.precision import Autocast

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

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        max_length: int = 512,
        autocast: Autocast = contextlib.nullcontext,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.autocast = autocast  # the job's precision (stylemerge.core.precision.autocast)
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._last: tuple[tuple, list[float]] | None = None

    def _keep(self, positions: int) -> dict:
        """The forward's argument that keeps the last ``positions`` logits, where it has one."""
        return {"logits_to_keep": positions} if self._takes_logits_to_keep else {}

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

    def _batches(self, prompts: Sequence[str], completions: Sequence[str]):
        """Right-padded batches of prompt + completion ids: ``(pairs, input_ids, mask,
        target)``, ``target`` marking the completion tokens that have a preceding token to
        predict them from."""
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        pairs = [self._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (ids, n_completion) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, : len(ids)] = 1
                target[row, max(len(ids) - n_completion, 1) : len(ids)] = True
            yield batch, input_ids, mask, target

    @torch.no_grad()
    def mean_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One value per completion; NaN where the completion is blank or has no token to
        score."""
        key = (tuple(prompts), tuple(completions))
        if self._last is not None and self._last[0] == key:
            return list(self._last[1])
        scores: list[float] = []
        for batch, input_ids, mask, target in self._batches(prompts, completions):
            width = input_ids.shape[1]
            if width < 2:  # nothing to predict anywhere in this batch
                scores.extend(math.nan for _ in batch)
                continue
            input_ids, mask, target = (t.to(self.device) for t in (input_ids, mask, target))
            # logits only from the earliest scored token's predecessor on (the prompts' rows
            # are skipped in the vocabulary projection); a model without logits_to_keep
            # returns every position's
            earliest = int(target.int().argmax(-1)[target.any(-1)].min())
            with self.autocast():
                logits = self.model(
                    input_ids=input_ids, attention_mask=mask, **self._keep(width - earliest + 1)
                ).logits
            offset = width - logits.shape[1] + 1  # logits[:, i] predicts token offset + i
            target = target[:, 1:]
            kept = target[:, offset - 1 :]
            # the vocabulary's softmax at the scored positions only: each row's is its own, so
            # the values are the whole tensor's, without the prompts' and padding's rows
            rows = logits[:, :-1][kept].float()
            picked = torch.log_softmax(rows, dim=-1).gather(-1, input_ids[:, offset:][kept, None])
            # summed over the whole row, as over every position: the same order of additions
            token_logp = torch.zeros(target.shape, dtype=rows.dtype, device=rows.device)
            token_logp[target] = picked[:, 0]
            total = token_logp.sum(-1)
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


# Character classes of a text's profile, in this order.
CHAR_CLASSES = ("letter", "digit", "space", "punct", "other")


@functools.lru_cache(maxsize=4096)
def char_class(ch: str) -> int:
    """Index in :data:`CHAR_CLASSES` of one character: letters (Unicode L*), digits and
    other numerals (N*), whitespace (including newlines and tabs), punctuation and symbols
    (P*, S*: brackets, operators, ``#``, ``$``), anything else (controls, marks, unassigned)."""
    if ch.isspace():
        return 2
    major = unicodedata.category(ch)[0]
    return {"L": 0, "N": 1, "P": 3, "S": 3}.get(major, 4)


def char_counts(text: str) -> list[int]:
    """Characters of ``text`` per class of :data:`CHAR_CLASSES`."""
    counts = [0] * len(CHAR_CLASSES)
    for ch, n in Counter(text).items():
        counts[char_class(ch)] += n
    return counts


def _fractions(counts: Sequence[int]) -> tuple[float, ...] | None:
    total = sum(counts)
    return tuple(c / total for c in counts) if total else None


def digit_punct_fraction(text: str) -> float:
    """Share of the text's characters that are digits, punctuation or symbols (NaN for
    blank text): the runs a proxy-gaming policy drifts to."""
    if not text.strip():
        return math.nan
    counts = char_counts(text)
    return (counts[1] + counts[3]) / sum(counts)


@dataclass(frozen=True)
class CharProfile:
    """A domain's character-class distribution (:data:`CHAR_CLASSES`), pooled over its
    documents; the reference that completions are compared with."""

    fractions: tuple[float, ...]

    def __post_init__(self):
        if len(self.fractions) != len(CHAR_CLASSES) or not math.isclose(
            sum(self.fractions), 1.0, abs_tol=1e-6
        ):
            raise ValueError(f"a character profile is {len(CHAR_CLASSES)} fractions summing to 1")

    @classmethod
    def of_texts(cls, texts: Iterable[str]) -> CharProfile:
        counts = [0] * len(CHAR_CLASSES)
        for text in texts:
            counts = [a + b for a, b in zip(counts, char_counts(text), strict=True)]
        fractions = _fractions(counts)
        if fractions is None:
            raise ValueError("no text to build a character profile from")
        return cls(fractions)

    def distance(self, text: str) -> float:
        """Total variation distance (0: same mix of classes, 1: no class in common) between
        the text's character classes and the profile; NaN for blank text."""
        fractions = _fractions(char_counts(text)) if text.strip() else None
        if fractions is None:
            return math.nan
        return 0.5 * sum(abs(a - b) for a, b in zip(fractions, self.fractions, strict=True))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(CHAR_CLASSES, self.fractions, strict=True))


def char_profile(
    profile: CharProfile | None, tolerance: float = 0.2, invalid: float = -1.0, **_
) -> RewardFunc:
    """0 while the completion's character classes stay within ``tolerance`` (total variation
    distance) of the domain's profile; minus the excess beyond it.

    Guards the contrast reward against the drift to digit-and-punctuation runs that a
    domain proxy can like more than the general proxy (code domains); the profile is that
    of the domain's train shard."""
    if profile is None:
        raise ValueError(
            "reward char_profile needs the domain's character profile (build_rewards(..., "
            "profile=CharProfile.of_texts(train texts)))"
        )

    def char_profile(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        distances = [profile.distance(as_text(c)) for c in completions]
        penalties = [min(0.0, tolerance - d) if math.isfinite(d) else math.nan for d in distances]
        return _finite_or(penalties, invalid, "char_profile")

    return char_profile


# name -> factory(domain=ProxyScorer, general=ProxyScorer, profile=CharProfile, **params)
# -> reward function
REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "style_contrast": style_contrast,
    "fluency_floor": fluency_floor,
    "repetition": repetition,
    "char_profile": char_profile,
}


def build_rewards(
    specs: Mapping[str, Mapping],
    domain: ProxyScorer,
    general: ProxyScorer,
    profile: CharProfile | None = None,
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and their weights from ``{name: {weight, **params}}``.

    ``domain`` and ``general`` are the proxies' scorers, ``profile`` the domain's character
    profile (from its train shard); each reward takes what it uses of them."""
    funcs, weights = [], []
    for name, spec in specs.items():
        if name not in REWARDS:
            raise KeyError(f"unknown reward {name!r} (known: {', '.join(REWARDS)})")
        params = {k: v for k, v in spec.items() if k != "weight"}
        factory = REWARDS[name]
        funcs.append(
            stop_on_nonfinite(factory(domain=domain, general=general, profile=profile, **params))
        )
        weights.append(float(spec.get("weight", 1.0)))
    return funcs, weights


def stop_on_nonfinite(func: RewardFunc) -> RewardFunc:
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
