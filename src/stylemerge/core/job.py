"""What every job shares: its seed, device, threads, safety switches and provenance.

A ``JobSettings`` is built once per job from the config (``JobSettings.from_config``, which
the Snakemake scripts call through ``stylemerge.workflow.snakemake_job``), passed whole to the
library
entry point, and applied there once (``apply``: threads, device, seed).  Adding a setting
means adding a field here, not a parameter to every entry point.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stylemerge.core.provenance import provenance as record

# the config's top-level keys a JobSettings holds (the rest: threads from the rule)
JOB_CONFIG_KEYS = ("seed", "device", "precision", "trust_remote_code", "allow_pickle_weights")


@dataclasses.dataclass(frozen=True)
class JobSettings:
    seed: int = 0
    device: str = "cpu"  # cpu, cuda or auto
    # auto, bf16 or fp32 as configured; bf16 or fp32 once applied (stylemerge.core.precision)
    precision: str = "fp32"
    threads: int = 1
    trust_remote_code: bool = False  # run a model repository's own Python code
    allow_pickle_weights: bool = False  # load *.bin/*.pt weights where no safetensors exist
    report_to: tuple[str, ...] = ()  # experiment trackers (stylemerge.core.tracking)
    # where trackers write: results/<run>/[seeds/<seed>/]logs/<stage>/<name>
    tracking_dir: str | None = None
    # the job's tracker run: <run_name>/<stage>/<name>[/<seed>], in the group <run_name>
    tracking_name: str | None = None
    # what made the result (stylemerge.core.provenance); copied into every result's JSON
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_config(
        cls,
        config: Mapping,
        threads: int = 1,
        tracking_dir: str | None = None,
        tracking_name: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> JobSettings:
        """A job's settings from the validated config.  ``tracking_name``: the job's run in
        the trackers, grouped by the config's run.  ``provenance``: the workflow's record
        (with the locked hub commits); without it the core record is made now."""
        return cls(
            **{key: config[key] for key in JOB_CONFIG_KEYS},
            threads=threads,
            report_to=tuple(config.get("report_to") or ()),
            tracking_dir=str(tracking_dir) if tracking_dir else None,
            tracking_name=tracking_name,
            provenance=provenance if provenance is not None else record(config, config["seed"]),
        )

    @property
    def tracking_group(self) -> str | None:
        """The group of the job's tracker run: its workflow run (the name's first part)."""
        return self.tracking_name.split("/")[0] if self.tracking_name else None

    def apply(self) -> JobSettings:
        """Set torch's threads and the global seeds; return the settings as applied (threads
        capped at the available cores, ``auto`` resolved to a device, the precision resolved
        against it and recorded in the provenance)."""
        from stylemerge.core.precision import resolve_precision

        device = resolve_device(self.device)
        precision, reason = resolve_precision(self.precision, device)
        applied = dataclasses.replace(
            self,
            threads=use_threads(self.threads),
            device=device,
            precision=precision,
            provenance={
                **self.provenance,
                "precision": {"requested": self.precision, "used": precision, "why": reason},
            },
        )
        set_seed(self.seed)
        if self.tracking_dir:  # transformers' TensorBoardCallback reads it when it starts
            os.makedirs(self.tracking_dir, exist_ok=True)
            os.environ["TENSORBOARD_LOGGING_DIR"] = self.tracking_dir
        return applied

    def autocast(self):
        """A context factory for this job's forward passes (bfloat16 autocast, or nothing);
        call it on applied settings."""
        from stylemerge.core.precision import autocast

        return autocast(self.precision, self.device)


def set_seed(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (every device), exactly as
    ``transformers.set_seed(seed)`` does (the same generator states), without importing
    ``transformers.trainer_utils``: that imports peft, seconds per job that uses neither."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # safe without CUDA


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


# `. PATH` or `source PATH` at the start of a shell command or after &&, ; or ||
_ACTIVATION = re.compile(r"(?:^|&&|;|\|\|)\s*(?:\.|source)\s+(['\"]?)([^\s'\";&|]+)\1")


def missing_job_environment(precommand: str | None, workdir: str | os.PathLike) -> str | None:
    """Why the jobs of a cluster run cannot start, or None: a profile's ``precommand`` (run
    first in every job, e.g. profiles/slurm's ``. .venv-gpu/bin/activate``) sources a file
    that does not exist. Every job would fail, each retried, before the workflow said why."""
    for match in _ACTIVATION.finditer(precommand or ""):
        # as the job's shell would read it (the submitting environment is exported to jobs)
        written = os.path.expanduser(os.path.expandvars(match.group(2)))
        if "$" in written:  # a variable only the node sets: nothing to check here
            continue
        path = Path(workdir, written)
        if not path.is_file():
            return (
                f"precommand {precommand!r} (the profile's; run first in every cluster job) "
                f"sources {path}, which does not exist: every job would fail. Create that "
                "environment first (profiles/slurm: `make gpu-venv` on a machine that shares "
                "this directory with the nodes; README, Paper scale) or change precommand "
                "in a copy of the profile"
            )
    return None
