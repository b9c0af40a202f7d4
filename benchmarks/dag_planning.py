"""Snakemake planning time (``snakemake -n all``) for 9 domains vs 90.

Each run is a dry run of this repository's Snakefile (``--snakefile``) in a temporary
working directory (``--directory``: nothing under this repository's results/ or .snakemake/
is read or written), with a generated ``--configfile``: config/config.yaml with its
``domains`` replaced by N builtin-corpus domains (the nine builtin domains, then copies named
``<corpus>_<i>`` with ``source: {type: builtin, corpus: <corpus>}``). The time includes
Python start-up, config validation, DAG construction and printing the plan, as a user sees it.

Baseline: the 9-domain plan. Measured: time per domain at 90 domains over time per domain at
9 (goal <= 1.1: planning grows no worse than linearly in the number of domains). The fixed
cost (start-up, imports, ~2 s) dominates that ratio at these sizes, so the script also prints
the marginal cost per added domain between consecutive sizes and a quadratic fit of the CPU
time, t = a + b*D + c*D^2: a rising marginal cost (c > 0) is super-linear growth. (Expected
source: every evaluate_lm and measure_diversity job reads every domain's held-out shard, and
with evaluate.domain_models there is one such job per domain: ~2*D^2 DAG edges.)

    .venv/bin/python benchmarks/dag_planning.py [--quick] [--sizes 9,45,90] [--repeats R]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import ROOT, machine

GOAL = 1.1


def domains_config(n: int) -> dict:
    """config/config.yaml with ``n`` builtin domains."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    corpora = list(config["domains"])  # the nine builtin corpora, by their own names
    domains = {}
    for i in range(n):
        corpus = corpora[i % len(corpora)]
        name = corpus if i < len(corpora) else f"{corpus}_{i // len(corpora)}"
        domains[name] = {"source": {"type": "builtin", "corpus": corpus}}
    config["domains"] = domains
    return config


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dry_run(workdir: Path, configfile: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``snakemake -n all``, and the number of jobs planned."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "all",
        "-n",
        "--cores",
        "1",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
    ]
    cpu, wall = children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    total = re.search(r"^total\s+(\d+)\s*$", done.stdout, re.MULTILINE)
    if not total:
        raise SystemExit(f"no job stats in the dry run's output:\n{done.stdout[-2000:]}")
    return wall, cpu, int(total.group(1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="9,45,90", help="domain counts (default 9,45,90)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size (best kept)")
    parser.add_argument("--quick", action="store_true", help="sizes 9,90, one run each")
    args = parser.parse_args(argv)
    sizes = [9, 90] if args.quick else sorted({int(s) for s in args.sizes.split(",")})
    repeats = 1 if args.quick else args.repeats
    if len(sizes) < 2 or sizes[0] < 9:
        parser.error("--sizes: at least two counts, each >= 9 (the lambada domains)")

    best = {n: [float("inf"), float("inf"), 0] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        configs = {}
        for n in sizes:
            workdir = Path(tmp) / f"d{n}"
            workdir.mkdir()
            configs[n] = (workdir, workdir / "config.yaml")
            configs[n][1].write_text(yaml.safe_dump(domains_config(n), sort_keys=False))
        dry_run(*configs[sizes[0]])  # warm-up: file system caches, .pyc files
        for _ in range(repeats):
            for n in sizes:
                wall, cpu, jobs = dry_run(*configs[n])
                best[n] = [min(best[n][0], wall), min(best[n][1], cpu), jobs]

    print(f"snakemake -n all (dry run, temporary --directory and --configfile); {machine()}")
    print(f"best of {repeats}")
    print("  domains   jobs     wall      cpu   wall/domain  marginal wall/added domain")
    previous = None
    for n in sizes:
        wall, cpu, jobs = best[n]
        marginal = ""
        if previous is not None:
            marginal = f"{(wall - best[previous][0]) / (n - previous):9.3f} s"
        print(f"  {n:7d} {jobs:6d} {wall:7.2f} s {cpu:6.2f} s {wall / n:9.3f} s   {marginal}")
        previous = n
    small, large = sizes[0], sizes[-1]
    ratio = (best[large][0] / large) / (best[small][0] / small)
    cpu_ratio = (best[large][1] / large) / (best[small][1] / small)
    print(
        f"  per-domain time, {large} vs {small} domains: {ratio:.2f} wall, {cpu_ratio:.2f} cpu "
        f"(goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'NOT met'})"
    )
    if len(sizes) >= 3:
        first = (best[sizes[1]][1] - best[sizes[0]][1]) / (sizes[1] - sizes[0])
        last = (best[sizes[-1]][1] - best[sizes[-2]][1]) / (sizes[-1] - sizes[-2])
        c, b, a = np.polyfit(sizes, [best[n][1] for n in sizes], 2)
        square = c * large**2
        print(
            f"  marginal cpu per added domain, last step vs first: {last / first:.2f} "
            f"(1.0: linear growth)"
        )
        print(
            f"  cpu fit t = {a:.2f} + {b:.4f}*D + {c:.6f}*D^2 s: at D={large} the D^2 term is "
            f"{square:.2f} s ({square / best[large][1]:.0%} of the plan's cpu time)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
