import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stylemerge.report import figures, training_figures
from stylemerge.report.figures import (
    bits_per_byte,
    bpb_models,
    diversity_models,
    make_figures,
    one_lambada_text,
    quality_diversity,
    quality_diversity_points,
)
from stylemerge.report.training_figures import (
    ablation_mara,
    grpo_curves,
    reward_curves,
    reward_history,
    style_fluency,
)
from stylemerge.report.values import format_interval, parse_interval

PNG = b"\x89PNG\r\n\x1a\n"
DPI = 110  # training_figures._save


@pytest.fixture
def drawn(monkeypatch):
    """{file name: the matplotlib Figure saved there}: each figure as drawn, to inspect."""
    saved = {}
    save = training_figures._save

    def keep(fig, out):
        saved[Path(out).name] = fig
        return save(fig, out)

    for module in (figures, training_figures):  # each module's figures save through its own
        monkeypatch.setattr(module, "_save", keep)
    return saved


def check_png(path, fig):
    """The PNG has the figure's size in pixels and is not blank: many colours, and ink
    (pixels far from the background) over a real part of it."""
    from matplotlib.image import imread

    image = imread(path)[..., :3]
    width, height = fig.get_size_inches() * DPI
    assert image.shape[:2] == (round(height), round(width)), path.name
    colours = np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50, path.name
    ink = (np.abs(image - image[0, 0]).sum(-1) > 0.3).mean()
    assert 0.01 < ink < 0.6, (path.name, ink)


def bar_heights(ax):
    return [patch.get_height() for patch in ax.patches]


def bars(ax):
    """The bar containers of ``ax`` (a bar with whiskers adds an errorbar container too)."""
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def heights(container):
    return [patch.get_height() for patch in container.patches]


def visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def legend_texts(fig):
    """The texts of the figure-level legends."""
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def whiskers(container, axis="y"):
    """(low, high) of each whisker of an errorbar (or bar-with-error) container."""
    container = getattr(container, "errorbar", None) or container
    collections = container.lines[2]
    collection = collections[0] if axis == "x" or len(collections) == 1 else collections[1]
    i = 0 if axis == "x" else 1
    return [tuple(sorted((a[i], b[i]))) for a, b in collection.get_segments()]


def flat(pairs):
    return [float(v) for pair in pairs for v in pair]


def write_history(path, rewards, extra=None, **columns):
    """A trl log_history.csv: reward rows (with ``extra`` components and ``columns`` as
    functions of the step) and trl's summary row."""
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for step, reward in enumerate(rewards, start=1):
        row = {
            "step": step,
            "reward": reward,
            "rewards/style_contrast/mean": reward / 2,
            "rewards/style_contrast/std": 0.1,
            "loss": 0.5,
        }
        row |= {f"rewards/{name}/mean": 0.01 * step for name in extra or []}
        row |= {name: f(step) for name, f in columns.items()}
        rows.append(row)
    rows.append({"step": len(rewards), "train_runtime": 12.0})  # trl's summary row
    pd.DataFrame(rows).to_csv(path / "log_history.csv", index=False)
    return path


CURVES = {
    "kl": lambda s: 0.01 * s,
    "completions/mean_length": lambda s: 30.0 + s,
    "entropy": lambda s: 3.0 - 0.1 * s,
}


def test_reward_history_keeps_reward_rows_and_component_means(tmp_path):
    history = reward_history(write_history(tmp_path / "bbc_news", [0.1, 0.3, 0.2]))
    assert list(history.columns) == ["step", "reward", "rewards/style_contrast/mean"]
    assert history["reward"].tolist() == [0.1, 0.3, 0.2]
    assert history["rewards/style_contrast/mean"].tolist() == pytest.approx([0.05, 0.15, 0.1])


def test_a_history_without_rewards_gives_an_empty_panel(tmp_path, caplog, drawn):
    (tmp_path / "x").mkdir()
    pd.DataFrame({"step": [1], "loss": [0.1]}).to_csv(tmp_path / "x/log_history.csv")
    assert reward_history(tmp_path / "x").empty
    assert "x/log_history.csv: no reward logged" in caplog.text
    (tmp_path / "y").mkdir()
    (tmp_path / "y/log_history.csv").write_text("\n")  # pandas' CSV of an empty log
    assert reward_history(tmp_path / "y").empty
    (tmp_path / "z").mkdir()  # no log at all: an empty panel too, not an exception
    assert reward_history(tmp_path / "z").empty
    dirs = {name: tmp_path / name for name in "xyz"}
    out = reward_curves(dirs, tmp_path / "r.png")
    assert out.read_bytes()[:8] == PNG
    panels = visible(drawn["r.png"])
    assert [ax.get_title() for ax in panels] == ["x", "y", "z"]
    for ax in panels:
        assert [t.get_text() for t in ax.texts] == ["no reward logged"]
        assert all(len(line.get_xydata()) == 0 for line in ax.get_lines())


def test_reward_curves_name_every_line_of_every_panel(tmp_path, drawn):
    dirs = {
        "bbc_news": write_history(tmp_path / "bbc_news", [0.1, 0.2]),
        "bbc_news-mara": write_history(tmp_path / "bbc_news-mara", [0.3, 0.1], ["mara_bonus"]),
        "github_python": write_history(tmp_path / "github_python", [0.2, 0.4], ["char_profile"]),
    }
    reward_curves(dirs, tmp_path / "r.png")
    fig = drawn["r.png"]
    names = ["reward (total)", "char_profile", "mara_bonus", "style_contrast"]
    assert legend_texts(fig) == names
    panels = visible(fig)  # a row per domain, plain | MARA (github_python has no MARA arm)
    assert [ax.get_title() for ax in panels] == [
        "bbc_news (plain)",
        "bbc_news (MARA)",
        "github_python (plain)",
    ]
    colours = {}
    for ax in panels:
        assert ax.get_lines()
        for line in ax.get_lines():
            assert line.get_label() in names, (ax.get_title(), line.get_label())
            # one colour per component across panels, as the legend shows
            assert colours.setdefault(line.get_label(), line.get_color()) == line.get_color()
    mara = {line.get_label(): line for line in panels[1].get_lines()}
    assert list(mara["mara_bonus"].get_ydata()) == pytest.approx([0.01, 0.02])
    assert list(mara["reward (total)"].get_ydata()) == [0.3, 0.1]
    handles = {
        t.get_text(): h
        for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles, strict=True)
    }
    assert {n: handles[n].get_color() for n in colours} == colours


def test_grpo_curves_have_a_row_per_logged_curve_and_a_line_per_arm(tmp_path, drawn):
    no_entropy = {k: f for k, f in CURVES.items() if k != "entropy"}
    dirs = {
        "ao3_english": write_history(tmp_path / "ao3_english", [0.1, 0.2, 0.3], **CURVES),
        "ao3_english-mara": write_history(
            tmp_path / "ao3_english-mara", [0.4, 0.5, 0.6], ["mara_bonus"], **no_entropy
        ),
        "bbc_news": write_history(tmp_path / "bbc_news", [0.2, 0.1], **CURVES),
    }
    out = grpo_curves(dirs, tmp_path / "g.png")
    fig = drawn["g.png"]
    check_png(out, fig)
    axes = np.array(fig.axes).reshape(4, 2)  # rows: curves; columns: domains
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [
        "total reward",
        "KL to reference",
        "completion length\n(tokens, mean)",
        "entropy (nats)",
    ]
    assert [ax.get_title() for ax in axes[0]] == ["ao3_english", "bbc_news"]
    assert legend_texts(fig) == ["plain", "MARA"]
    for row, column in enumerate(["reward", *CURVES]):
        lines = {line.get_label(): line for line in axes[row, 0].get_lines()}
        expected = ["plain", "MARA"] if column != "entropy" else ["plain"]  # MARA: no entropy
        assert list(lines) == expected, column
        assert [line.get_label() for line in axes[row, 1].get_lines()] == ["plain"]
        f = CURVES.get(column, lambda s: [0.1, 0.2, 0.3][s - 1])
        assert list(lines["plain"].get_ydata()) == pytest.approx([f(s) for s in (1, 2, 3)])
        assert list(lines["plain"].get_xdata()) == [1, 2, 3]
    mara = {line.get_label(): line for line in axes[0, 0].get_lines()}["MARA"]
    assert list(mara.get_ydata()) == [0.4, 0.5, 0.6]


ADAPTERS = pd.DataFrame(
    {
        "domain": ["ao3_english", "ao3_english-mara", "bbc_news"],
        "style_before": [-0.2, -0.2, -0.4],
        "style_after": [-0.1, -0.15, -0.1],
        "style_change_se": [0.01, 0.02, 0.03],
        "fluency_before": [-3.4, -3.4, -3.6],
        "fluency_after": [-3.6, -4.1, -3.2],
        "fluency_change_se": [0.07, 0.08, 0.12],
    }
)


def test_style_fluency_draws_an_arrow_per_arm_before_to_after(tmp_path, drawn):
    out = style_fluency(ADAPTERS, tmp_path / "s.png")
    check_png(out, drawn["s.png"])
    panels = {ax.get_title(): ax for ax in visible(drawn["s.png"])}
    assert sorted(panels) == ["ao3_english", "bbc_news"]
    assert legend_texts(drawn["s.png"]) == [
        "before GRPO",
        "after GRPO, plain (± 1 se)",
        "after GRPO, MARA (± 1 se)",
    ]
    for _, row in ADAPTERS.iterrows():
        domain, arm = training_figures.split_arm(row["domain"])
        ax = panels[domain]
        (bar,) = [c for c in ax.containers if c.get_label() == arm]
        after = (row["style_after"], row["fluency_after"])
        assert tuple(bar.lines[0].get_xydata()[0]) == pytest.approx(after)
        style_se, fluency_se = row["style_change_se"], row["fluency_change_se"]
        assert whiskers(bar, "x") == [pytest.approx((after[0] - style_se, after[0] + style_se))]
        assert whiskers(bar, "y") == [pytest.approx((after[1] - fluency_se, after[1] + fluency_se))]
        before = (row["style_before"], row["fluency_before"])
        assert any(
            a.xy == pytest.approx(after) and a.xyann == pytest.approx(before) for a in ax.texts
        )


def test_interval_text_reads_the_tables_bounds():
    assert parse_interval("[-12.4, +0.155]") == (-12.4, 0.155)
    assert parse_interval(format_interval(-0.0123, 4.56)) == (-0.0123, 4.56)
    assert format_interval(float("nan"), 1.0) is None
    assert all(math.isnan(v) for v in parse_interval(None))
    assert all(math.isnan(v) for v in parse_interval("n/a"))


ABLATION = pd.DataFrame(
    {
        "unit": ["domain model", "domain model", "merge karcher"],
        "domain": ["ao3_english", "bbc_news", "ao3_english"],
        "distinct_1_vs_base_pct_plain": [-6.0, -2.5, -5.0],
        "distinct_1_vs_base_ci_plain": ["[-12.4, +0.155]", "[-8.86, +3.44]", "[-11.6, +0.88]"],
        "distinct_1_vs_base_pct_mara": [2.0, 4.0, 2.5],
        "distinct_1_vs_base_ci_mara": ["[-6.57, +10.9]", "[-1.11, +9.67]", None],
        "style_change_plain": [0.08, 0.3, None],
        "style_change_se_plain": [0.01, 0.03, None],
        "style_change_mara": [0.04, 0.27, None],
        "style_change_se_mara": [0.02, 0.027, None],
        "fluency_change_plain": [-0.25, 0.4, None],
        "fluency_change_se_plain": [0.07, 0.12, None],
        "fluency_change_mara": [-0.7, -0.2, None],
        "fluency_change_se_mara": [0.08, 0.07, None],
    }
)


def test_ablation_figure_draws_both_arms_per_domain_model(tmp_path, drawn):
    out = ablation_mara(ABLATION, tmp_path / "a.png")
    fig = drawn["a.png"]
    check_png(out, fig)
    assert legend_texts(fig) == ["plain", "MARA"]
    distinct, style, fluency = fig.axes
    assert [t.get_text() for t in distinct.get_xticklabels()] == [
        "ao3_english\ndomain model",
        "bbc_news\ndomain model",
        "ao3_english\nmerge karcher",
    ]
    assert [t.get_text() for t in fluency.get_xticklabels()] == [
        "ao3_english\ndomain model",
        "bbc_news\ndomain model",
    ]  # the merge has no fluency change
    plain, mara = bars(distinct)
    assert (plain.get_label(), mara.get_label()) == ("plain", "MARA")
    assert heights(plain) == [-6.0, -2.5, -5.0]
    assert heights(mara) == [2.0, 4.0, 2.5]
    assert flat(whiskers(plain)) == pytest.approx([-12.4, 0.155, -8.86, 3.44, -11.6, 0.88])
    # the merge's MARA arm has no interval: no whisker
    assert flat(whiskers(mara)) == pytest.approx([-6.57, 10.9, -1.11, 9.67, 2.5, 2.5])
    for ax, column in ((style, "style_change"), (fluency, "fluency_change")):
        for container, arm in zip(bars(ax), ("plain", "mara"), strict=True):
            values = ABLATION[f"{column}_{arm}"][:2]
            se = ABLATION[f"{column}_se_{arm}"][:2]
            assert heights(container) == list(values)
            expected = zip(values - se, values + se, strict=True)
            assert flat(whiskers(container)) == pytest.approx(flat(expected))


def test_diversity_figure_singles_out_base_and_chosen_merge():
    models = ["base", "domain_bbc_news", "karcher", "linear", "think_karcher"]
    assert diversity_models(models, "karcher") == ["base", "karcher", "think_karcher"]
    assert diversity_models(["a", "b"], "karcher") == ["a", "b"]


def test_bits_per_byte_figure_keeps_all_few_models_or_the_chosen_ones():
    few = ["base", "karcher", "linear"]
    assert bpb_models(few, "karcher") == few
    many = ["base", "karcher", "linear", "ties", "wave", "think_karcher", "domain_bbc_news"]
    assert bpb_models(many, "karcher") == ["base", "karcher", "think_karcher", "domain_bbc_news"]


LAMBADA = pd.DataFrame(
    {
        "model": ["base", "karcher", "think_karcher", "wave", "base", "karcher"],
        "text": ["out-of-domain"] * 4 + ["in-domain"] * 2,
        "perplexity": [20.0, 18.0, 18.5, 19.0, 10.0, 9.0],
        "ppl_change_vs_base_pct": [0.0, -10.0, -7.5, -5.0, 0.0, -10.0],
        "vs_base_ci_low_pct": [0.0, -14.0, None, -9.0, 0.0, -12.0],
        "vs_base_ci_high_pct": [0.0, -6.0, None, -1.0, 0.0, -8.0],
    }
)
DIVERSITY = pd.DataFrame(
    {
        "domain": ["bbc_news", "bbc_news", "bbc_news", "ao3_english", "ao3_english", "bbc_news"],
        "model": ["base", "karcher", "think_karcher", "base", "karcher", "domain_bbc_news"],
        "distinct_1": [0.5, 0.55, 0.52, 0.6, 0.66, 0.4],
        "distinct_1_ci_low": [0.45, 0.5, 0.5, 0.55, 0.6, 0.3],
        "distinct_1_ci_high": [0.55, 0.6, 0.54, 0.65, 0.7, 0.5],
        "distinct_1_change_vs_base_pct": [0.0, 10.0, 4.0, 0.0, 10.0, -20.0],
        "change_ci_low_pct": [0.0, 2.0, -1.0, 0.0, 1.0, -30.0],
        "change_ci_high_pct": [0.0, 18.0, 9.0, 0.0, 19.0, -10.0],
        # length-controlled where measured: think_karcher's is not (an older result)
        "distinct_1_change_vs_base_pct_lc": [0.0, 8.0, None, 0.0, 7.0, -15.0],
        "change_ci_low_pct_lc": [0.0, 1.0, None, 0.0, -1.0, -25.0],
        "change_ci_high_pct_lc": [0.0, 15.0, None, 0.0, 15.0, -5.0],
    }
)  # "wave" has no distinct-1 and domain_bbc_news no lambada: neither is plotted


def test_quality_diversity_points_are_the_tables_paired_changes(tmp_path, drawn):
    out, points = quality_diversity(LAMBADA, DIVERSITY, tmp_path / "qd.png")
    check_png(out, drawn["qd.png"])
    assert points.equals(quality_diversity_points(LAMBADA, DIVERSITY))
    # the out-of-domain text's changes; distinct-1 length-controlled where measured
    expected = pd.DataFrame(
        [
            ["ao3_english", "karcher", -10.0, -14.0, -6.0, 7.0, -1.0, 15.0],
            ["bbc_news", "karcher", -10.0, -14.0, -6.0, 8.0, 1.0, 15.0],
            ["bbc_news", "think_karcher", -7.5, math.nan, math.nan, 4.0, -1.0, 9.0],
        ],
        columns=list(points.columns[:-1]),
    )
    pd.testing.assert_frame_equal(points.drop(columns="length_controlled"), expected)
    assert points["length_controlled"].tolist() == [True, True, False]
    fig = drawn["qd.png"]
    assert legend_texts(fig) == ["base (0, 0)", "karcher", "think_karcher"]
    panels = {ax.get_title(): ax for ax in visible(fig)}
    assert sorted(panels) == ["ao3_english", "bbc_news"]
    for domain, ax in panels.items():
        # the base at the origin: its marker where the zero lines cross
        lines = ax.get_lines()
        assert [list(line.get_ydata()) for line in lines[:1]] == [[0, 0]]  # y = 0
        assert [list(line.get_xdata()) for line in lines[1:2]] == [[0, 0]]  # x = 0
        (base,) = [line for line in lines if line.get_marker() == "+"]
        assert base.get_xydata().tolist() == [[0.0, 0.0]]
        expected = points[points["domain"] == domain].set_index("model")
        assert [c.get_label() for c in ax.containers] == list(expected.index)
        for bar in ax.containers:
            p = expected.loc[bar.get_label()]
            x, y = bar.lines[0].get_xydata()[0]
            assert (x, y) == (p["ppl_change_pct"], p["distinct_1_change_pct"])
            low, high = p["ppl_ci_low_pct"], p["ppl_ci_high_pct"]
            if math.isnan(low):  # no interval: no whisker
                low, high = x, x
            assert whiskers(bar, "x") == [(low, high)]
            y_low, y_high = p["distinct_1_ci_low_pct"], p["distinct_1_ci_high_pct"]
            assert whiskers(bar, "y") == [(y_low, y_high)]
    assert "(out-of-domain text)" in panels["bbc_news"].get_xlabel()
    assert "length-controlled" in panels["ao3_english"].get_ylabel()
    assert "lc where measured" in panels["bbc_news"].get_ylabel()


def test_figures_draw_one_lambada_text_the_out_of_domain_where_there_is_one():
    frame = pd.DataFrame(
        {
            "model": ["base", "karcher", "base", "karcher", "old"],
            "text": ["out-of-domain"] * 2 + ["in-domain"] * 2 + [None],
            "perplexity": [30.0, 29.0, 20.0, 14.0, None],
        }
    )
    rows, text = one_lambada_text(frame)
    assert text == "out-of-domain" and list(rows["perplexity"]) == [30.0, 29.0]
    rows, text = one_lambada_text(frame[frame["text"] != "out-of-domain"])
    assert text == "in-domain" and list(rows["perplexity"]) == [20.0, 14.0]
    older = frame.drop(columns="text")  # a table from before the texts: whole
    assert one_lambada_text(older)[0] is older


BPB = pd.DataFrame(
    {
        "model": ["base", "karcher", "gone"],
        "bbc_news": [1.01, 0.99, None],
        "bbc_news_ci_low": [0.97, 0.95, None],
        "bbc_news_ci_high": [1.04, 1.02, None],
        "ao3_english": [1.28, 1.27, None],
        "ao3_english_ci_low": [None, 1.23, None],
        "ao3_english_ci_high": [None, 1.31, None],
        "unavailable": [None, None, "not evaluated"],
    }
)


def test_bits_per_byte_bars_are_the_tables_values(tmp_path, drawn):
    out = bits_per_byte(BPB, tmp_path / "b.png", ["base", "karcher"])
    check_png(out, drawn["b.png"])
    (ax,) = drawn["b.png"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bbc_news", "ao3_english"]
    assert legend_texts(drawn["b.png"]) == ["base", "karcher"]
    base, karcher = bars(ax)
    assert heights(base) == [1.01, 1.28]
    assert heights(karcher) == [0.99, 1.27]
    assert flat(whiskers(karcher)) == pytest.approx([0.95, 1.02, 1.23, 1.31])
    assert flat(whiskers(base)) == pytest.approx([0.97, 1.04, 1.28, 1.28])  # no interval


def tables(tmp_path):
    """Every table make_figures reads, and two adapters' logs (plain and MARA)."""
    adapters = [
        write_history(tmp_path / "ao3_english", [0.1, 0.2, 0.4], **CURVES),
        write_history(tmp_path / "ao3_english-mara", [0.3, 0.1, 0.5], ["mara_bonus"], **CURVES),
    ]
    frames = {
        "lambada": LAMBADA,
        "diversity": DIVERSITY,
        "adapters": ADAPTERS,
        "bits_per_byte": BPB,
        "ablation_mara": ABLATION,
        "cost": pd.DataFrame({"rule": ["x"]}),
    }
    return adapters, frames


ALL = [
    "ablation_mara.png",
    "bits_per_byte.png",
    "diversity_by_domain.png",
    "grpo_curves.png",
    "perplexity_by_model.png",
    "quality_diversity.png",
    "reward_curves.png",
    "style_fluency.png",
]


def test_make_figures_draws_every_figure(tmp_path, drawn):
    adapters, frames = tables(tmp_path)
    before = {name: frame.copy() for name, frame in frames.items()}
    paths = make_figures(adapters, frames, tmp_path / "figures", chosen="karcher")
    names = sorted(p.name for p in paths)
    assert names == ALL
    assert sorted(drawn) == names
    for path in paths:
        assert path.read_bytes()[:8] == PNG
        check_png(path, drawn[path.name])
    for name, frame in frames.items():  # the figures only read the tables
        pd.testing.assert_frame_equal(frame, before[name])

    # perplexity: one bar per model of the out-of-domain text, and the base as a line
    (ax,) = drawn["perplexity_by_model.png"].axes
    assert bar_heights(ax) == [20.0, 18.0, 18.5, 19.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "base",
        "karcher",
        "think_karcher",
        "wave",
    ]
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [20.0]

    # diversity: the base and the chosen merge's (not the domain model), a bar per domain each
    (ax,) = drawn["diversity_by_domain.png"].axes
    assert legend_texts(drawn["diversity_by_domain.png"]) == ["base", "karcher", "think_karcher"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ao3_english", "bbc_news"]
    assert bar_heights(ax)[:4] == pytest.approx([0.6, 0.5, 0.66, 0.55])

    # bits per byte: the measured models only (not the one marked unavailable)
    assert legend_texts(drawn["bits_per_byte.png"]) == ["base", "karcher"]


def test_make_figures_skips_a_figure_whose_data_is_missing(tmp_path, drawn, caplog):
    adapters, frames = tables(tmp_path)
    frames["bits_per_byte"] = BPB.iloc[0:0]  # empty
    del frames["adapters"]  # absent
    frames["ablation_mara"] = ABLATION.iloc[0:0]  # the ablation ran, and has no rows
    paths = make_figures(adapters, frames, tmp_path / "figures", chosen="karcher")
    skipped = {"bits_per_byte.png", "style_fluency.png", "ablation_mara.png"}
    assert sorted(p.name for p in paths) == sorted(set(ALL) - skipped)
    for name in skipped:
        assert f"{name} skipped" in caplog.text
    assert not (tmp_path / "figures" / "bits_per_byte.png").exists()

    caplog.clear()  # no ablation table (it did not run): no figure, no warning about it
    paths = make_figures([], {}, tmp_path / "none")
    assert paths == []
    assert "ablation_mara" not in caplog.text
    for name in set(ALL) - {"ablation_mara.png"}:
        assert f"{name} skipped" in caplog.text


def test_make_figures_skips_grpo_curves_where_only_the_reward_was_logged(tmp_path, caplog):
    adapters = [write_history(tmp_path / "bbc_news", [0.1, 0.2])]
    paths = make_figures(adapters, {}, tmp_path / "figures")
    assert [p.name for p in paths] == ["reward_curves.png"]
    assert "grpo_curves.png skipped: no KL, completion length or entropy logged" in caplog.text
