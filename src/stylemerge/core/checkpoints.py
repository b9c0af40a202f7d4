"""Checkpoints that long jobs resume from (GRPO, the proxies, the think rows).

A job keeps its checkpoints in a directory of its own that is not a Snakemake output, so a
killed, preempted or timed-out job finds them when it is run again and resumes from the last
complete one.  A fingerprint of everything the training depends on (settings, seed,
precision, the models with their revisions, the data) is written beside them: checkpoints of
other settings or inputs are removed, never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
# Written last into a checkpoint (Trainer's name; the think stage writes one too): a
# checkpoint without it was cut short.
STATE = "trainer_state.json"


# Settings that change where or how fast a job runs, not what it computes: a resumed job may
# run with other values (a retry with more time or threads) and still continue its checkpoints.
SCHEDULING_KEYS = ("threads", "runtime_min")


def training_settings(settings) -> dict:
    """A stage's settings as its checkpoints' fingerprint takes them (scheduling left out)."""
    return {key: value for key, value in settings.items() if key not in SCHEDULING_KEYS}


def fingerprint(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint that was written to the end; newer partial ones (a job killed
    while saving) are removed."""
    steps = []
    for path in checkpoint_dir.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            steps.append((int(suffix), path))
    for _, path in sorted(steps, reverse=True):
        try:
            json.loads((path / STATE).read_text())
            return path
        except (OSError, ValueError):
            log.warning("%s: incomplete checkpoint (killed while saving?); removing it", path)
            shutil.rmtree(path, ignore_errors=True)
    return None


def completed_steps(checkpoint: str | Path) -> int:
    return int(json.loads((Path(checkpoint) / STATE).read_text())["global_step"])


def prepare_checkpoints(checkpoint_dir: Path, expected: str) -> str | None:
    """The checkpoint to resume from, if any; a checkpoint of other settings is removed."""
    marker = checkpoint_dir / FINGERPRINT
    if checkpoint_dir.exists():
        previous = json.loads(marker.read_text())["fingerprint"] if marker.exists() else None
        if previous != expected:
            log.warning(
                "%s: checkpoints from other settings or inputs; starting over", checkpoint_dir
            )
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": expected}))
    last = last_complete_checkpoint(checkpoint_dir)
    if last:
        log.info("resuming from %s", last)
    return str(last) if last else None
