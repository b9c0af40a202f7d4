"""Threads, seeds and devices: set once per job from the rule's plain values."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may use (respects a Slurm job's or container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_threads(threads: int) -> int:
    """Make torch (and the Rust tokenizers) use ``threads``, capped at the available cores:
    more threads than cores makes every job many times slower."""
    import torch

    n = max(1, min(int(threads), available_cores()))
    torch.set_num_threads(n)
    os.environ["RAYON_NUM_THREADS"] = str(n)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if n > 1 else "false"
    return n


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device is 'cuda' but torch sees no CUDA device")
    return device
