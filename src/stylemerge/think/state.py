"""The think stage's state and what it records: the prepared model, the encoded traces and
the training loop's state that :mod:`stylemerge.think.optimize` passes from step to step; from
them, after training, the check that nothing but the think rows changed and ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stylemerge.core.job import JobSettings
from stylemerge.data.tokenizer import THINK_TOKENS


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


@dataclass
class Setup:
    """The model made ready to train its think rows, and what the checks and metrics need."""

    model: Any
    tokenizer: Any
    device: str
    pad_id: int
    ids: list[int]  # of <think> and </think>
    added: bool  # the tags were added to the tokenizer here (their rows: the mean)
    save_dtype: torch.dtype  # the checkpoint's own
    vocab_before: int
    rows_before: int
    loaded: dict[str, torch.Tensor]  # the loaded embeddings, on the CPU
    before: dict[str, torch.Tensor]  # every parameter once added rows were set, on the CPU
    tied: bool
    trained: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Adam
    grad_dtypes: set[str]  # of every gradient the rows got (metrics: precision)


@dataclass
class Traces:
    """The traces as token ids, cut to ``max_length``; traces per step and per pass."""

    train: list[list[int]]
    heldout: list[list[int]]
    truncated: dict[str, int]  # traces cut, per split
    batch_size: int
    micro: int  # traces per forward/backward pass (the optimiser step sees batch_size)


@dataclass
class Loop:
    """The training loop's state: what a row checkpoint saves and a resumed run restores."""

    steps: int
    generator: torch.Generator  # draws the data order
    started: float
    order: list[int] = field(default_factory=list)  # trace indices still to come
    history: list[dict] = field(default_factory=list)
    first: int = 1  # the first step this run takes
    resume: str | None = None  # the checkpoint resumed from
    checkpoint_dir: Path | None = None
    seconds: float = 0.0  # the loop's wall time, this run's


@dataclass
class Changes:
    """The largest absolute change of each parameter: the rows that had to stay the same
    (all 0.0, checked) and the think rows."""

    frozen: dict[str, float]  # every parameter but the think rows
    think: dict[str, list[float]]  # per trained tensor, per think row
    preexisting: dict[str, float]  # the loaded model's rows, but the tags', against it


def precision_record(setup: Setup, job: JobSettings, settings: Mapping, micro: int) -> dict:
    """What the rows were trained in, whatever the forward pass computed in."""
    moments = {
        dtype_name(v.dtype)
        for state in setup.optimizer.state.values()
        for k, v in state.items()
        if k != "step"
    }
    return {
        "autocast": "bfloat16" if job.precision == "bf16" else None,
        "trained_rows": sorted({dtype_name(p.dtype) for p in setup.trained.values()}),
        "gradients": sorted(setup.grad_dtypes),
        "adam_moments": sorted(moments),
        "gradient_checkpointing": bool(settings.get("gradient_checkpointing")),
        "micro_batch_size": micro,
    }


def check_unchanged(setup: Setup) -> Changes:
    """The largest change of every parameter; an error unless all but the think rows are
    bit-identical to the copies taken before training (pre-existing embedding rows: to the
    loaded model's) and tied embeddings still one tensor."""
    model, ids, trained = setup.model, setup.ids, setup.trained
    frozen, think_change = {}, {}
    for name, param in model.named_parameters():
        diff = (param.detach().cpu() - setup.before[name]).abs()
        if name in trained:
            think_change[name] = diff[ids].amax(dim=1).tolist()
            diff[ids] = 0.0
        frozen[name] = diff.max().item()
    changed = {name: value for name, value in frozen.items() if value != 0.0}
    if changed:
        raise RuntimeError(f"parameters other than the think rows changed: {changed}")
    preexisting = {}
    for name, old in setup.loaded.items():
        keep = torch.ones(setup.rows_before, dtype=torch.bool)
        keep[[i for i in ids if i < setup.rows_before]] = False
        final = trained[name].detach()[: setup.rows_before].cpu()
        preexisting[name] = (final[keep] - old[keep].float()).abs().max().item()
    if any(value != 0.0 for value in preexisting.values()):
        raise RuntimeError(f"pre-existing embedding rows changed: {preexisting}")
    output, embed = model.get_output_embeddings, model.get_input_embeddings
    if setup.tied and output().weight is not embed().weight:
        raise RuntimeError("the tied input and output embeddings came apart during training")
    return Changes(frozen, think_change, preexisting)


def stage_metrics(
    job: JobSettings,
    settings: Mapping,
    traces: Mapping,
    setup: Setup,
    data: Traces,
    loop: Loop,
    changes: Changes,
    precision: dict,
    ce_before: dict,
    ce_after: dict,
) -> dict:
    """``metrics.json``: the tags, the vocabulary and rows before and after, what trained and
    what changed, the held-out CE before and after, and the run."""
    ids, tokenizer = setup.ids, setup.tokenizer
    return {
        "think_tokens": dict(zip(THINK_TOKENS, ids, strict=True)),
        "think_tokens_special": [t in tokenizer.all_special_tokens for t in THINK_TOKENS],
        "think_tokens_added": setup.added,
        # the tags' rows before training: the checkpoint's own, or the mean of its token rows
        "think_rows_init": "mean" if setup.added else "existing",
        "vocab_size_before": setup.vocab_before,
        "vocab_size_after": len(tokenizer),
        "embedding_rows_before": setup.rows_before,
        "embedding_rows_after": setup.model.get_input_embeddings().weight.shape[0],
        "preexisting_rows_max_abs_change": changes.preexisting,
        "tied_embeddings": setup.tied,
        # tensor -> rows trained; tied: one tensor, the rows are input and output vectors
        "trained": {name: ids for name in setup.trained},
        "think_rows_max_abs_change": changes.think,
        "frozen_max_abs_change": changes.frozen,
        "frozen_max_abs_change_overall": max(changes.frozen.values()),
        "heldout_ce_before": ce_before,
        "heldout_ce_after": ce_after,
        "precision": precision,
        "steps": loop.steps,
        "resumed_from": Path(loop.resume).name if loop.resume else None,
        "train_traces": len(data.train),
        "heldout_traces": len(data.heldout),
        "truncated": data.truncated,
        "train_seconds": round(loop.seconds, 2),
        "saved_dtype": dtype_name(setup.save_dtype),
        "threads": job.threads,
        "device": job.device,
        "log_history": loop.history,
        "settings": dict(settings),
        "data": dict(traces.get("info") or {}),
        "provenance": dict(job.provenance),
    }
