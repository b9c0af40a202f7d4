"""Write a tier's results page from a run: ``python -m stylemerge.cli.results smol results/smol``.

Copies the run's ``tables/`` and ``pooled/`` CSVs (and their provenance) into
``docs/results/<tier>/`` (the snapshot the page is made from, committed beside it), then writes
``docs/results-<tier>.md`` and the tier's summary in the README (between
``<!-- results:<tier> -->`` markers).  ``--check`` writes nothing and fails when a committed
page or summary differs from what its snapshot gives (tests/test_results_pages.py runs it for each
tier).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from stylemerge.report.results_page import SNAPSHOT_FILES, TIERS, render, summary

PARTS = ("tables", "pooled")


def take_snapshot(run_dir: Path, snapshot: Path) -> list[Path]:
    """Copy the run's tables (CSV and provenance) into ``snapshot``, replacing what was there."""
    if not (run_dir / "tables").is_dir():
        raise SystemExit(f"{run_dir / 'tables'}: no tables here (run the workflow first)")
    copied = []
    for part in PARTS:
        shutil.rmtree(snapshot / part, ignore_errors=True)
        source = run_dir / part
        if not source.is_dir():
            continue
        (snapshot / part).mkdir(parents=True)
        for pattern in SNAPSHOT_FILES:
            for path in sorted(source.glob(pattern)):
                copied.append(Path(shutil.copy2(path, snapshot / part / path.name)))
    return copied


def with_summary(readme: str, tier: str, snapshot: Path) -> str:
    """``readme`` with the block between ``<!-- results:<tier> -->`` and
    ``<!-- /results:<tier> -->`` replaced by the tier's summary (unchanged without markers)."""
    start, end = f"<!-- results:{tier} -->\n", f"<!-- /results:{tier} -->"
    if start not in readme:
        return readme
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}{summary(snapshot)}{end}{tail}"


def page_path(docs: Path, tier: str) -> Path:
    return docs / f"results-{tier}.md"


def snapshot_dir(docs: Path, tier: str) -> Path:
    return docs / "results" / tier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tier", choices=sorted(TIERS))
    parser.add_argument("run_dir", type=Path, nargs="?", help="the run's results directory")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="compare only; write nothing")
    args = parser.parse_args(argv)
    snapshot, page = snapshot_dir(args.docs, args.tier), page_path(args.docs, args.tier)
    if args.check:
        stale = [
            path
            for path, text in ((page, render(args.tier, snapshot)), (args.readme, None))
            if not path.is_file()
            or path.read_text() != (text or with_summary(path.read_text(), args.tier, snapshot))
        ]
        for path in stale:
            print(f"{path}: differs from what {snapshot} gives; rerun without --check")
        return 1 if stale else 0
    if args.run_dir is None:
        parser.error("run_dir is needed unless --check")
    take_snapshot(args.run_dir, snapshot)
    page.write_text(render(args.tier, snapshot))
    if args.readme.is_file():
        args.readme.write_text(with_summary(args.readme.read_text(), args.tier, snapshot))
    print(f"wrote {page} (and the README's summary) from {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
