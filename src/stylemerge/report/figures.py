"""The report's figures (matplotlib, PNG), drawn from the same frames as the tables;
:func:`make_figures` draws them all, each skipped with a warning where its data is missing.

Training (:mod:`stylemerge.report.training_figures`): ``reward_curves.png``,
``grpo_curves.png``, ``style_fluency.png`` and ``ablation_mara.png`` (where the MARA
ablation ran).  Evaluation:

- ``diversity_by_domain.png``: distinct-1 per domain of the base, the chosen merge and its
  think version, with the jackknife interval;
- ``perplexity_by_model.png``: lambada perplexity per evaluated model (the out-of-domain
  text where the run has it, as the card's claim: :func:`one_lambada_text`);
- ``quality_diversity.png``: the quality/diversity trade-off as paired changes vs the base,
  lambada perplexity change (x) against distinct-1 change (y, length-controlled where
  measured), one panel per domain, with the paired intervals of both
  (:func:`quality_diversity_points`);
- ``bits_per_byte.png``: bits per byte per domain and model, with the bootstrap interval
  (:func:`bpb_models`: all models when there are few).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from stylemerge.report.training_figures import (
    TOTAL_REWARD,
    _errors,
    _figure_legend,
    _grid,
    _pyplot,
    _save,
    ablation_mara,
    grpo_curves,
    logged_curves,
    reward_curves,
    style_fluency,
    training_history,
)

log = logging.getLogger(__name__)


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
    _figure_legend(fig, *ax.get_legend_handles_labels())  # below: bars reach the top
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
    log_y = frame["perplexity"].max() > 10 * frame["perplexity"].min()
    if log_y:  # tiny models sit orders of magnitude apart
        ax.set_yscale("log")
    ax.set_ylabel("lambada perplexity" + (" (log scale)" if log_y else ""))
    ax.set_title(
        f"lambada perplexity by model{_text_label(frame)}\n(lower is better; dashed: the base)",
        fontsize=10,
    )
    ax.tick_params(axis="x", rotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(fig, out)


def _text_label(frame: pd.DataFrame) -> str:
    texts = frame["text"].dropna().unique() if "text" in frame else []
    return f", {texts[0]} text" if len(texts) == 1 else ""


# The paired changes vs the base the trade-off figure plots: (table column, points column).
PPL_CHANGE = (
    ("ppl_change_vs_base_pct", "ppl_change_pct"),
    ("vs_base_ci_low_pct", "ppl_ci_low_pct"),
    ("vs_base_ci_high_pct", "ppl_ci_high_pct"),
)
DISTINCT_CHANGE = (
    ("distinct_1_change_vs_base_pct", "distinct_1_change_pct"),
    ("change_ci_low_pct", "distinct_1_ci_low_pct"),
    ("change_ci_high_pct", "distinct_1_ci_high_pct"),
)
LC = "_lc"  # the diversity table's length-controlled columns


def _numeric(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """``frame``'s ``columns`` as numbers (NaN where absent or a text mark)."""
    return pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce") if c in frame else math.nan for c in columns},
        index=frame.index,
    )


def quality_diversity_points(lambada: pd.DataFrame, diversity: pd.DataFrame) -> pd.DataFrame:
    """The points of the trade-off figure, paired changes vs the base: one per domain and
    model (the base left out: it is the origin) with both a lambada perplexity change (of
    one text, :func:`one_lambada_text`) and a distinct-1 change, each with its paired
    interval; distinct-1's length-controlled change (``_lc``) where the table has it, else
    the raw one (``length_controlled`` says which).  ``lambada``:
    :func:`stylemerge.report.tables.lambada_table`; ``diversity``:
    :func:`stylemerge.report.tables.diversity_table`."""
    lambada, _ = one_lambada_text(lambada)
    quality = _numeric(lambada, [c for c, _ in PPL_CHANGE]).set_axis(
        [p for _, p in PPL_CHANGE], axis=1
    )
    quality.insert(0, "model", lambada.get("model"))
    raw = _numeric(diversity, [c for c, _ in DISTINCT_CHANGE]).to_numpy()
    lc = _numeric(diversity, [c + LC for c, _ in DISTINCT_CHANGE]).to_numpy()
    use_lc = ~pd.isna(lc[:, 0])
    spread = pd.DataFrame(
        np.where(use_lc[:, None], lc, raw),
        columns=[p for _, p in DISTINCT_CHANGE],
        index=diversity.index,
    )
    spread.insert(0, "domain", diversity.get("domain"))
    spread.insert(1, "model", diversity.get("model"))
    spread["length_controlled"] = use_lc
    points = spread.merge(quality, on="model", how="inner")
    points = points.dropna(subset=["ppl_change_pct", "distinct_1_change_pct"])
    points = points[points["model"] != "base"]
    columns = ["domain", "model", *(p for _, p in PPL_CHANGE), *(p for _, p in DISTINCT_CHANGE)]
    return points[[*columns, "length_controlled"]].sort_values(
        ["domain", "model"], ignore_index=True
    )


def model_styles(models) -> dict[str, dict]:
    """A colour and marker per model, the same in every panel (and the legend)."""
    markers = "osD^vP*X<>"
    return {
        m: {"color": f"C{i % 10}", "marker": markers[(i + i // 10) % len(markers)]}
        for i, m in enumerate(sorted(models))
    }


def quality_diversity(
    lambada: pd.DataFrame, diversity: pd.DataFrame, out: str | Path
) -> tuple[Path, pd.DataFrame]:
    """Paired changes vs the base, one panel per domain: lambada perplexity change (x, %,
    lower is better) against distinct-1 change (y, %, higher is more diverse), each model
    a marker named in the figure legend, whiskers its paired intervals (bootstrap over
    documents; jackknife over documents); the base is the origin, where the zero lines
    cross.  Returns the path and the plotted points (:func:`quality_diversity_points`)."""
    plt = _pyplot()
    points = quality_diversity_points(lambada, diversity)
    text = one_lambada_text(lambada)[1]
    domains = sorted(points["domain"].unique())
    styles = model_styles(points["model"].unique())
    fig, axes = _grid(len(domains), width=4.5, height=3.8)
    for ax, domain in zip(axes, domains, strict=False):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.plot(0, 0, "k+", markersize=10, markeredgewidth=2)
        panel = points[points["domain"] == domain]
        for i, point in panel.iterrows():
            row = panel.loc[[i]]
            ax.errorbar(
                point["ppl_change_pct"],
                point["distinct_1_change_pct"],
                xerr=_errors(row, "ppl_change_pct", "ppl_ci_low_pct", "ppl_ci_high_pct"),
                yerr=_errors(row, *(p for _, p in DISTINCT_CHANGE)),
                markersize=5,
                capsize=2,
                linewidth=0.7,
                linestyle="",
                label=point["model"],
                **styles[point["model"]],
            )
        lc = panel["length_controlled"]
        kind = "length-controlled" if lc.all() else "raw" if not lc.any() else "lc where measured"
        ax.set_title(domain, fontsize=10)
        ax.set_xlabel(f"Δ lambada perplexity vs base, % ({text or 'lambada'} text)", fontsize=8)
        ax.set_ylabel(f"Δ distinct-1 vs base, % ({kind})", fontsize=8)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color="black", marker="+", linestyle="", markersize=10)] + [
        plt.Line2D([], [], linestyle="", **styles[m]) for m in styles
    ]
    _figure_legend(fig, handles, ["base (0, 0)", *styles])
    fig.suptitle(
        "Quality vs diversity: paired changes vs the base\n"
        "(left: lower perplexity, better; up: more diverse)"
    )
    return _save(fig, out), points


def bpb_models(models: list[str], chosen: str | None, few: int = 6) -> list[str]:
    """The models the bits-per-byte figure compares: all when there are ``few``, else those
    of :func:`diversity_models` and the domain models (``domain_<domain>``)."""
    if len(models) <= few:
        return list(models)
    keep = set(diversity_models(models, chosen)) | {m for m in models if m.startswith("domain_")}
    return [m for m in models if m in keep]


def bpb_domains(frame: pd.DataFrame) -> list[str]:
    """The domain columns of the bits-per-byte table (those with ``_ci_low`` beside them)."""
    return [c for c in frame.columns if f"{c}_ci_low" in frame.columns]


def bits_per_byte(frame: pd.DataFrame, out: str | Path, models: list[str] | None = None) -> Path:
    """Grouped bars: bits per byte per domain (groups) and model (bars, in the table's
    order), with the bootstrap interval's whiskers.  ``frame``:
    :func:`stylemerge.report.tables.bpb_table`."""
    plt = _pyplot()
    domains = bpb_domains(frame)
    models = models or list(frame["model"])
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(domains) * len(models) + 2), 4))
    rows = frame.drop_duplicates("model").set_index("model")
    for i, model in enumerate(models):
        row = rows.loc[model]
        points = pd.DataFrame(
            {
                "v": [row[d] for d in domains],
                "lo": [row[f"{d}_ci_low"] for d in domains],
                "hi": [row[f"{d}_ci_high"] for d in domains],
            }
        ).apply(pd.to_numeric, errors="coerce")
        x = [d + (i - (len(models) - 1) / 2) * width for d in range(len(domains))]
        ax.bar(x, points["v"], width, yerr=_errors(points, "v", "lo", "hi"), capsize=2, label=model)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title("Bits per byte on held-out text (bootstrap interval over documents)")
    _figure_legend(fig, *ax.get_legend_handles_labels())  # below: bars reach the top
    return _save(fig, out)


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


def _present(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame | None:
    """A table, or None where it is absent or empty."""
    frame = tables.get(name)
    return None if frame is None or frame.empty else frame


def _draw(paths: list[Path], out: Path, missing: str | None, draw) -> None:
    """Draw one figure into ``out`` unless its data is ``missing`` (a warning says why)."""
    if missing:
        log.warning("%s skipped: %s", out.name, missing)
    else:
        paths.append(draw(out))


def _training_figures(adapters, tables, out_dir: Path, paths: list[Path]) -> None:
    dirs = {Path(p).name: p for p in adapters}
    none = "no GRPO adapters" if not dirs else None
    _draw(paths, out_dir / "reward_curves.png", none, lambda o: reward_curves(dirs, o))
    curves = logged_curves({n: training_history(p) for n, p in dirs.items()})
    only_reward = (
        "no KL, completion length or entropy logged" if curves in ([], [TOTAL_REWARD]) else None
    )
    _draw(paths, out_dir / "grpo_curves.png", none or only_reward, lambda o: grpo_curves(dirs, o))
    frame = _present(tables, "adapters")
    _draw(
        paths,
        out_dir / "style_fluency.png",
        None if frame is not None else "no adapters table (absent or empty)",
        lambda o: style_fluency(frame, o),
    )
    if "ablation_mara" in tables:  # only when the ablation ran
        frame = _present(tables, "ablation_mara")
        _draw(
            paths,
            out_dir / "ablation_mara.png",
            None if frame is not None else "the ablation table is empty",
            lambda o: ablation_mara(frame, o),
        )


def make_figures(
    adapters: list[str | Path],
    tables: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    chosen: str | None = None,
) -> list[Path]:
    """Every figure under ``out_dir`` from the adapters' training logs and the tables
    (:func:`stylemerge.report.build.make_tables`' frames, by name); returns their paths.  A
    figure whose data is missing is skipped with a warning."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    _training_figures(adapters, tables, out_dir, paths)
    diversity = _present(tables, "diversity")
    lambada = _present(tables, "lambada")
    if lambada is not None:
        lambada, _ = one_lambada_text(lambada)  # one bar and one point per model
    _draw(
        paths,
        out_dir / "diversity_by_domain.png",
        None if diversity is not None else "no diversity table (absent or empty)",
        lambda o: diversity_by_domain(
            diversity, o, diversity_models(sorted(diversity["model"].unique()), chosen)
        ),
    )
    no_ppl = lambada is None or lambada.empty or lambada["perplexity"].isna().all()
    _draw(
        paths,
        out_dir / "perplexity_by_model.png",
        "no lambada perplexity" if no_ppl else None,
        lambda o: perplexity_by_model(lambada, o),
    )
    both = (
        lambada is not None
        and diversity is not None
        and not quality_diversity_points(lambada, diversity).empty
    )
    _draw(
        paths,
        out_dir / "quality_diversity.png",
        None if both else "no model has both a lambada and a distinct-1 change vs the base",
        lambda o: quality_diversity(lambada, diversity, o)[0],
    )
    bpb = _present(tables, "bits_per_byte")
    measured = []  # the models with a bits per byte (not those marked unavailable)
    if bpb is not None:
        values = bpb[bpb_domains(bpb)].apply(pd.to_numeric, errors="coerce")
        measured = list(bpb.loc[values.notna().any(axis=1), "model"])
    _draw(
        paths,
        out_dir / "bits_per_byte.png",
        None if measured else "no bits per byte measured",
        lambda o: bits_per_byte(bpb, o, bpb_models(measured, chosen)),
    )
    return paths
