"""Shared helpers of the benchmarks: builtin-corpus shards, a tokenizer, tiny models, timing.

Everything is built in a temporary directory from the package's builtin corpus (no network,
nothing under results/ is read or written).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # mergekit's and transformers' progress bars

ROOT = Path(__file__).resolve().parents[1]

# The embedded default's base model (config/config.yaml, models.base.tiny).
BASE_SHAPE = {
    "architecture": "qwen3",
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}
SHARD_SETTINGS = {
    "heldout_fraction": 0.3,
    "min_chars": 200,
    "max_chars": 20000,
    "max_documents": None,
    "dedupe": True,
}


def builtin_shards(out_dir: Path, domains: Sequence[str] | None = None) -> dict[str, dict]:
    """Train/held-out shards of the builtin corpus: ``{domain: {"train": path, "heldout":
    path}}`` (all nine domains by default)."""
    from stylemerge.data.shards import build_shards
    from stylemerge.data.sources import builtin_corpora

    paths = {}
    for domain in domains or builtin_corpora():
        d = Path(out_dir) / domain
        build_shards(
            {"type": "builtin"},
            domain,
            SHARD_SETTINGS,
            d / "train.jsonl",
            d / "heldout.jsonl",
            d / "manifest.json",
        )
        paths[domain] = {"train": d / "train.jsonl", "heldout": d / "heldout.jsonl"}
    return paths


def builtin_tokenizer(out_dir: Path, shards: dict[str, dict], vocab_size: int = 2048):
    """The embedded default's tokenizer (byte-level BPE with think tags) on ``shards``."""
    from stylemerge.data.tokenizer import train_tokenizer

    return train_tokenizer([s["train"] for s in shards.values()], out_dir, vocab_size=vocab_size)


def tiny_model(tokenizer, seed: int, shape: dict | None = None):
    """A randomly initialised tiny causal LM (``build_tiny_model``), seeded."""
    from transformers import set_seed

    from stylemerge.models.reference import build_tiny_model

    set_seed(seed)
    model = build_tiny_model(tokenizer, shape or BASE_SHAPE)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


@dataclass
class Timing:
    """The fastest of several runs: wall-clock and CPU seconds (this process, all threads;
    less disturbed than wall time by other processes on a busy machine), and a result."""

    wall: float = float("inf")
    cpu: float = float("inf")
    result: object = None


def best_of(runs: int, *functions: Callable[[], object]) -> list[Timing]:
    """Run each function ``runs`` times, interleaved (A B A B ...), so that load from other
    processes hits both alike; the fastest wall and CPU time of each, and its last result."""
    timings = [Timing() for _ in functions]
    for _ in range(runs):
        for timing, function in zip(timings, functions, strict=True):
            wall, cpu = time.perf_counter(), time.process_time()
            timing.result = function()
            timing.cpu = min(timing.cpu, time.process_time() - cpu)
            timing.wall = min(timing.wall, time.perf_counter() - wall)
    return timings


def machine() -> str:
    """One line about where the figures were measured."""
    try:
        load = f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = "load average n/a"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = f"{platform.machine()}, {cores} cores, {load}, Python {platform.python_version()}"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        line += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return line
