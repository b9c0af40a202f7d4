"""The GPU check (``make gpu-check``): the real-model tier on one GPU with the paper path's GPU
settings, every output checked, the figures a cluster user needs printed.

The check's config is built, not written by hand: ``config/smol.yaml`` (SmolLM2-135M), reduced
to what fits in 15 minutes on one GPU, with every GPU setting copied from
``config/paper.yaml`` (``PAPER_GPU_KEYS``: CUDA, bf16, vLLM colocated in GRPO, lm-eval's vLLM
backend, the think stage's memory savers), so the check cannot drift from the paper path.

``--dry-run`` (CI, any CPU machine) builds and validates that config, checks it carries the
paper path's settings and plans every stage (``snakemake -n``).  Without it, the workflow runs
(``--resources gpu=1``: one GPU job at a time) while ``nvidia-smi`` is sampled, then: nothing
left to do, every headline number finite, each GPU stage seen on the GPU; the figures (time
per rule, peak GPU memory per job and for the whole run, GRPO tokens/s) go to the console and
to ``results/gpu-check/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from stylemerge.core.joblog import GPU_PEAK_MESSAGE
from stylemerge.generation.vllm import INSTALL
from stylemerge.resources.benchmarks import cost_table
from stylemerge.resources.rules import GPU_RULES, RULES
from stylemerge.stats.intervals import finite
from stylemerge.workflow.config import (
    ConfigError,
    deep_merge,
    run_dirs,
    stage_settings,
    validate_config,
)

RUN_NAME = "gpu-check"
BUDGET_S = 15 * 60  # what one GPU check may take (issue 13)
# The settings the check takes from config/paper.yaml, by key path.
PAPER_GPU_KEYS = (
    ("device",),
    ("precision",),
    ("grpo", "precision"),
    ("grpo", "trainer", "activation_checkpointing"),
    ("grpo", "trainer", "use_vllm"),
    ("grpo", "trainer", "vllm_mode"),
    ("grpo", "trainer", "vllm_gpu_memory_utilization"),
    ("evaluate", "lm_eval", "backend"),
    ("think", "gradient_checkpointing"),
    ("think", "precision"),
)
# The config sections of the rules that run on the GPU (stylemerge.resources.rules.GPU_RULES, the
# list profiles/slurm follows): each asks for one GPU here and must be seen using it.
GPU_STAGES = {rule: tuple(RULES[rule].section.split(".")) for rule in GPU_RULES}
# Every stage of the recipe the check must plan and run.
STAGES = (
    "convert_model",
    "build_shards",
    *GPU_RULES,
    "make_tables",
)
TABLES = ("card", "adapters", "lambada", "diversity", "think")
PEAK_LINE = re.compile(re.escape(GPU_PEAK_MESSAGE).replace("%d", r"(\d+)"))


class GpuCheckError(RuntimeError):
    """The GPU check cannot start, or the run did not give what it must."""


def get(config: Mapping, path: Sequence[str]):
    for key in path:
        config = config[key]
    return config


def nested(path: Sequence[str], value) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def check_config(root: Path) -> dict:
    """smol.yaml reduced to one GPU's 15 minutes, with paper.yaml's GPU settings."""
    read = lambda name: yaml.safe_load((root / "config" / name).read_text())  # noqa: E731
    smol, paper = read("smol.yaml"), read("paper.yaml")
    config = deep_merge(smol, {"run_name": RUN_NAME})
    missing = []
    for path in PAPER_GPU_KEYS:
        try:
            config = deep_merge(config, nested(path, get(paper, path)))
        except KeyError:
            missing.append(".".join(path))
    if missing:
        raise GpuCheckError(f"config/paper.yaml does not set {', '.join(missing)}")
    # two domains (prose and code), one merge, no ablation, no base comparison in think;
    # think's steps in two micro-batches, so that accumulation runs too
    config["domains"] = {d: smol["domains"][d] for d in ("bbc_news", "github_python")}
    config["ablation"] = {"mara": False}
    config["merge"]["variants"] = {"karcher": smol["merge"]["variants"]["karcher"]}
    config["think"].update(compare_base=False, micro_batch_size=config["think"]["batch_size"] // 2)
    for stage in set(GPU_STAGES.values()):
        get(config, stage).update(gpus=1, threads=4)
    return config


def write_config(root: Path) -> Path:
    """The check's config, validated, written where the run's results go."""
    config = check_config(root)
    try:
        validate_config(config, root / "workflow" / "schemas" / "config.schema.yaml")
    except ConfigError as err:
        raise GpuCheckError(f"the GPU check's config is invalid: {err}") from None
    path = root / "results" / RUN_NAME / "gpu-check.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(
    root: Path, configfile: Path, *args: str, capture: bool = True
) -> subprocess.CompletedProcess:
    # the target first: --resources takes every word after it
    cmd = [sys.executable, "-m", "snakemake", "all", *args, "--configfile", str(configfile)]
    return subprocess.run(cmd, cwd=root, capture_output=capture, text=True)


def plan(root: Path, configfile: Path) -> dict[str, int]:
    """The jobs ``snakemake -n`` plans, by rule; every stage must be among them."""
    proc = snakemake(root, configfile, "-n", "--cores", "4", "--resources", "gpu=1")
    if proc.returncode != 0:
        raise GpuCheckError(f"snakemake -n failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    counts = {}
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.MULTILINE):
        if rule != "total":
            counts[rule] = int(count)
    absent = [stage for stage in STAGES if not counts.get(stage)]
    if absent:
        raise GpuCheckError(f"the plan has no {', '.join(absent)} job")
    return counts


class GpuSampler(threading.Thread):
    """``nvidia-smi``'s used memory of GPU 0, every second: the whole run's peak, vLLM's
    engine processes included (a job's own figure covers its own process only)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mib, self.stopped = 0, threading.Event()

    def run(self):
        query = [
            "nvidia-smi",
            "-i",
            "0",
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self.stopped.wait(1.0):
            try:
                out = subprocess.run(query, capture_output=True, text=True).stdout
                used = int(out.split()[0])  # MiB
            except (OSError, ValueError, IndexError):
                continue
            self.peak_mib = max(self.peak_mib, used)


def preflight() -> None:
    import torch

    if not torch.cuda.is_available():
        raise GpuCheckError("no CUDA device here: `make gpu-check-dry` checks the plan on a CPU")
    if importlib.util.find_spec("vllm") is None:
        raise GpuCheckError(f"vLLM is not installed in this environment: {INSTALL}")


def check_outputs(root: Path, configfile: Path, config: Mapping) -> list[str]:
    """What is wrong with a finished run (empty: nothing)."""
    problems = []
    proc = snakemake(root, configfile, "-n", "--cores", "1")
    if proc.returncode != 0 or "Nothing to be done" not in proc.stdout + proc.stderr:
        problems.append("`snakemake -n all` still has jobs to run: outputs missing or stale")
    results = root / run_dirs(config["run_name"])[0]
    for domain in config["domains"]:
        steps = stage_settings(config, "grpo", domain)["trainer"]["max_steps"]
        metrics = results / "adapters" / domain / "metrics.json"
        if not metrics.is_file() or json.loads(metrics.read_text())["steps"] != steps:
            problems.append(f"{metrics}: missing, or not {steps} GRPO steps")
    for lm_eval in sorted((results / "eval").glob("*/lm_eval.json")):
        tasks = json.loads(lm_eval.read_text())["tasks"]
        for task, entry in tasks.items():
            values = [v for by_filter in entry["metrics"].values() for v in by_filter.values()]
            if not values or any(finite(v) is None for v in values):
                problems.append(f"{lm_eval}: task {task}: a metric is missing or not finite")
    if not any((results / "eval").glob("*/lm_eval.json")):
        problems.append(f"{results / 'eval'}: no lm-eval results")
    for table in TABLES:
        path = results / "tables" / f"{table}.csv"
        if not path.is_file() or len(path.read_text().strip().splitlines()) < 2:
            problems.append(f"{path}: missing or without rows")
    think = results / "think"
    for metrics in think.glob("*/metrics.json"):
        if json.loads(metrics.read_text()).get("frozen_max_abs_change_overall") != 0.0:
            problems.append(f"{metrics}: rows other than the think tokens changed")
    return problems


def figures(root: Path, config: Mapping) -> dict:
    """Time per rule (Snakemake's benchmarks), each job's peak GPU memory (its log), GRPO's
    tokens per second (trl's log history)."""
    results, logs = (root / d for d in run_dirs(config["run_name"]))
    seconds = cost_table(results / "benchmarks").groupby("rule")["wall_s"].sum().round(1)
    peaks = {}
    for log in sorted(logs.glob("*/*.log")):
        found = [int(m) for m in PEAK_LINE.findall(log.read_text(errors="replace"))]
        if found:
            peaks[f"{log.parent.name}/{log.stem}"] = max(found)
    tokens_per_s = {}
    for history in sorted((results / "adapters").glob("*/log_history.csv")):
        rows = list(csv.DictReader(history.open()))
        tokens = [float(r["num_tokens"]) for r in rows if r.get("num_tokens")]
        runtime = [float(r["train_runtime"]) for r in rows if r.get("train_runtime")]
        if tokens and runtime and runtime[-1] > 0:
            tokens_per_s[history.parent.name] = round(tokens[-1] / runtime[-1], 1)
    return {
        "seconds_per_rule": seconds.to_dict(),
        "peak_gpu_mib_per_job": peaks,
        "grpo_tokens_per_s": tokens_per_s,
    }


def unseen_on_gpu(config: Mapping, peaks: Mapping[str, int]) -> list[str]:
    """GPU rules none of whose jobs reported GPU memory in their own process (lm-eval's vLLM
    engine runs in a child process, so evaluate_lm is judged by the run's peak only)."""
    in_process = [rule for rule in GPU_RULES if rule != "evaluate_lm"]
    return [r for r in in_process if not any(job.startswith(f"{r}/") for job in peaks)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stylemerge.cli.gpu_check", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="validate and plan only (CPU)")
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the workflow's directory")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        configfile = write_config(root)
        config = yaml.safe_load(configfile.read_text())
        counts = plan(root, configfile)
        print(f"GPU check config: {configfile}")
        print("planned jobs: " + ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
        if args.dry_run:
            print("dry run: config valid, paper GPU settings carried, every stage planned")
            return 0
        preflight()
        sampler = GpuSampler()
        sampler.start()
        start = time.monotonic()
        proc = snakemake(
            root, configfile, "--cores", str(args.cores), "--resources", "gpu=1", capture=False
        )
        wall = time.monotonic() - start
        sampler.stopped.set()
        if proc.returncode != 0:
            raise GpuCheckError(f"the workflow failed (exit {proc.returncode}); see its log above")
        problems = check_outputs(root, configfile, config)
        found = figures(root, config)
        unseen = unseen_on_gpu(config, found["peak_gpu_mib_per_job"])
        problems += [f"{rule}: no job reported GPU memory" for rule in unseen]
        if wall > BUDGET_S:
            problems.append(f"took {wall:.0f} s, over the {BUDGET_S} s budget")
        report = {"wall_s": round(wall), "peak_gpu_mib_run": sampler.peak_mib, **found,
                  "problems": problems}  # fmt: skip
        out = root / "results" / RUN_NAME / "gpu_check.json"
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        if problems:
            raise GpuCheckError("; ".join(problems))
        print(f"GPU check passed in {wall:.0f} s ({out})")
        return 0
    except GpuCheckError as err:
        print(f"GPU check failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
