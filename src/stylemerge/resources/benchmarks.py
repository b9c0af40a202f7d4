"""What the jobs of a run measured: Snakemake's benchmark files (``benchmark:`` of each rule,
``<run>/benchmarks/<rule>/<wildcards>.tsv``) as one table, for the cost table and the GPU
check."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def cost_table(
    benchmark_dir: str | Path, mem_requests: Mapping[str, Mapping[str, int]] | None = None
) -> pd.DataFrame:
    """Snakemake's benchmark files as one table: wall time, max RSS and CPU time per rule and
    wildcard (results/benchmarks/<rule>/<wildcards>.tsv).  With ``mem_requests`` (``{rule:
    {job: mem_mb}}``, what the rules request), each job's request beside its max RSS, and
    ``over_request`` true (with a warning naming the job) where the job used more."""
    rows = []
    for path in sorted(Path(benchmark_dir).glob("*/*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        for _, run in frame.iterrows():
            rows.append(
                {
                    "rule": path.parent.name,
                    "job": path.stem,
                    "wall_s": float(run["s"]),
                    "max_rss_mb": float(run["max_rss"]) if run["max_rss"] != "-" else None,
                    "cpu_s": float(run["cpu_time"]) if run["cpu_time"] != "-" else None,
                }
            )
    columns = ["rule", "job", "wall_s", "max_rss_mb", "cpu_s"]
    if mem_requests is None:
        return pd.DataFrame(rows, columns=columns)
    for row in rows:
        request = mem_requests.get(row["rule"], {}).get(row["job"])
        rss = row["max_rss_mb"]
        row["mem_mb_requested"] = request
        row["over_request"] = bool(request is not None and rss is not None and rss > request)
        if row["over_request"]:
            log.warning(
                "%s %s: max RSS %.0f MB exceeded its request of %d MB (mem_mb): a cluster "
                "would kill it; set the stage's mem_mb higher (the estimate is too low)",
                row["rule"],
                row["job"],
                rss,
                request,
            )
    return pd.DataFrame(rows, columns=[*columns, "mem_mb_requested", "over_request"])
