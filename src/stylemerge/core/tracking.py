"""Experiment trackers: one run per job, named and grouped by the workflow's run.

With ``report_to`` listing ``wandb`` or ``tensorboard`` (config key), every tracked job
(pretraining, proxies, GRPO, think, lm-eval, diversity) is one tracker run named
``<run_name>/<stage>/<name>[/<seed>]`` (:attr:`JobSettings.tracking_name`) in the group
``<run_name>``, written under its tracking directory, ``results/<run>/.../logs/<stage>/<name>``.

- **wandb**: :func:`tracked_run` opens the run before the job trains, so that transformers'
  ``WandbCallback`` (the Trainer stages) logs into it rather than opening an anonymous one.
  Its id is a hash of the project and the run's name, opened with ``resume="allow"``: a job
  run again (killed and resumed, or retried by Slurm) continues its run. The project is
  ``WANDB_PROJECT`` (default ``stylemerge``); ``WANDB_MODE=offline`` writes without an account
  (``wandb sync`` uploads later); the API key comes from the environment only.
- **tensorboard**: the Trainers write their event files in the tracking directory
  (``TENSORBOARD_LOGGING_DIR``, :meth:`JobSettings.apply`); results go there too.

What a job measured (its result's numbers, e.g. held-out losses, lm-eval metrics, distinct-n)
goes to both as the run's summary (:meth:`Tracker.log_result`); a loop that is not a Trainer
(think) logs its history step by step (:meth:`Tracker.log_history`). The stages' entry points
do this themselves (:func:`tracked`). Other trackers of
``report_to`` get what transformers' Trainer sends them, nothing more.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from stylemerge.core.job import JobSettings

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "stylemerge"
# result keys that are no measurement: how it was made, or per-item data and histories
NOT_MEASURED = frozenset({"provenance", "settings", "data", "log_history", "per_document"})


def wandb_run_id(project: str, name: str) -> str:
    """The same run for the same project and name, whichever process or attempt opens it
    (wandb ids: letters and digits, at most 64)."""
    return hashlib.sha256(f"{project}\0{name}".encode()).hexdigest()[:32]


def measured(result: Mapping, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a result, flattened to ``a/b/c`` keys (lists, booleans and
    :data:`NOT_MEASURED` keys left out)."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        if key in NOT_MEASURED:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(measured(value, f"{path}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                flat[path] = float(value)
    return flat


class Tracker:
    """The job's open tracker runs (see the module's docstring)."""

    def __init__(self, job: JobSettings):
        self.job = job
        self.wandb_run = None
        trackers = set(job.report_to)
        self.wants_wandb = "wandb" in trackers and job.tracking_name is not None
        self.wants_tensorboard = "tensorboard" in trackers and job.tracking_dir is not None

    def start(self) -> None:
        if not self.wants_wandb:
            return
        try:
            import wandb
        except ImportError:
            raise ImportError(
                "report_to lists wandb, which is not installed here: "
                'pip install -c constraints.txt -e ".[tracking]"'
            ) from None

        job = self.job
        project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        os.makedirs(job.tracking_dir or ".", exist_ok=True)
        self.wandb_run = wandb.init(
            project=project,
            name=job.tracking_name,
            group=job.tracking_group,
            job_type=job.tracking_name.split("/")[1] if "/" in job.tracking_name else None,
            id=wandb_run_id(project, job.tracking_name),
            resume="allow",
            dir=job.tracking_dir,
            config={"provenance": dict(job.provenance)},
            # the job's log already holds its output; wandb's capture would wrap the streams
            settings=wandb.Settings(console="off"),
        )
        run = self.wandb_run
        log.info("wandb run %s (id %s), group %s", run.name, run.id, run.group)

    def log_result(self, result: Mapping | None) -> None:
        """The result's numbers as the run's summary (``result/...``)."""
        if not result:
            return
        flat = measured(result, "result/")
        if self.wandb_run is not None:
            self.wandb_run.summary.update(flat)
        if self.wants_tensorboard and flat:
            with self._tensorboard() as writer:
                for key, value in flat.items():
                    writer.add_scalar(key, value, 0)

    def log_history(self, history: Iterable[Mapping[str, Any]]) -> None:
        """A loop's logged steps (``{"step": k, "loss": ...}``) as ``train/<key>`` per step."""
        steps = [
            (entry["step"], measured({k: v for k, v in entry.items() if k != "step"}, "train/"))
            for entry in history
            if "step" in entry
        ]
        if self.wandb_run is not None:
            for step, values in steps:
                self.wandb_run.log({**values, "train/global_step": step})
        if self.wants_tensorboard and steps:
            with self._tensorboard() as writer:
                for step, values in steps:
                    for key, value in values.items():
                        writer.add_scalar(key, value, step)

    @contextlib.contextmanager
    def _tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=self.job.tracking_dir)
        try:
            yield writer
        finally:
            writer.close()

    def finish(self, failed: bool) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None


@contextlib.contextmanager
def tracked_run(job: JobSettings) -> Iterator[Tracker]:
    """The job's tracker runs, open while it works (closed as failed if it raises)."""
    tracker = Tracker(job)
    tracker.start()
    failed = True
    try:
        yield tracker
        failed = False
    finally:
        tracker.finish(failed)


def tracked(history: bool = False):
    """Decorate a stage's entry point ``entry(job, ...)``: it runs inside the job's tracker
    run and its result is logged there; with ``history`` also the result's ``log_history``
    step by step (a loop that is not a Trainer's). In the library rather than in the
    Snakemake scripts: a script's change reruns its jobs (Snakemake's code trigger), and
    where a job's logs go should rerun nothing."""

    def decorate(entry):
        @functools.wraps(entry)
        def run(job: JobSettings, *args, **kwargs):
            with tracked_run(job) as tracker:
                result = entry(job, *args, **kwargs)
                if history:
                    tracker.log_history(result["log_history"])
                tracker.log_result(result)
            return result

        return run

    return decorate
