"""A tier's results page (``docs/results-<tier>.md``), written from a snapshot of its tables
rather than typed: the claims table, then each main table with its caption, n and intervals,
then the cost per rule.  :mod:`stylemerge.cli.results` takes the snapshot and writes the page;
a test regenerates every committed page from its committed snapshot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from stylemerge.core.files import read_json
from stylemerge.report.values import format_interval
from stylemerge.stats.intervals import finite

# Each table's caption, as make_tables writes it (stylemerge.report.build).
CAPTIONS = {
    "card": "The model card's claims: card, ours with its 95 % interval, n (documents), p "
    "(raw, Holm-adjusted over the claims), verdict",
    "lambada": "lambada: perplexity and accuracy, % change vs base and comparison",
    "gsm8k_think": "gsm8k-style 3-shot accuracy, original vs optimised think tokens",
    "bits_per_byte": "Bits per byte on held-out text",
    "diversity": "Text diversity per domain: distinct-1, EAD-1, self-diversity",
    "adapters": "GRPO adapters: held-out style reward and fluency before -> after",
    "merges": "Merges: mean next-token entropy and held-out loss",
    "think": "Think tokens: held-out CE on reasoning traces before -> after",
    "cost": "Cost per rule and job (Snakemake benchmarks; memory requested, flagged if exceeded)",
    "ablation_mara": "MARA ablation: each domain model and the chosen merge without and with MARA",
}
# The tables of a page, in its order (the claims first; cost is summarised per rule).
MAIN_TABLES = (
    "adapters",
    "ablation_mara",
    "lambada",
    "diversity",
    "bits_per_byte",
    "merges",
    "think",
    "gsm8k_think",
)
TIERS = {
    "default": "the embedded default (tiny models: the machinery, not the recipe's effects)",
    "smol": "the smol tier (SmolLM2-135M)",
    "paper": "paper scale (Qwen3-4B-Base)",
}
SNAPSHOT_FILES = ("*.csv", "provenance.json")


def _cell(value) -> str:
    """One Markdown cell: numbers to 4 significant digits, missing as an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *rows])


def _interval(low, high) -> str:
    return format_interval(low, high, ".4g") or ""


def card_view(card: pd.DataFrame) -> pd.DataFrame:
    """The claims table as a reader scans it: the interval in one column, Holm's p."""
    view = pd.DataFrame(
        {
            "claim": card["claim"],
            "model": card["model"],
            "card": card["card"],
            "ours": card["ours"],
            "95 % interval": [
                _interval(lo, hi) for lo, hi in zip(card["ci_low"], card["ci_high"], strict=True)
            ],
            "unit": card["unit"],
            "n": card["n"],
        }
    )
    if "seeds" in card:
        view["seeds"] = card["seeds"]
    view["p (Holm)"] = card["p_holm"]
    view["verdict"] = card["verdict"]
    view["detail"] = card["detail"]
    return view


def cost_summary(cost: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, summed and per-job wall time, peak RSS, jobs over their request."""
    rows = []
    for rule, jobs in cost.groupby("rule", sort=False):
        over = jobs["over_request"].astype(str).eq("True").sum() if "over_request" in jobs else 0
        rows.append(
            {
                "rule": rule,
                "jobs": len(jobs),
                "wall s, sum": round(float(jobs["wall_s"].sum())),
                "wall s, per job": round(float(jobs["wall_s"].mean())),
                "peak RSS MB": round(float(jobs["max_rss_mb"].max())),
                "over request": int(over),
            }
        )
    return pd.DataFrame(rows).sort_values("wall s, sum", ascending=False, kind="stable")


def _read(directory: Path, name: str) -> pd.DataFrame | None:
    path = directory / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _provenance_lines(provenance: Mapping | None) -> list[str]:
    if not provenance:
        return []
    git = provenance.get("git") or {}
    packages = provenance.get("packages") or {}
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v)
    seeds = provenance.get("seeds") or [provenance.get("seed")]
    return [
        f"- made {provenance.get('created')}, git `{git.get('revision')}`"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- seeds: {', '.join(map(str, seeds))}; config sha256 `{provenance.get('config_sha256')}`",
        f"- packages: {versions}",
    ]


def summary(snapshot: str | Path) -> str:
    """The README's few lines of a tier: each claim of its card (pooled where seeds were),
    ours with its interval and n, and the verdict."""
    snapshot = Path(snapshot)
    card = _read(snapshot / "pooled", "card")
    if card is None:
        card = _read(snapshot / "tables", "card")
    view = card_view(card)
    ours = [
        f"{_cell(v)} {i}".strip() if finite(v) is not None else "—"
        for v, i in zip(view["ours"], view["95 % interval"], strict=True)
    ]
    frame = pd.DataFrame(
        {
            "claim": view["claim"],
            "card": view["card"],
            "ours [95 % interval]": ours,
            "unit": view["unit"],
            "n": view["n"],
            "verdict": view["verdict"],
        }
    )
    return markdown_table(frame) + "\n"


def _section(title: str, caption: str, frame: pd.DataFrame) -> list[str]:
    return [f"## {title}", "", caption, "", markdown_table(frame), ""]


def render(tier: str, snapshot: str | Path) -> str:
    """The page of ``tier`` from ``snapshot`` (``tables/`` and, for replicates, ``pooled/``,
    as :func:`stylemerge.cli.results.take_snapshot` copies them)."""
    snapshot = Path(snapshot)
    tables, pooled = snapshot / "tables", snapshot / "pooled"
    lines = [
        f"# Results: {TIERS[tier]}",
        "",
        f"Generated by `python -m stylemerge.cli.results {tier} <run directory>` from the "
        f"tables in `docs/results/{tier}/` (a copy of the run's `tables/` and `pooled/`); "
        "do not edit by hand. How to read the intervals and verdicts: README, *Statistics*.",
        "",
    ]
    pooled_card = _read(pooled, "card")
    if pooled_card is not None:
        prov = (
            read_json(pooled / "provenance.json")
            if (pooled / "provenance.json").is_file()
            else None
        )
        lines += _section(
            "The card's claims, seeds pooled", CAPTIONS["card"], card_view(pooled_card)
        )
        lines += ["Made by:", "", *_provenance_lines(prov), ""]
    card = _read(tables, "card")
    if card is not None:
        title = (
            "The card's claims, the run's own seed"
            if pooled_card is not None
            else "The card's claims"
        )
        lines += _section(title, CAPTIONS["card"], card_view(card))
    prov = read_json(tables / "provenance.json") if (tables / "provenance.json").is_file() else None
    lines += ["Made by:", "", *_provenance_lines(prov), ""]
    for name in MAIN_TABLES:
        frame = _read(tables, name)
        if frame is not None:
            lines += _section(f"`{name}`", CAPTIONS[name], frame)
    cost = _read(tables, "cost")
    if cost is not None and len(cost):
        lines += _section("Cost per rule", CAPTIONS["cost"], cost_summary(cost))
    return "\n".join(lines).rstrip() + "\n"
