"""Pretrain a tiny causal LM on all train shards (the embedded default only: paper scale
references pretrained hub models)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from stylemerge.core.files import atomic_path, write_json
from stylemerge.core.job import JobSettings, set_seed
from stylemerge.core.tracking import tracked
from stylemerge.core.training import fit_causal_lm, pack
from stylemerge.data.shards import shard_texts
from stylemerge.models.reference import build_tiny_model, load_tokenizer

log = logging.getLogger(__name__)


@tracked()  # the job's run in report_to's trackers, its result logged
def pretrain_tiny_model(
    job: JobSettings,
    tokenizer_dir: str | Path,
    train_shards: Iterable[str | Path],
    heldout_shards: Iterable[str | Path],
    out_dir: str | Path,
    tiny: Mapping,
    settings: Mapping,
) -> dict:
    """Build the tiny model, pretrain it, save it (safetensors + tokenizer + metrics.json)."""

    job = job.apply()
    tokenizer = load_tokenizer(tokenizer_dir)
    seq_len = settings["seq_len"]
    train = pack(tokenizer, shard_texts(train_shards), seq_len)
    heldout = pack(tokenizer, shard_texts(heldout_shards), seq_len)[: settings["eval_blocks"]]
    log.info("train blocks %d, held-out blocks %d, seq_len %d", len(train), len(heldout), seq_len)

    set_seed(job.seed)
    model = build_tiny_model(tokenizer, tiny)
    fit = fit_causal_lm(
        model, train, {"heldout": heldout}, settings, job, what=f"pretrain {Path(out_dir).name}"
    )
    metrics = {
        "architecture": tiny["architecture"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_blocks": len(train),
        "heldout_blocks": len(heldout),
        "tokens_seen": fit["tokens_seen"],
        "heldout_loss_untrained": fit["heldout_loss_before"]["heldout"],
        "heldout_loss": fit["heldout_loss_after"]["heldout"],
        "uniform_loss": math.log(len(tokenizer)),
        "train_loss": fit["train_loss"],
        "threads": job.threads,
        "log_history": fit["log_history"],
        "settings": dict(settings),
        "tiny": dict(tiny),
        "provenance": dict(job.provenance),
    }
    log.info(
        "held-out loss %.3f -> %.3f (uniform %.3f)",
        metrics["heldout_loss_untrained"],
        metrics["heldout_loss"],
        metrics["uniform_loss"],
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    return metrics
