"""Pretrain a tiny causal LM on the train shards with transformers' Trainer.

Only the embedded default does this (paper scale references pretrained hub models).  Texts
are joined with EOS and cut into fixed blocks; the held-out loss is measured before and after
training so that a model which learned nothing is visible in its metrics.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from stylemerge.io import atomic_path, write_json
from stylemerge.models import build_tiny_model, load_tokenizer
from stylemerge.runtime import resolve_device, use_threads
from stylemerge.shards import shard_texts

log = logging.getLogger(__name__)


class Blocks(torch.utils.data.Dataset):
    """Fixed-length token blocks for causal-LM training (labels = inputs)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        ids = self.blocks[index]
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


def pack(tokenizer, texts: Iterable[str], seq_len: int) -> torch.Tensor:
    """Token ids of all texts, each followed by EOS, cut into ``seq_len`` blocks (the
    remainder is dropped)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"only {len(ids)} tokens: fewer than one block of seq_len={seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value}: training diverged")
    return value


def pretrain_tiny_model(
    tokenizer_dir: str | Path,
    train_shards: Iterable[str | Path],
    heldout_shards: Iterable[str | Path],
    out_dir: str | Path,
    tiny: Mapping,
    settings: Mapping,
    seed: int,
    device: str = "cpu",
    threads: int = 1,
    provenance: Mapping | None = None,
) -> dict:
    """Build the tiny model, pretrain it, save it (safetensors + tokenizer + metrics.json)."""
    from transformers import Trainer, TrainingArguments, set_seed

    threads = use_threads(threads)
    device = resolve_device(device)
    tokenizer = load_tokenizer(tokenizer_dir)
    seq_len = settings["seq_len"]
    train = pack(tokenizer, shard_texts(train_shards), seq_len)
    heldout = pack(tokenizer, shard_texts(heldout_shards), seq_len)[: settings["eval_blocks"]]
    log.info("train blocks %d, held-out blocks %d, seq_len %d", len(train), len(heldout), seq_len)

    set_seed(seed)
    model = build_tiny_model(tokenizer, tiny)
    with tempfile.TemporaryDirectory(prefix="pretrain-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=settings["steps"],
            per_device_train_batch_size=settings["batch_size"],
            per_device_eval_batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            lr_scheduler_type="cosine",
            warmup_steps=settings["warmup_steps"],
            weight_decay=settings["weight_decay"],
            logging_steps=max(1, settings["steps"] // 20),
            save_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=Blocks(train), eval_dataset=Blocks(heldout)
        )
        loss_before = _finite(trainer.evaluate()["eval_loss"], "held-out loss before training")
        result = trainer.train()
        _finite(result.training_loss, "training loss")
        loss_after = _finite(trainer.evaluate()["eval_loss"], "held-out loss after training")

    metrics = {
        "architecture": tiny["architecture"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_blocks": len(train),
        "heldout_blocks": len(heldout),
        "tokens_seen": settings["steps"] * settings["batch_size"] * seq_len,
        "heldout_loss_untrained": loss_before,
        "heldout_loss": loss_after,
        "uniform_loss": math.log(len(tokenizer)),
        "train_loss": result.training_loss,
        "threads": threads,
        "log_history": trainer.state.log_history,
        "settings": dict(settings),
        "tiny": dict(tiny),
        "provenance": dict(provenance or {}),
    }
    log.info(
        "held-out loss %.3f -> %.3f (uniform %.3f)",
        loss_before,
        loss_after,
        metrics["uniform_loss"],
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    return metrics
