"""Prompts cut from documents and batched sampling from a model: what GRPO (its held-out
evaluation) and the diversity measurement share.

:func:`prompt_windows` cuts prompts that are prefixes of real text, spread over every
document; :func:`sample_completions` draws K samples per prompt in batches, seeded, under
the job's precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from itertools import zip_longest

import torch

from stylemerge.core.precision import Autocast


def prompt_windows(
    tokenizer,
    texts: Sequence[str],
    prompt_tokens: int,
    per_document: int,
    limit: int,
    min_continuation: int = 8,
    documents: Sequence[str] | None = None,
) -> list[dict]:
    """Prompts cut from documents, ``{"prompt", "document"}`` each: up to ``per_document``
    windows of ``prompt_tokens`` tokens per document, spread over it, each followed by at
    least ``min_continuation`` tokens of real text (so the prompt is a prefix of something
    the domain wrote).  Windows are taken rank by rank (the first of every document, then
    the second, ...), so a ``limit`` keeps prompts of as many documents as it can rather
    than of the first few.  ``document`` is ``documents[i]`` (default: the index ``i``) of
    the text it was cut from: the unit that intervals over prompts resample."""
    per_text: list[list[dict]] = []
    for number, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        room = len(ids) - prompt_tokens - min_continuation
        windows: list[dict] = []
        if room >= 0:
            starts = sorted(
                {round(room * k / max(per_document - 1, 1)) for k in range(per_document)}
            )
            document = str(number) if documents is None else str(documents[number])
            for start in starts[:per_document]:
                prompt = tokenizer.decode(ids[start : start + prompt_tokens])
                if prompt.strip():
                    windows.append({"prompt": prompt, "document": document})
        per_text.append(windows)
    ranked = [w for rank in zip_longest(*per_text) for w in rank if w is not None]
    return ranked[:limit]


def make_prompts(
    tokenizer, texts, prompt_tokens: int, per_document: int, limit: int, min_continuation: int = 8
) -> list[str]:
    """The prompts of :func:`prompt_windows`, without their documents."""
    windows = prompt_windows(tokenizer, texts, prompt_tokens, per_document, limit, min_continuation)
    return [w["prompt"] for w in windows]


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int = 16,
    autocast: Autocast = contextlib.nullcontext,
    top_k: int = 0,
    progress: str | None = None,
) -> list[list[str]]:
    """``samples`` completions per prompt, batched (left padding, num_return_sequences), the
    forward passes under ``autocast`` (the job's precision).  ``top_k`` 0 cuts nothing
    (transformers would otherwise apply the model's generation config, or its own 50).
    ``progress``: what the job's log calls this loop in its progress lines (prompts done)."""
    from stylemerge.core.progress import Progress

    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    out: list[list[str]] = []
    counter = Progress(progress, len(prompts), unit="prompt") if progress else None
    try:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            with autocast():
                generated = model.generate(
                    **enc.to(device),
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=top_k,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=samples,
                    pad_token_id=tokenizer.pad_token_id,
                )
            texts = tokenizer.batch_decode(
                generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            out.extend(texts[i * samples : (i + 1) * samples] for i in range(len(batch)))
            if counter is not None:
                counter.update(len(out))
    finally:
        tokenizer.padding_side = side
    return out
