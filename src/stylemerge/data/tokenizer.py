"""Byte-level BPE tokenizer for the tiny models, with Qwen3-style think tags.

``<think>`` and ``</think>`` are added tokens that are *not* special, as in Qwen3: trl and
lm-eval decode with ``skip_special_tokens=True``, and the tags must survive that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from stylemerge.core.files import atomic_path, write_json
from stylemerge.data.shards import read_shard, shard_texts

EOS = "<|endoftext|>"
THINK_TOKENS = ("<think>", "</think>")


def train_tokenizer(
    train_shards: Iterable[str | Path],
    out_dir: str | Path,
    vocab_size: int,
    min_frequency: int = 2,
    think_tokens: bool = True,
    model_max_length: int = 512,
    heldout_shards: Iterable[str | Path] = (),
    provenance: Mapping | None = None,
):
    """Train on the train shards' texts and save a Hugging Face tokenizer to ``out_dir``,
    with ``metrics.json``: tokens and characters per domain and split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    train_shards = [Path(p) for p in train_shards]
    bpe.train_from_iterator(shard_texts(train_shards), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, pad_token=EOS, model_max_length=model_max_length
    )
    if think_tokens:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    groups = {f"{p.parent.name}/{p.stem}": [p] for p in [*train_shards, *map(Path, heldout_shards)]}
    metrics = {
        "vocab_size": len(tokenizer),
        "think_token_ids": {t: tokenizer.convert_tokens_to_ids(t) for t in THINK_TOKENS}
        if think_tokens
        else {},
        "settings": {"vocab_size": vocab_size, "min_frequency": min_frequency},
        "shards": count_tokens(tokenizer, groups),
        "provenance": dict(provenance or {}),
    }
    with atomic_path(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    return tokenizer


def count_tokens(tokenizer, shards: Mapping[str, Iterable[str | Path]]) -> dict:
    """Tokens and characters per named group of shards (e.g. per domain and split)."""
    counts = {}
    for name, paths in shards.items():
        tokens = chars = 0
        for path in paths:
            for record in read_shard(path):
                tokens += len(
                    tokenizer(record["text"], add_special_tokens=False, verbose=False)["input_ids"]
                )
                chars += len(record["text"])
        counts[name] = {
            "tokens": tokens,
            "characters": chars,
            "chars_per_token": round(chars / tokens, 3) if tokens else None,
        }
    return counts
