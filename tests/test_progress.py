"""Progress lines in job logs (stylemerge.core.progress): step k of n, rate and ETA at a steady
interval, the last step always; tqdm's bars turned into such lines; the workflow's jobs
log them and no carriage-return redraws."""

import logging
import os
import re
import types

import pytest

from stylemerge.core import progress as progress_module
from stylemerge.core.progress import Progress, clock_text, progress_callback, tqdm_class

LINE = re.compile(r"progress (?P<what>.+?): (?P<unit>\w+) (?P<done>\d+)/(?P<total>\d+) \(")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stylemerge.core.progress"]


def test_lines_at_the_first_update_then_every_interval_and_the_last_step_once(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    counter = Progress("grpo bbc_news", 10, interval=10, clock=clock)
    for t, done in [(0, 1), (5, 2), (10, 4), (12, 5), (19.9, 6), (20, 7), (21, 10), (22, 10)]:
        clock.now = t
        counter.update(done)
    lines = logged(caplog)
    assert [int(LINE.match(line)["done"]) for line in lines] == [1, 4, 7, 10]
    # at t=10, 4 of 10 steps: 0.4 step/s, 6 left -> 15 s
    assert lines[1] == (
        "progress grpo bbc_news: step 4/10 (40.0%), 2.5 s/step, elapsed 0:00:10, ETA 0:00:15"
    )
    assert lines[-1].endswith("ETA 0:00:00")


def test_a_resumed_run_counts_only_its_own_steps_in_rate_and_eta(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    counter = Progress("think karcher", 10, start=5, interval=0, clock=clock)
    clock.now = 2.0
    counter.update(6)  # one step in 2 s: 4 left, 8 s
    assert logged(caplog) == [
        "progress think karcher: step 6/10 (60.0%), 2 s/step, elapsed 0:00:02, ETA 0:00:08"
    ]
    assert clock_text(3725) == "1:02:05"


def test_a_loop_of_unknown_length_counts_without_an_end_or_eta(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    counter = Progress("building contexts", 0, unit="document", interval=5, clock=clock)
    for t in range(12):
        clock.now = float(t)
        counter.update(t + 1)
    assert logged(caplog) == [
        "progress building contexts: document 1, elapsed 0:00:00",
        "progress building contexts: document 6, 1.2 document/s, elapsed 0:00:05",
        "progress building contexts: document 11, 1.1 document/s, elapsed 0:00:10",
    ]


def test_the_interval_comes_from_the_environment_and_a_bad_value_names_it(monkeypatch):
    monkeypatch.setenv(progress_module.INTERVAL_ENV, "2.5")
    assert Progress("x", 3).interval == 2.5
    monkeypatch.delenv(progress_module.INTERVAL_ENV)
    assert Progress("x", 3).interval == progress_module.DEFAULT_INTERVAL
    for bad in ("soon", "-1"):
        monkeypatch.setenv(progress_module.INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=progress_module.INTERVAL_ENV):
            Progress("x", 3)


def test_tqdm_bars_log_lines_and_draw_nothing(caplog, capsys, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(progress_module.INTERVAL_ENV, "0")
    bar_class = tqdm_class()
    assert list(bar_class(range(4), desc="Running loglikelihood requests")) == [0, 1, 2, 3]
    quiet = bar_class(total=3, desc="inner", disable=True)  # the library turned it off
    quiet.update(3)
    quiet.close()
    manual = bar_class(total=2, desc="generate_until")
    manual.update(1)
    manual.update(1)
    manual.close()
    lines = [LINE.match(line) for line in logged(caplog)]
    seen = [(m["what"], m["unit"], int(m["done"]), int(m["total"])) for m in lines]
    assert seen == [
        *(("Running loglikelihood requests", "request", k, 4) for k in range(5)),
        *(("generate_until", "request", k, 2) for k in range(3)),
    ]
    out = capsys.readouterr()
    assert out.out == out.err == ""


QUIET_BARS_PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from lm_eval.api.metrics import bootstrap_stderr, mean
from stylemerge.core.progress import tqdm_class
bootstrap_stderr(mean, [0.0, 1.0, 1.0, 0.0], iters=2000)  # lm-eval's own bar, in a function
for _ in tqdm_class()(range(3), desc="Running loglikelihood requests"):
    pass
"""


def test_in_a_jobs_environment_library_bars_are_silent_and_ours_log(tmp_path):
    """With the environment every job gets (QUIET_BARS), lm-eval's bootstrap bar (its tqdm
    imported inside the function: no module swap reaches it) writes nothing, while the
    logging bars still report."""
    import subprocess
    import sys

    env = {**os.environ, **progress_module.QUIET_BARS, progress_module.INTERVAL_ENV: "0"}
    run = subprocess.run(
        [sys.executable, "-c", QUIET_BARS_PROBE], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "it/s" not in run.stderr, run.stderr  # (text mode reads tqdm's \r as a newline)
    assert "progress Running loglikelihood requests: request 3/3" in run.stdout
    # without it, the same bootstrap draws its bar: the probe can see one
    bare = {k: v for k, v in os.environ.items() if k not in progress_module.QUIET_BARS}
    run = subprocess.run(
        [sys.executable, "-c", QUIET_BARS_PROBE], env=bare, capture_output=True, text=True
    )
    assert "it/s" in run.stderr, run.stderr


def test_the_trainer_callback_reports_global_steps_from_a_resumed_checkpoint(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv(progress_module.INTERVAL_ENV, "0")
    callback = progress_callback("proxy bbc_news")
    state = types.SimpleNamespace(max_steps=24, global_step=0)
    # Trainer calls on_train_begin before it loads the checkpoint's step (here 10)
    callback.on_train_begin(None, state, None)
    for step in (11, 12):
        state.global_step = step
        callback.on_step_end(None, state, None)
    assert callback.progress.start == 10
    assert [LINE.match(line)["done"] for line in logged(caplog)] == ["11", "12"]
    assert logged(caplog)[0].startswith("progress proxy bbc_news: step 11/24 (45.8%), ")


# --- the workflow's jobs --------------------------------------------------------------------

# rule -> the progress lines' unit in its logs (the loops of stylemerge.core.progress)
RULE_UNITS = {
    "pretrain_model": {"step"},
    "train_proxy": {"step"},
    "train_adapter": {"step", "prompt"},  # GRPO's steps, its held-out sampling
    "optimize_think_tokens": {"step"},
    "evaluate_lm": {"request"},
    "measure_diversity": {"prompt"},
}


@pytest.mark.workflow
def test_every_long_job_logs_progress_and_no_log_has_carriage_returns(workflow_run):
    logs = workflow_run / "logs"
    for rule, units in RULE_UNITS.items():
        files = sorted((logs / rule).rglob("*.log"))
        assert files, rule
        for path in files:
            text = path.read_text()
            matches = [m for m in (LINE.search(line) for line in text.splitlines()) if m]
            assert {m["unit"] for m in matches} >= units, (path, matches)
            # every loop reports its last step
            ends = {(m["what"], m["unit"]) for m in matches if m["done"] == m["total"]}
            assert ends == {(m["what"], m["unit"]) for m in matches}, path
    for path in logs.rglob("*.log"):
        assert "\r" not in path.read_text(), path


def test_lm_evals_bars_are_swapped_while_it_runs_and_restored():
    import lm_eval.api.task
    import lm_eval.models.huggingface

    from stylemerge.evaluate.harness import logged_progress

    originals = (lm_eval.api.task.tqdm, lm_eval.models.huggingface.tqdm)
    with logged_progress():
        swapped = (lm_eval.api.task.tqdm, lm_eval.models.huggingface.tqdm)
        assert all(
            issubclass(new, old) and new is not old
            for new, old in zip(swapped, originals, strict=True)
        )
    assert (lm_eval.api.task.tqdm, lm_eval.models.huggingface.tqdm) == originals
