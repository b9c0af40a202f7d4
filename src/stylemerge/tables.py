"""The paper tables: pandas frames from the runs' metrics, written as CSV, Markdown and LaTeX.

Every table is built from result JSONs alone (no model is loaded), so it can be rebuilt and
tested cheaply; figures reported on the model card stand beside the reproduced ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from stylemerge.io import read_json


def reported() -> dict:
    """The figures the model card reports (src/stylemerge/reported.yaml)."""
    return yaml.safe_load((resources.files("stylemerge") / "reported.yaml").read_text())


def pct_change(new: float | None, old: float | None) -> float | None:
    """Percent change from ``old`` to ``new`` (None when either is missing or old is 0)."""
    if new is None or old is None or old == 0 or not math.isfinite(new * old):
        return None
    return (new - old) / abs(old) * 100.0


def write_table(frame: pd.DataFrame, out_stem: str | Path, caption: str = "") -> list[Path]:
    """``out_stem``.csv, .md and .tex; returns the paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(s) for s in (".csv", ".md", ".tex")]
    frame.to_csv(paths[0], index=False)
    markdown = frame.to_markdown(index=False, floatfmt=".4g")
    paths[1].write_text((f"{caption}\n\n" if caption else "") + markdown + "\n")
    paths[2].write_text(frame.to_latex(index=False, float_format="%.4g", caption=caption or None))
    return paths


def adapters_table(adapters: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per domain: held-out style reward and fluency before -> after GRPO (mean ± se), the
    paired change in standard errors, and whether it cleared 2 se without fluency falling."""
    rows = []
    for domain, metrics in sorted(adapters.items()):
        style = metrics["heldout"]["style_contrast"]
        fluency = metrics["heldout"]["fluency_logprob"]
        z = style["change"]["mean"] / style["change"]["se"] if style["change"]["se"] else None
        rows.append(
            {
                "domain": domain,
                "style_before": style["before"]["mean"],
                "style_after": style["after"]["mean"],
                "style_change": style["change"]["mean"],
                "style_change_se": style["change"]["se"],
                "style_change_z": z,
                "fluency_before": fluency["before"]["mean"],
                "fluency_after": fluency["after"]["mean"],
                "fluency_change": fluency["change"]["mean"],
                "fluency_change_se": fluency["change"]["se"],
                "improved_2se": bool(z is not None and z > 2),
                "prompts": style["change"]["n"],
                "steps": metrics["steps"],
            }
        )
    return pd.DataFrame(rows)


def merges_table(merges: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per merge: mean next-token entropy and held-out loss of the merge, its inputs and the
    base; the entropy change vs the inputs' mean; the calibration, if any."""
    rows = []
    for name, metrics in sorted(merges.items()):
        entropy = metrics["entropy"]
        losses = [v["loss"] for v in entropy["inputs"].values()]
        calibration = metrics.get("calibration") or {}
        final = calibration.get("after", entropy["merged"])
        rows.append(
            {
                "merge": name,
                "method": metrics["method"],
                "space": metrics["space"],
                "entropy_inputs_mean": entropy["inputs_mean"],
                "entropy_base": entropy["base"]["entropy"],
                "entropy_merged": entropy["merged"]["entropy"],
                "entropy_change_vs_inputs_pct": pct_change(
                    entropy["merged"]["entropy"], entropy["inputs_mean"]
                ),
                "loss_inputs_mean": sum(losses) / len(losses),
                "loss_base": entropy["base"]["loss"],
                "loss_merged": entropy["merged"]["loss"],
                "logit_scale": calibration.get("logit_scale"),
                "entropy_calibrated": final["entropy"] if calibration else None,
                "loss_calibrated": final["loss"] if calibration else None,
            }
        )
    return pd.DataFrame(rows)


def think_table(think: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per model: held-out cross-entropy on the traces before -> after optimising the think
    rows (overall and at the tags), with the card's figure beside it."""
    card = reported()["think_heldout_ce_change"]
    rows = []
    for model, metrics in sorted(think.items()):
        before, after = metrics["heldout_ce_before"], metrics["heldout_ce_after"]
        rows.append(
            {
                "model": model,
                "ce_before": before["overall"],
                "ce_after": after["overall"],
                "ce_change_pct": pct_change(after["overall"], before["overall"]),
                "ce_change_pct_reported": card,
                "tag_ce_before": before["think_tags"],
                "tag_ce_after": after["think_tags"],
                "steps": metrics["steps"],
                "other_params_max_change": metrics["frozen_max_abs_change_overall"],
            }
        )
    return pd.DataFrame(rows)


def cost_table(benchmark_dir: str | Path) -> pd.DataFrame:
    """Snakemake's benchmark files as one table: wall time, max RSS and CPU time per rule and
    wildcard (results/benchmarks/<rule>/<wildcards>.tsv)."""
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
    return pd.DataFrame(rows, columns=columns)


def load_dirs(paths, name: str = "metrics.json") -> dict[str, dict]:
    """``{directory name: its metrics JSON}`` for result directories."""
    return {Path(p).name: read_json(Path(p) / name) for p in paths}


def make_tables(
    adapters: list[str | Path],
    merges: list[str | Path],
    think: list[str | Path],
    benchmark_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, pd.DataFrame]:
    """Build and write every table under ``out_dir``; returns the frames by name."""
    frames = {
        "adapters": (
            adapters_table(load_dirs(adapters)),
            "GRPO adapters: held-out style reward and fluency before -> after",
        ),
        "merges": (
            merges_table(load_dirs(merges)),
            "Merges: mean next-token entropy and held-out loss",
        ),
        "think": (
            think_table(load_dirs(think)),
            "Think tokens: held-out CE on reasoning traces before -> after",
        ),
        "cost": (cost_table(benchmark_dir), "Cost per rule and job (Snakemake benchmarks)"),
    }
    for name, (frame, caption) in frames.items():
        write_table(frame, Path(out_dir) / name, caption)
    return {name: frame for name, (frame, _) in frames.items()}
