"""The make_tables job: every table of a run from its result files, the claims table first,
then the model cards and the figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from stylemerge.core.files import write_json
from stylemerge.models.availability import available_results, mark_unavailable
from stylemerge.report.claims import card_table
from stylemerge.report.tables import (
    adapters_table,
    bpb_table,
    diversity_table,
    gsm8k_table,
    lambada_table,
    merges_table,
    think_table,
)
from stylemerge.report.values import load_dirs, reported, write_table
from stylemerge.resources.benchmarks import cost_table


@dataclasses.dataclass(frozen=True)
class RunResults:
    """A run's result files, as the make_tables rule gets them."""

    adapters: Sequence[str | Path]  # results/adapters/<domain><arm>
    merges: Sequence[str | Path]  # results/merges/<name>
    think: Sequence[str | Path]  # results/think/<model>
    lm_eval: Sequence[str | Path]  # results/eval/<model>/lm_eval.json
    diversity: Sequence[str | Path]  # results/eval/<model>/diversity
    benchmark_dir: str | Path  # results/benchmarks
    chosen_dir: str | Path | None = None  # the chosen merge's directory: gets the model card
    chosen_think_dir: str | Path | None = None  # the same with think rows optimised: its card


@dataclasses.dataclass(frozen=True)
class TableSettings:
    """What the tables need to know about the run beside its results."""

    domains: Sequence[str]
    chosen: str | None = None  # the merge the card and the figures single out
    comparison: str | None = None  # the comparison model of the lambada table
    ablation_mara: bool = False  # write tables/ablation_mara
    recipe: Mapping | None = None  # stylemerge.report.model_card.recipe: for the model card
    mem_requests: Mapping[str, Mapping[str, int]] | None = None  # {rule: {job: mem_mb}}


def make_tables(
    results: RunResults,
    settings: TableSettings,
    out_dir: str | Path,
    figures_dir: str | Path | None = None,
    provenance: Mapping | None = None,
) -> dict[str, pd.DataFrame]:
    """Build and write every table under ``out_dir`` (and the figures under ``figures_dir``);
    returns the frames by name, ``card`` (each claim of the model card, ours with its
    interval and a verdict: :mod:`stylemerge.report.claims`) first.  Think-optimised models are
    ``think_<model>``.  With ``results.chosen_dir`` the chosen merge's model card is written
    as ``tables/model_card.md`` and installed as ``<chosen_dir>/README.md`` (with
    ``chosen_think_dir`` the think-optimised merge's too, ``model_card_think.md``); the cost table
    sets ``settings.mem_requests`` beside each job's max RSS."""
    evals, diversity_dirs, unavailable = available_results(results.lm_eval, results.diversity)
    frames = _stage_tables(results, settings, evals, diversity_dirs)
    frames = _with_card(frames, settings, unavailable)
    _write_outputs(frames, results, settings, out_dir, provenance)
    tables = {name: frame for name, (frame, _) in frames.items()}
    if figures_dir is not None:
        from stylemerge.report.figures import make_figures

        make_figures(results.adapters, tables, figures_dir, settings.chosen)
    return tables


def _stage_tables(
    results: RunResults,
    settings: TableSettings,
    evals: Mapping[str, Mapping],
    diversity_dirs: Mapping[str, Path],
) -> dict[str, tuple[pd.DataFrame, str]]:
    """Every stage's table with its caption, by name (the ablation's where asked for), from
    the evaluations and diversity directories of the models that were evaluated."""
    adapters, domains = results.adapters, settings.domains
    pairs = {m[len("think_") :]: m for m in evals if m.startswith("think_")}
    frames = {
        "lambada": (
            lambada_table(evals, settings.comparison),
            "lambada: perplexity and accuracy, % change vs base and comparison",
        ),
        "gsm8k_think": (
            gsm8k_table(evals, pairs),
            "gsm8k-style 3-shot accuracy, original vs optimised think tokens",
        ),
        "bits_per_byte": (bpb_table(evals, domains), "Bits per byte on held-out text"),
        "diversity": (
            diversity_table(diversity_dirs),
            "Text diversity per domain: distinct-1, EAD-1, self-diversity",
        ),
        "adapters": (
            adapters_table(load_dirs(adapters)),
            "GRPO adapters: held-out style reward and fluency before -> after",
        ),
        "merges": (
            merges_table(load_dirs(results.merges)),
            "Merges: mean next-token entropy and held-out loss",
        ),
        "think": (
            think_table(load_dirs(results.think)),
            "Think tokens: held-out CE on reasoning traces before -> after",
        ),
        "cost": (
            cost_table(results.benchmark_dir, settings.mem_requests),
            "Cost per rule and job (Snakemake benchmarks; memory requested, flagged if exceeded)",
        ),
    }
    if settings.ablation_mara:
        from stylemerge.report.ablation import mara_ablation_table

        frames["ablation_mara"] = (
            mara_ablation_table(
                load_dirs(adapters),
                diversity_dirs,
                frames["diversity"][0],
                evals,
                settings.chosen,
            ),
            "MARA ablation: each domain model and the chosen merge without and with MARA",
        )
    return frames


def _with_card(
    frames: Mapping[str, tuple[pd.DataFrame, str]],
    settings: TableSettings,
    unavailable: Mapping[str, str],
) -> dict[str, tuple[pd.DataFrame, str]]:
    """The card table first, then ``frames`` with the unavailable models' rows marked."""
    comparison = settings.comparison
    tables = {name: frame for name, (frame, _) in frames.items()}
    # the card reads the frames unmarked (a marked cell is text); it marks its own claim
    card = card_table(tables, reported(), settings.chosen, comparison, unavailable.get(comparison))
    frames = dict(frames)
    marked = mark_unavailable(tables, unavailable, comparison, settings.domains)
    for name, frame in marked.items():
        frames[name] = (frame, frames[name][1])
    return {
        "card": (
            card,
            "The model card's claims: card, ours with its 95 % interval, n (documents), p "
            "(raw, Holm-adjusted over the claims), verdict",
        ),
        **frames,
    }


def _write_outputs(
    frames: Mapping[str, tuple[pd.DataFrame, str]],
    results: RunResults,
    settings: TableSettings,
    out_dir: str | Path,
    provenance: Mapping | None,
) -> None:
    """Write each table (CSV, Markdown, LaTeX), the provenance and, with a chosen merge's
    directory, the model cards (which read the written card table)."""
    for name, (frame, caption) in frames.items():
        write_table(frame, Path(out_dir) / name, caption)
    if provenance is not None:
        write_json(Path(out_dir) / "provenance.json", provenance)
    if results.chosen_dir is not None:
        from stylemerge.report.model_card import write_model_cards

        write_model_cards(
            results.chosen_dir, out_dir, settings.recipe, provenance, results.chosen_think_dir
        )
