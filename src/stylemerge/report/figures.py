"""The report's figures (matplotlib, PNG), drawn from the same frames as the tables.

- ``reward_curves.png``: GRPO training reward per step, one panel per domain (the adapters'
  ``log_history.csv``);
- ``diversity_by_domain.png``: distinct-1 per domain for every evaluated model, with the
  jackknife interval;
- ``perplexity_by_model.png``: lambada perplexity per evaluated model (the out-of-domain
  text where the run has it, as the card's claim: :func:`one_lambada_text`);
- ``quality_diversity.png``: the quality/diversity trade-off, every model with both numbers
  placed by lambada perplexity (x) against distinct-1 (y), one panel per domain, with the
  intervals of both (:func:`quality_diversity_points`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

# Reward columns trl's GRPOTrainer logs: the weighted total, then one per reward function.
TOTAL_REWARD = "reward"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def reward_history(adapter_dir: str | Path) -> pd.DataFrame:
    """``step`` and the logged reward columns of one adapter's training (rows with a reward);
    no rows where none was logged (a run shorter than ``logging_steps``, or one restored from
    its last checkpoint before trl's end-of-training summary)."""
    path = Path(adapter_dir) / "log_history.csv"
    try:
        history = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        history = pd.DataFrame()
    if TOTAL_REWARD not in history.columns:
        log.warning("%s: no reward logged", path)
        return pd.DataFrame(columns=["step", TOTAL_REWARD])
    columns = ["step", TOTAL_REWARD] + [
        c for c in history.columns if c.startswith("rewards/") and c.endswith("/mean")
    ]
    return history.loc[history[TOTAL_REWARD].notna(), columns].reset_index(drop=True)


def reward_curves(adapter_dirs: Mapping[str, str | Path], out: str | Path) -> Path:
    """One panel per domain: total reward and each reward component against the step."""
    plt = _pyplot()
    domains = sorted(adapter_dirs)
    cols = min(3, max(1, len(domains)))
    rows = math.ceil(len(domains) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        history = reward_history(adapter_dirs[domain])
        if history.empty:
            ax.text(0.5, 0.5, "no reward logged", ha="center", va="center", transform=ax.transAxes)
        for column in history.columns[1:]:
            label = column.removeprefix("rewards/").removesuffix("/mean")
            style = {"linewidth": 2.0} if column == TOTAL_REWARD else {"linewidth": 1.0}
            ax.plot(history["step"], history[column], label=label, **style)
        ax.set_title(domain, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    if domains:
        axes.flat[0].set_ylabel("reward")
        axes.flat[0].legend(fontsize=7)
    fig.suptitle("GRPO training reward per domain")
    return _save(fig, out)


def diversity_by_domain(frame: pd.DataFrame, out: str | Path, models: list[str] | None = None):
    """Grouped bars: distinct-1 per domain (groups) and model (bars), with CI whiskers.
    ``frame``: :func:`stylemerge.report.tables.diversity_table`."""
    plt = _pyplot()
    models = models or sorted(frame["model"].unique())
    domains = sorted(frame["domain"].unique())
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(domains)), 4))
    for i, model in enumerate(models):
        rows = frame[frame["model"] == model].set_index("domain").reindex(domains)
        x = [d + (i - (len(models) - 1) / 2) * width for d in range(len(domains))]
        low = (rows["distinct_1"] - rows["distinct_1_ci_low"]).clip(lower=0)
        high = (rows["distinct_1_ci_high"] - rows["distinct_1"]).clip(lower=0)
        ax.bar(x, rows["distinct_1"], width, yerr=[low, high], capsize=2, label=model)
    ax.set_xticks(range(len(domains)), domains, rotation=30, ha="right")
    ax.set_ylabel("distinct-1")
    ax.set_title("Distinct-1 by domain (jackknife interval)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out)


def perplexity_by_model(frame: pd.DataFrame, out: str | Path) -> Path:
    """Bars: lambada perplexity per model, the base's as a dashed line.
    ``frame``: :func:`stylemerge.report.tables.lambada_table`."""
    plt = _pyplot()
    frame = frame.dropna(subset=["perplexity"])
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(frame)), 4))
    ax.bar(frame["model"], frame["perplexity"])
    base = frame.loc[frame["model"] == "base", "perplexity"]
    if len(base):
        ax.axhline(float(base.iloc[0]), color="k", linestyle="--", linewidth=1, label="base")
        ax.legend()
    ax.set_yscale("log")  # tiny models sit orders of magnitude apart
    ax.set_ylabel(f"lambada perplexity{_text_label(frame)} (log scale)")
    ax.set_title("lambada perplexity by model (lower is better)")
    ax.tick_params(axis="x", rotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(fig, out)


def _text_label(frame: pd.DataFrame) -> str:
    texts = frame["text"].dropna().unique() if "text" in frame else []
    return f", {texts[0]} text" if len(texts) == 1 else ""


def quality_diversity_points(lambada: pd.DataFrame, diversity: pd.DataFrame) -> pd.DataFrame:
    """The points of the trade-off figure: one per domain and model that has both a lambada
    perplexity and a distinct-1, with their intervals (None where there is none).
    ``lambada``: :func:`stylemerge.report.tables.lambada_table`; ``diversity``:
    :func:`stylemerge.report.tables.diversity_table`."""
    x = ["perplexity", "perplexity_ci_low", "perplexity_ci_high"]
    y = ["distinct_1", "distinct_1_ci_low", "distinct_1_ci_high"]
    quality = lambada.reindex(columns=["model", *x]).dropna(subset=["perplexity"])
    spread = diversity.reindex(columns=["domain", "model", *y]).dropna(subset=["distinct_1"])
    points = spread.merge(quality, on="model", how="inner")
    return points[["domain", "model", *x, *y]].sort_values(["domain", "model"], ignore_index=True)


def _errors(points: pd.DataFrame, value: str, low: str, high: str):
    """Asymmetric error bar lengths (0 where there is no interval)."""
    below = (points[value] - points[low].astype(float)).clip(lower=0).fillna(0)
    above = (points[high].astype(float) - points[value]).clip(lower=0).fillna(0)
    return [below.to_numpy(), above.to_numpy()]


def quality_diversity(
    lambada: pd.DataFrame, diversity: pd.DataFrame, out: str | Path
) -> tuple[Path, pd.DataFrame]:
    """Labelled points, lambada perplexity (x, lower is better; a log scale when the models
    span more than a factor of 10) against distinct-1
    (y: higher is more diverse), one panel per domain, bars from the bootstrap (perplexity)
    and jackknife (distinct-1) intervals. Returns the path and the plotted points
    (:func:`quality_diversity_points`)."""
    plt = _pyplot()
    points = quality_diversity_points(lambada, diversity)
    domains = sorted(points["domain"].unique())
    cols = min(3, max(1, len(domains)))
    rows = math.ceil(len(domains) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        panel = points[points["domain"] == domain]
        ax.errorbar(
            panel["perplexity"],
            panel["distinct_1"],
            xerr=_errors(panel, "perplexity", "perplexity_ci_low", "perplexity_ci_high"),
            yerr=_errors(panel, "distinct_1", "distinct_1_ci_low", "distinct_1_ci_high"),
            fmt="o",
            markersize=4,
            capsize=2,
            linewidth=0.8,
        )
        for _, point in panel.iterrows():
            ax.annotate(
                point["model"],
                (point["perplexity"], point["distinct_1"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        log_x = points["perplexity"].max() > 10 * points["perplexity"].min()
        if log_x:  # tiny models sit orders of magnitude apart
            ax.set_xscale("log")
        ax.set_title(domain, fontsize=10)
        ax.set_xlabel(
            f"lambada perplexity{_text_label(lambada)}" + (" (log scale)" if log_x else "")
        )
        ax.set_ylabel("distinct-1")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    fig.suptitle("Quality (lambada perplexity, lower is better) vs diversity (distinct-1)")
    return _save(fig, out), points


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out


def diversity_models(models: list[str], chosen: str | None) -> list[str]:
    """The models the diversity figure compares: the base, the chosen merge and its
    think-optimised version where present (all nine domain models would crowd it)."""
    keep = ["base", chosen, f"think_{chosen}"] if chosen else ["base"]
    return [m for m in keep if m in models] or sorted(models)


def one_lambada_text(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of one lambada text, and its name: the out-of-domain text (the card's) where
    any model has it, else the in-domain one; a table without ``text`` (an older one) whole."""
    from stylemerge.evaluate.task_data import LAMBADA_TEXTS

    if "text" not in frame:
        return frame, ""
    for text in LAMBADA_TEXTS:
        rows = frame[frame["text"] == text]
        if rows["perplexity"].notna().any():
            return rows, text
    return frame.iloc[0:0], ""


def make_figures(
    adapters: list[str | Path],
    lambada: pd.DataFrame,
    diversity: pd.DataFrame,
    out_dir: str | Path,
    chosen: str | None = None,
) -> list[Path]:
    """Every figure under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = [reward_curves({Path(p).name: p for p in adapters}, out_dir / "reward_curves.png")]
    if len(diversity):
        models = diversity_models(sorted(diversity["model"].unique()), chosen)
        paths.append(diversity_by_domain(diversity, out_dir / "diversity_by_domain.png", models))
    lambada, _ = one_lambada_text(lambada)  # one bar and one point per model
    if len(lambada):
        paths.append(perplexity_by_model(lambada, out_dir / "perplexity_by_model.png"))
    if len(lambada) and len(diversity):
        if quality_diversity_points(lambada, diversity).empty:
            log.warning("no model has both a lambada perplexity and a distinct-1: no trade-off")
        else:
            path, _ = quality_diversity(lambada, diversity, out_dir / "quality_diversity.png")
            paths.append(path)
    return paths
