"""The GRPO training figures (matplotlib, PNG), and the drawing helpers every figure uses;
:func:`stylemerge.report.figures.make_figures` draws them with the evaluation figures.

- ``reward_curves.png``: GRPO reward per step, one panel per adapter (domain and arm): the
  total and each logged component, named in one figure legend;
- ``grpo_curves.png``: per domain (columns), the total reward, KL, completion length and
  entropy against the step (rows: those logged), one line per arm (plain, MARA);
- ``style_fluency.png``: per domain, held-out style reward and fluency before -> after GRPO,
  an arrow per arm, ± 1 se of the paired change at its head (the adapters table);
- ``ablation_mara.png``: the MARA ablation per domain model (and merge): distinct-1 change vs
  the base, style and fluency change, plain vs MARA, with the table's intervals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stylemerge.models.names import MARA_ARM
from stylemerge.report.values import parse_interval

log = logging.getLogger(__name__)

# Reward columns trl's GRPOTrainer logs: the weighted total, then one per reward function.
TOTAL_REWARD = "reward"
DPI = 110
TOTAL_LABEL = "reward (total)"
MARA = MARA_ARM  # an adapter's arm suffix: results/adapters/<domain><arm>
ARMS = {"": "plain", MARA: "MARA"}
ARM_COLOURS = {"plain": "tab:blue", "MARA": "tab:orange"}
# The rows of grpo_curves.png: logged column, axis label.
CURVES = (
    (TOTAL_REWARD, "total reward"),
    ("kl", "KL to reference"),
    ("completions/mean_length", "completion length\n(tokens, mean)"),
    ("entropy", "entropy (nats)"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    """Write ``fig`` as a PNG and close it; figure-level legends sit below the panels."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bottom = 0.0
    if fig.legends:
        fig.canvas.draw()
        height = max(legend.get_window_extent().height for legend in fig.legends)
        bottom = min(0.5, height / fig.bbox.height + 0.01)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    # whole pixels: savefig truncates size × dpi (8.4 in × 110 = 923.99.. -> 923)
    fig.set_size_inches([(round(v * DPI) + 1e-3) / DPI for v in fig.get_size_inches()])
    fig.savefig(out, dpi=DPI)
    _pyplot().close(fig)
    return out


def _errors(points: pd.DataFrame, value: str, low: str, high: str):
    """Asymmetric error bar lengths (0 where there is no interval)."""
    below = (points[value] - points[low].astype(float)).clip(lower=0).fillna(0)
    above = (points[high].astype(float) - points[value]).clip(lower=0).fillna(0)
    return [below.to_numpy(), above.to_numpy()]


def _figure_legend(fig, handles, labels, ncol: int | None = None) -> None:
    fig.legend(handles, labels, loc="lower center", ncol=ncol or min(6, len(labels)), fontsize=8)


def _grid(count: int, cols: int = 3, width: float = 4.0, height: float = 2.8, **kw):
    """A figure of ``count`` panels in rows of ``cols``; the panels beyond ``count`` hidden."""
    cols = min(cols, max(1, count))
    rows = math.ceil(count / cols) or 1
    fig, axes = _pyplot().subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kw
    )
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def split_arm(name: str) -> tuple[str, str]:
    """An adapter's (or domain model's) name as (domain, arm label): "bbc_news-mara" ->
    ("bbc_news", "MARA")."""
    if name.endswith(MARA):
        return name[: -len(MARA)], ARMS[MARA]
    return name, ARMS[""]


def _read_log(adapter_dir: str | Path) -> pd.DataFrame:
    """An adapter's ``log_history.csv``; no rows where it is missing or empty."""
    path = Path(adapter_dir) / "log_history.csv"
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        log.warning("%s: no training log", path)
        return pd.DataFrame()


def reward_history(adapter_dir: str | Path) -> pd.DataFrame:
    """``step`` and the logged reward columns of one adapter's training (rows with a reward);
    no rows where none was logged (a run shorter than ``logging_steps``, or one restored from
    its last checkpoint before trl's end-of-training summary)."""
    history = _read_log(adapter_dir)
    if TOTAL_REWARD not in history.columns:
        log.warning("%s: no reward logged", Path(adapter_dir) / "log_history.csv")
        return pd.DataFrame(columns=["step", TOTAL_REWARD])
    columns = ["step", TOTAL_REWARD] + [
        c for c in history.columns if c.startswith("rewards/") and c.endswith("/mean")
    ]
    return history.loc[history[TOTAL_REWARD].notna(), columns].reset_index(drop=True)


def _component(column: str) -> str:
    return TOTAL_LABEL if column == TOTAL_REWARD else column[len("rewards/") : -len("/mean")]


def reward_curves(adapter_dirs: Mapping[str, str | Path], out: str | Path) -> Path:
    """One panel per adapter (rows: domains, columns: arms, where there is a MARA arm): the
    total reward and each reward component against the step, one colour per component
    across panels, all named in a figure legend."""
    names = sorted(adapter_dirs)
    histories = {name: reward_history(adapter_dirs[name]) for name in names}
    components = sorted({c for h in histories.values() for c in h.columns[2:]})
    colours = {TOTAL_REWARD: "black"} | {c: f"C{i}" for i, c in enumerate(components)}
    domains = sorted({split_arm(n)[0] for n in names})
    arms = [a for a in ARMS.values() if any(split_arm(n)[1] == a for n in names)]
    if len(arms) > 1:  # a row per domain: plain | MARA
        fig, axes = _grid(len(domains) * len(arms), len(arms), sharey="row")
        place = {
            n: domains.index(split_arm(n)[0]) * len(arms) + arms.index(split_arm(n)[1])
            for n in names
        }
        for i, ax in enumerate(axes):
            ax.set_visible(i in place.values())
    else:
        fig, axes = _grid(len(names))
        place = {n: i for i, n in enumerate(names)}
    for name in names:
        ax, history = axes[place[name]], histories[name]
        if history.empty:
            ax.text(0.5, 0.5, "no reward logged", ha="center", va="center", transform=ax.transAxes)
        for column in history.columns[1:]:
            width = 2.0 if column == TOTAL_REWARD else 1.0
            ax.plot(
                history["step"],
                history[column],
                label=_component(column),
                color=colours[column],
                linewidth=width,
            )
        domain, arm = split_arm(name)
        ax.set_title(
            domain if len(arms) == 1 and arm == "plain" else f"{domain} ({arm})", fontsize=10
        )
        ax.set_xlabel("step")
        ax.set_ylabel("reward")
        ax.grid(alpha=0.3)
    plt = _pyplot()
    handles = [plt.Line2D([], [], color=colours[TOTAL_REWARD], linewidth=2.0)] + [
        plt.Line2D([], [], color=colours[c]) for c in components
    ]
    _figure_legend(fig, handles, [TOTAL_LABEL] + [_component(c) for c in components])
    fig.suptitle("GRPO training reward per adapter: total and components")
    return _save(fig, out)


def training_history(adapter_dir: str | Path) -> pd.DataFrame:
    """``step`` and the :data:`CURVES` columns one adapter logged (rows with any of them)."""
    history = _read_log(adapter_dir)
    columns = [c for c, _ in CURVES if c in history.columns]
    if "step" not in history.columns or not columns:
        return pd.DataFrame(columns=["step"])
    rows = history[columns].notna().any(axis=1)
    return history.loc[rows, ["step", *columns]].reset_index(drop=True)


def logged_curves(histories: Mapping[str, pd.DataFrame]) -> list[str]:
    """The :data:`CURVES` columns any history has values of, in their order."""
    return [c for c, _ in CURVES if any(c in h and h[c].notna().any() for h in histories.values())]


def grpo_curves(adapter_dirs: Mapping[str, str | Path], out: str | Path) -> Path:
    """A column per domain and a row per logged training curve (:data:`CURVES`: total reward,
    KL, completion length, entropy) against the step, one line per arm (plain, MARA)."""
    histories = {name: training_history(path) for name, path in adapter_dirs.items()}
    curves = logged_curves(histories)
    labels = dict(CURVES)
    domains = sorted({split_arm(n)[0] for n in histories})
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(curves) or 1,
        len(domains) or 1,
        figsize=(3.6 * max(1, len(domains)), 2.5 * max(1, len(curves))),
        squeeze=False,
        sharex="col",
    )
    arms = []
    for name in sorted(histories, key=lambda n: list(ARMS.values()).index(split_arm(n)[1])):
        domain, arm = split_arm(name)
        history = histories[name]
        arms += [arm] if arm not in arms else []
        for row, curve in enumerate(curves):
            ax = axes[row, domains.index(domain)]
            if curve in history:
                line = history[["step", curve]].dropna()
                ax.plot(line["step"], line[curve], color=ARM_COLOURS[arm], label=arm)
    for (row, col), ax in np.ndenumerate(axes):
        ax.grid(alpha=0.3)
        if row == 0 and domains:
            ax.set_title(domains[col], fontsize=10)
        if col == 0 and curves:
            ax.set_ylabel(labels[curves[row]], fontsize=8)
        if row == axes.shape[0] - 1:
            ax.set_xlabel("step")
    handles = [plt.Line2D([], [], color=ARM_COLOURS[a]) for a in arms]
    _figure_legend(fig, handles, arms)
    fig.suptitle("GRPO training per domain and arm")
    return _save(fig, out)


def style_fluency(adapters: pd.DataFrame, out: str | Path) -> Path:
    """One panel per domain: each arm's adapter as an arrow from (style reward, fluency)
    before GRPO to after it, ± 1 se of the paired change at the head.  ``adapters``:
    :func:`stylemerge.report.tables.adapters_table`."""
    plt = _pyplot()
    frame = adapters.copy()
    frame[["base_domain", "arm"]] = [split_arm(str(n)) for n in frame["domain"]]
    domains = sorted(frame["base_domain"].unique())
    fig, axes = _grid(len(domains), width=4.2, height=3.4)
    for ax, domain in zip(axes, domains, strict=False):
        for _, row in frame[frame["base_domain"] == domain].iterrows():
            before = (row["style_before"], row["fluency_before"])
            after = (row["style_after"], row["fluency_after"])
            colour = ARM_COLOURS[row["arm"]]
            ax.plot(*before, "o", color="black", markersize=5)
            ax.annotate(
                "",
                xy=after,
                xytext=before,
                arrowprops={"arrowstyle": "->", "color": colour, "linewidth": 1.5},
            )
            ax.errorbar(
                *after,
                xerr=row["style_change_se"],
                yerr=row["fluency_change_se"],
                fmt="s",
                color=colour,
                markersize=4,
                capsize=2,
                label=row["arm"],
            )
        ax.set_title(domain, fontsize=10)
        ax.set_xlabel("style reward (held-out, higher: more in style)", fontsize=8)
        ax.set_ylabel("fluency (held-out log-prob/token)", fontsize=8)
        ax.grid(alpha=0.3)
    arms = [a for a in ARMS.values() if a in set(frame["arm"])]
    handles = [plt.Line2D([], [], marker="o", color="black", linestyle="")] + [
        plt.Line2D([], [], marker="s", color=ARM_COLOURS[a]) for a in arms
    ]
    _figure_legend(fig, handles, ["before GRPO"] + [f"after GRPO, {a} (± 1 se)" for a in arms])
    fig.suptitle("Style reward and fluency before -> after GRPO")
    return _save(fig, out)


# The ablation figure's panels: title, value column and interval ("ci": a "[lo, hi]" text
# column; "se": ± 1 se), each with "{arm}" for plain / mara.
ABLATION_PANELS = (
    (
        "distinct-1 change vs base, %",
        "distinct_1_vs_base_pct_{arm}",
        ("ci", "distinct_1_vs_base_ci_{arm}"),
    ),
    ("style reward change (± 1 se)", "style_change_{arm}", ("se", "style_change_se_{arm}")),
    ("fluency change (± 1 se)", "fluency_change_{arm}", ("se", "fluency_change_se_{arm}")),
)


def ablation_bars(frame: pd.DataFrame, value: str, interval: tuple[str, str], arm: str):
    """One arm's bar heights and (below, above) whisker lengths for one ablation panel."""
    heights = pd.to_numeric(frame.get(value.format(arm=arm)), errors="coerce")
    kind, column = interval
    column = column.format(arm=arm)
    if kind == "se":
        se = pd.to_numeric(frame.get(column), errors="coerce").fillna(0).to_numpy()
        return heights.to_numpy(), [se, se]
    bounds = [parse_interval(t) for t in frame.get(column, [None] * len(frame))]
    low = pd.Series([b[0] for b in bounds], index=frame.index)
    high = pd.Series([b[1] for b in bounds], index=frame.index)
    points = pd.DataFrame({"v": heights, "lo": low, "hi": high})
    return heights.to_numpy(), _errors(points, "v", "lo", "hi")


def ablation_mara(frame: pd.DataFrame, out: str | Path, panels: Sequence = ABLATION_PANELS):
    """A panel per measure (:data:`ABLATION_PANELS`), grouped bars per domain model (and
    merge) row: plain vs MARA, with the table's intervals.  ``frame``:
    :func:`stylemerge.report.ablation.mara_ablation_table`."""
    plt = _pyplot()
    frame = frame.reset_index(drop=True)
    names = [f"{d}\n{u}" for d, u in zip(frame["domain"], frame["unit"], strict=True)]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6, 0.9 * len(frame)), 2.8 * len(panels)), squeeze=False
    )
    for ax, (title, value, interval) in zip(axes.flat, panels, strict=True):
        arms = {a: ablation_bars(frame, value, interval, a) for a in ("plain", "mara")}
        shown = [
            i for i in range(len(frame)) if any(not math.isnan(h[0][i]) for h in arms.values())
        ]
        for k, (arm, (heights, (below, above))) in enumerate(arms.items()):
            x = [j + (k - 0.5) * 0.38 for j in range(len(shown))]
            label = ARMS[MARA] if arm == "mara" else ARMS[""]
            ax.bar(
                x,
                heights[shown],
                0.38,
                yerr=[below[shown], above[shown]],
                capsize=2,
                color=ARM_COLOURS[label],
                label=label,
            )
        ax.set_xticks(range(len(shown)), [names[i] for i in shown], fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=ARM_COLOURS[a]) for a in ARMS.values()]
    _figure_legend(fig, handles, list(ARMS.values()))
    fig.suptitle("MARA ablation: plain vs MARA GRPO")
    return _save(fig, out)
