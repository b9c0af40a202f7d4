"""Progress in a job's log: step k of n, rate and ETA, one line at a steady interval.

A job's log is a file (stylemerge.core.joblog), so tqdm's bars would write carriage-return
redraws into it; every stage turns tqdm off and reports here instead.  One :class:`Progress`
serves each loop: the Trainer-based stages through :class:`ProgressCallback` (pretraining,
proxies, GRPO), the think rows' loop, sampling (diversity, GRPO's held-out evaluation) and
lm-eval's request loops through :func:`tqdm_class` (lm-eval reports through tqdm).

A line is logged at the first update, then at most every ``interval`` seconds, and at the
last step: ``STYLEMERGE_PROGRESS_SECONDS`` sets the interval (default 30). It changes only
the log, never a result, so it is not a config key (which would rerun the jobs).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("stylemerge.core.progress")

INTERVAL_ENV = "STYLEMERGE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0
# what tests and tools look for in a log
PREFIX = "progress"
# Set for every job (the Snakefile): no library's progress bar (tqdm's: huggingface_hub,
# transformers' weight loading, datasets' splits, vLLM, lm-eval's bootstrap) writes its
# carriage-return redraws into a job's log; :func:`tqdm_class`'s bars stay on.
QUIET_BARS = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def interval_seconds() -> float:
    value = os.environ.get(INTERVAL_ENV)
    if value is None:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={value!r}: not a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"{INTERVAL_ENV}={value!r}: negative")
    return seconds


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Reports ``done`` of ``total`` for ``what`` (e.g. "grpo bbc_news").

    ``start``: units already done when this process began (a resumed run): the rate and
    ETA count only this process's work."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "step",
        start: int = 0,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ):
        self.what, self.total, self.unit = what, int(total), unit
        self.start = self.done = int(start)
        self.interval = interval_seconds() if interval is None else interval
        self.clock, self.logger = clock, logger
        self.began = clock()
        self.last_logged: float | None = None
        self.ended = False  # the last step's line is out: nothing more to say

    def update(self, done: int) -> None:
        """``done`` units are complete (absolute, not an increment)."""
        if self.ended:
            return
        self.done = int(done)
        now = self.clock()
        self.ended = 0 < self.total <= self.done  # an unknown total (0) never ends
        if self.ended or self.last_logged is None or now - self.last_logged >= self.interval:
            self.logger.info(self.line(now))
            self.last_logged = now

    def line(self, now: float) -> str:
        elapsed = now - self.began
        worked = self.done - self.start
        if not self.total:  # a loop of unknown length: count and rate only
            text = f"{PREFIX} {self.what}: {self.unit} {self.done}"
        else:
            percent = 100.0 * self.done / self.total
            text = f"{PREFIX} {self.what}: {self.unit} {self.done}/{self.total} ({percent:.1f}%)"
        if worked > 0 and elapsed > 0:
            rate = worked / elapsed
            left = max(self.total - self.done, 0) / rate
            if rate >= 1:
                shown = f"{rate:.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s"
            else:
                shown = f"{1 / rate:.3g} s/{self.unit}"
            text += f", {shown}, elapsed {clock_text(elapsed)}"
            text += f", ETA {clock_text(left)}" if self.total else ""
        else:
            text += f", elapsed {clock_text(elapsed)}"
        return text


def progress_callback(what: str):
    """A transformers ``TrainerCallback`` reporting the Trainer's global step of its max
    steps (a resumed run starts from its checkpoint's step)."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None
            self.first = True

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress, self.first = Progress(what, state.max_steps), True

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is None:
                return
            if self.first:  # Trainer loads a checkpoint's step after on_train_begin
                self.progress.start, self.first = state.global_step - 1, False
            self.progress.update(state.global_step)

    return ProgressCallback()


def tqdm_class(unnamed: str = "requests", unit: str = "request"):
    """A tqdm subclass whose bars write no redraws and log :class:`Progress` lines instead:
    for libraries that report through tqdm (lm-eval's request loops), swapped in for their
    module's ``tqdm`` name while they run (stylemerge.evaluate.harness).  ``unnamed``: what a bar
    without a description is called; ``unit``: what its steps count."""
    from tqdm import tqdm

    class LoggingTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            self._progress = None
            kwargs.pop("file", None)
            # on unless the library turned the bar off: TQDM_DISABLE (set for jobs, to silence
            # every other bar) only sets the default
            kwargs.setdefault("disable", False)
            # display() below draws nothing: the file only takes close()'s newline
            super().__init__(*args, file=io.StringIO(), mininterval=0, **kwargs)
            if not self.disable:  # as the library asked (e.g. an inner loop's bar off)
                what = str(self.desc or unnamed).rstrip(": ")
                self._progress = Progress(what, self.total or 0, unit=unit)
                self._progress.update(self.n)

        def display(self, msg=None, pos=None):
            if self._progress is not None:
                self._progress.update(self.n)
            return True

        def close(self):
            if self._progress is not None and self._progress.done != self.n:
                self._progress.update(self.n)
            super().close()

    return LoggingTqdm
