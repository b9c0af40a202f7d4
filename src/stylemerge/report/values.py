"""Values every report module shares: the card's reported figures, percent changes, and
a table written as CSV, Markdown and LaTeX."""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from stylemerge.core.files import read_json
from stylemerge.stats.intervals import finite


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


def percent(fraction: float | None) -> float | None:
    """A fraction in percent (None when missing or not finite)."""
    return None if fraction is None or not math.isfinite(fraction) else 100.0 * fraction


def load_dirs(paths, name: str = "metrics.json") -> dict[str, dict]:
    """``{directory name: its metrics JSON}`` for result directories."""
    return {Path(p).name: read_json(Path(p) / name) for p in paths}


def format_interval(low, high, spec: str = "+.3g") -> str | None:
    """``"[low, high]"``, each bound in ``spec``; None where a bound is missing or not
    finite.  :func:`parse_interval` reads it back."""
    low, high = finite(low), finite(high)
    return None if low is None or high is None else f"[{low:{spec}}, {high:{spec}}]"


def parse_interval(text) -> tuple[float, float]:
    """The bounds of a table's interval text "[lo, hi]" (NaN, NaN where there is none)."""
    found = re.fullmatch(r"\s*\[\s*([^,\s]+)\s*,\s*([^\]\s]+)\s*\]\s*", str(text))
    if not found:
        return math.nan, math.nan
    try:
        return float(found[1]), float(found[2])
    except ValueError:
        return math.nan, math.nan
