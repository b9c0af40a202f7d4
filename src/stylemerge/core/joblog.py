"""Send a job's Python logging, stdout and stderr to its Snakemake log file; end the job's
process without the interpreter's last garbage collection.

Only the job scripts (workflow/scripts/) import this module (stylemerge.cli.gpu_check reads one
constant).  Importing it registers
``gc.freeze`` to run when the interpreter exits: its final collection would otherwise walk
every object torch and transformers made, about 1 s of every job that loaded them (measured on
this 2-core machine: 1.0-1.6 s, 0.2 s frozen).  Nothing is lost: a job's outputs and its log
are written and closed by then, the other exit handlers (logging's flush, temporary
directories) still run, and Python never promised to run ``__del__`` of objects still alive at
exit.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

atexit.register(gc.freeze)

# A job's peak GPU memory in its log (stylemerge.cli.gpu_check reads it back)
GPU_PEAK_MESSAGE = "peak GPU memory of this process: %d MiB"


@contextlib.contextmanager
def to_file(path: str | Path) -> Iterator[None]:
    """Everything the job prints or logs goes to ``path``; an exception is written there with
    its traceback and raised again (so Snakemake marks the job failed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(path, "a", encoding="utf-8", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        previous_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            log_gpu_peak()
            root.removeHandler(handler)
            root.setLevel(previous_level)
            sys.stdout.flush()


def log_gpu_peak() -> None:
    """The job's peak GPU memory, as torch's allocator saw it in this process (the GPU check
    reads it from the log); nothing where the job never used CUDA."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        peak = torch.cuda.max_memory_reserved() / 2**20
        logging.getLogger(__name__).info(GPU_PEAK_MESSAGE, peak)
