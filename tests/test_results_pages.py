"""The results pages (docs/results-<tier>.md) and the README's summaries are what their
committed table snapshots give (stylemerge.cli.results), never typed by hand."""

import shutil

import pandas as pd
import pytest

from conftest import ROOT
from stylemerge.cli import results
from stylemerge.report.results_page import TIERS

DOCS = ROOT / "docs"
SNAPSHOTS = sorted(p.name for p in (DOCS / "results").iterdir() if p.is_dir())


def check(tier, docs=DOCS, readme=ROOT / "README.md"):
    return results.main([tier, "--check", "--docs", str(docs), "--readme", str(readme)])


def test_there_are_pages_of_the_tiers_that_ran():
    assert {"smol", "default"} <= set(SNAPSHOTS) <= set(TIERS)


@pytest.mark.parametrize("tier", SNAPSHOTS)
def test_each_committed_page_and_summary_is_what_its_snapshot_gives(tier):
    assert check(tier) == 0
    readme = (ROOT / "README.md").read_text()
    assert f"<!-- results:{tier} -->\n| claim |" in readme
    assert f"(docs/results-{tier}.md)" in readme


def test_a_changed_table_makes_the_page_stale(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    assert check("smol", docs, readme) == 0
    card = docs / "results" / "smol" / "pooled" / "card.csv"
    frame = pd.read_csv(card)
    frame.loc[0, "ours"] = frame.loc[0, "ours"] + 1
    frame.to_csv(card, index=False)
    assert check("smol", docs, readme) == 1
    # regenerating from a run directory takes its tables and mends both
    run = tmp_path / "run"
    shutil.copytree(docs / "results" / "smol", run)
    assert results.main(["smol", str(run), "--docs", str(docs), "--readme", str(readme)]) == 0
    assert check("smol", docs, readme) == 0
    assert f"{frame.loc[0, 'ours']:.4g}" in (docs / "results-smol.md").read_text()
