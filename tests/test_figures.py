from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stylemerge.report import figures
from stylemerge.report.figures import (
    diversity_models,
    make_figures,
    one_lambada_text,
    quality_diversity,
    reward_curves,
    reward_history,
)

PNG = b"\x89PNG\r\n\x1a\n"
DPI = 110  # figures._save


@pytest.fixture
def drawn(monkeypatch):
    """{file name: the matplotlib Figure saved there}: each figure as drawn, to inspect."""
    saved = {}
    save = figures._save

    def keep(fig, out):
        saved[Path(out).name] = fig
        return save(fig, out)

    monkeypatch.setattr(figures, "_save", keep)
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


def write_history(path, rewards):
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for step, reward in enumerate(rewards, start=1):
        rows.append(
            {
                "step": step,
                "reward": reward,
                "rewards/style_contrast/mean": reward / 2,
                "rewards/style_contrast/std": 0.1,
                "loss": 0.5,
            }
        )
    rows.append({"step": len(rewards), "train_runtime": 12.0})  # trl's summary row
    pd.DataFrame(rows).to_csv(path / "log_history.csv", index=False)
    return path


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
    out = reward_curves({"x": tmp_path / "x", "y": tmp_path / "y"}, tmp_path / "r.png")
    assert out.read_bytes()[:8] == PNG
    panels = [ax for ax in drawn["r.png"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["x", "y"]
    for ax in panels:
        assert [t.get_text() for t in ax.texts] == ["no reward logged"]
        assert all(len(line.get_xydata()) == 0 for line in ax.get_lines())


def test_diversity_figure_singles_out_base_and_chosen_merge():
    models = ["base", "domain_bbc_news", "karcher", "linear", "think_karcher"]
    assert diversity_models(models, "karcher") == ["base", "karcher", "think_karcher"]
    assert diversity_models(["a", "b"], "karcher") == ["a", "b"]


def test_make_figures_draws_every_model_and_domain(tmp_path, drawn):
    rewards = {"ao3_english": [0.1, 0.2, 0.4], "bbc_news": [0.3, 0.1, 0.5, 0.6]}
    adapters = [write_history(tmp_path / d, r) for d, r in rewards.items()]
    lambada = pd.DataFrame(
        {"model": ["base", "karcher", "linear"], "perplexity": [20.0, 18.0, 19.0]}
    )
    diversity = pd.DataFrame(
        {
            "domain": ["bbc_news", "bbc_news", "ao3_english", "ao3_english", "bbc_news"],
            "model": ["base", "karcher", "base", "karcher", "domain_bbc_news"],
            "distinct_1": [0.5, 0.55, 0.6, 0.66, 0.4],
            "distinct_1_ci_low": [0.45, 0.5, 0.55, 0.6, 0.3],
            "distinct_1_ci_high": [0.55, 0.6, 0.65, 0.7, 0.5],
        }
    )
    paths = make_figures(adapters, lambada, diversity, tmp_path / "figures", chosen="karcher")
    names = sorted(p.name for p in paths)
    assert names == [
        "diversity_by_domain.png",
        "perplexity_by_model.png",
        "quality_diversity.png",
        "reward_curves.png",
    ]
    assert sorted(drawn) == names
    for path in paths:
        assert path.read_bytes()[:8] == PNG
        check_png(path, drawn[path.name])

    # reward curves: a panel per domain, its total reward against the step
    panels = [ax for ax in drawn["reward_curves.png"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == sorted(rewards)
    for ax in panels:
        total = next(line for line in ax.get_lines() if line.get_label() == "reward")
        assert list(total.get_ydata()) == pytest.approx(rewards[ax.get_title()])
        assert list(total.get_xdata()) == list(range(1, len(rewards[ax.get_title()]) + 1))
        assert [line.get_label() for line in ax.get_lines()] == ["reward", "style_contrast"]

    # perplexity: one bar per model, in order, and the base as a line
    (ax,) = drawn["perplexity_by_model.png"].axes
    assert bar_heights(ax) == [20.0, 18.0, 19.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "karcher", "linear"]
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [20.0]

    # diversity: the base and the chosen merge (not the domain model), a bar per domain each
    (ax,) = drawn["diversity_by_domain.png"].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "karcher"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ao3_english", "bbc_news"]
    assert bar_heights(ax) == pytest.approx([0.6, 0.5, 0.66, 0.55])

    # quality vs diversity: per domain panel, one labelled point per model with both numbers
    panels = [ax for ax in drawn["quality_diversity.png"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["ao3_english", "bbc_news"]
    for ax in panels:
        labels = sorted(t.get_text() for t in ax.texts)
        assert labels == ["base", "karcher"]  # domain_bbc_news has no perplexity
        (errorbar,) = ax.containers
        points = errorbar.lines[0]  # the markers (the rest are the interval bars)
        expected = diversity[diversity["domain"] == ax.get_title()].merge(lambada, on="model")
        assert sorted(zip(points.get_xdata(), points.get_ydata(), strict=True)) == sorted(
            zip(expected["perplexity"], expected["distinct_1"], strict=True)
        )


def test_quality_diversity_places_each_model_by_its_two_numbers(tmp_path, drawn):
    lambada = pd.DataFrame(
        {
            "model": ["base", "karcher", "think_karcher", "wave", "no_ppl"],
            "perplexity": [20.0, 18.0, 18.5, 19.0, None],
            "perplexity_ci_low": [19.0, 17.0, None, 18.0, None],
            "perplexity_ci_high": [21.0, 19.5, None, 20.0, None],
        }
    )
    diversity = pd.DataFrame(
        {
            "domain": ["bbc_news", "bbc_news", "bbc_news", "ao3_english", "bbc_news"],
            "model": ["karcher", "base", "think_karcher", "karcher", "no_ppl"],
            "distinct_1": [0.55, 0.5, 0.52, 0.6, 0.7],
            "distinct_1_ci_low": [0.5, 0.45, 0.5, 0.58, 0.6],
            "distinct_1_ci_high": [0.6, 0.55, 0.54, 0.62, 0.8],
        }
    )  # "wave" has no distinct-1 and "no_ppl" no perplexity: neither is plotted
    out, points = quality_diversity(lambada, diversity, tmp_path / "qd.png")
    assert out.read_bytes()[:8] == PNG
    check_png(out, drawn["qd.png"])
    panels = {ax.get_title(): ax for ax in drawn["qd.png"].axes if ax.get_visible()}
    assert sorted(panels) == ["ao3_english", "bbc_news"]
    labels = sorted(t.get_text() for t in panels["bbc_news"].texts)
    assert labels == ["base", "karcher", "think_karcher"]
    assert points[["domain", "model", "perplexity", "distinct_1"]].values.tolist() == [
        ["ao3_english", "karcher", 18.0, 0.6],
        ["bbc_news", "base", 20.0, 0.5],
        ["bbc_news", "karcher", 18.0, 0.55],
        ["bbc_news", "think_karcher", 18.5, 0.52],
    ]
    karcher = points[(points["model"] == "karcher") & (points["domain"] == "bbc_news")].iloc[0]
    assert (karcher["perplexity_ci_low"], karcher["perplexity_ci_high"]) == (17.0, 19.5)
    assert (karcher["distinct_1_ci_low"], karcher["distinct_1_ci_high"]) == (0.5, 0.6)


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
