import pandas as pd
import pytest

from stylemerge.figures import (
    diversity_models,
    make_figures,
    quality_diversity,
    reward_curves,
    reward_history,
)

PNG = b"\x89PNG\r\n\x1a\n"


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


def test_a_history_without_rewards_gives_an_empty_panel(tmp_path, caplog):
    (tmp_path / "x").mkdir()
    pd.DataFrame({"step": [1], "loss": [0.1]}).to_csv(tmp_path / "x/log_history.csv")
    assert reward_history(tmp_path / "x").empty
    assert "x/log_history.csv: no reward logged" in caplog.text
    (tmp_path / "y").mkdir()
    (tmp_path / "y/log_history.csv").write_text("\n")  # pandas' CSV of an empty log
    assert reward_history(tmp_path / "y").empty
    out = reward_curves({"x": tmp_path / "x", "y": tmp_path / "y"}, tmp_path / "r.png")
    assert out.read_bytes()[:8] == PNG


def test_diversity_figure_singles_out_base_and_chosen_merge():
    models = ["base", "domain_bbc_news", "karcher", "linear", "think_karcher"]
    assert diversity_models(models, "karcher") == ["base", "karcher", "think_karcher"]
    assert diversity_models(["a", "b"], "karcher") == ["a", "b"]


def test_make_figures_writes_every_png(tmp_path):
    adapters = [write_history(tmp_path / d, [0.1, 0.2, 0.4]) for d in ("ao3_english", "bbc_news")]
    lambada = pd.DataFrame({"model": ["base", "karcher"], "perplexity": [20.0, 18.0]})
    diversity = pd.DataFrame(
        {
            "domain": ["bbc_news", "bbc_news"],
            "model": ["base", "karcher"],
            "distinct_1": [0.5, 0.55],
            "distinct_1_ci_low": [0.45, 0.5],
            "distinct_1_ci_high": [0.55, 0.6],
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
    for path in paths:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_quality_diversity_places_each_model_by_its_two_numbers(tmp_path):
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
    assert points[["domain", "model", "perplexity", "distinct_1"]].values.tolist() == [
        ["ao3_english", "karcher", 18.0, 0.6],
        ["bbc_news", "base", 20.0, 0.5],
        ["bbc_news", "karcher", 18.0, 0.55],
        ["bbc_news", "think_karcher", 18.5, 0.52],
    ]
    karcher = points[(points["model"] == "karcher") & (points["domain"] == "bbc_news")].iloc[0]
    assert (karcher["perplexity_ci_low"], karcher["perplexity_ci_high"]) == (17.0, 19.5)
    assert (karcher["distinct_1_ci_low"], karcher["distinct_1_ci_high"]) == (0.5, 0.6)
