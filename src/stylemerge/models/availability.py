"""Comparison models that cannot be evaluated: recorded as unavailable, with the reason.

A comparison model (``evaluate.comparisons``) is someone else's: it may have left the hub, or
be published as pickle files only (stylemerge loads safetensors only, unless
``allow_pickle_weights``).  Snakemake stops every job downstream of a failed one, the tables
among them, so for exactly these two cases, not found and no safetensors weights, the
comparison's evaluation jobs log the reason at error level, record it as their output and
end normally (:func:`skip_unavailable_comparison`); the tables keep every other column and
mark the comparison's cells ``unavailable`` with the reason (:func:`mark_unavailable`).  Any
other failure (no network, a gated repository, a corrupt directory, out of memory) still
fails the job, and the base and the models made here are never checked this way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stylemerge.core.hub import looks_local
from stylemerge.models.reference import pickle_files

if TYPE_CHECKING:
    import pandas as pd

    from stylemerge.core.job import JobSettings
    from stylemerge.models.reference import ModelReference

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")


def unavailable_reason(model: ModelReference, allow_pickle_weights: bool = False) -> str | None:
    """Why ``model`` cannot be loaded, if it is not found or has no safetensors weights (and
    pickle weights are not allowed); None when it may be loaded (loading decides the rest)."""
    path = Path(model.ref).expanduser()
    if path.is_dir():
        if any(path.glob("*.safetensors")) or allow_pickle_weights:
            return None
        pickles = pickle_files(path)
        # no weights at all: a broken directory, which fails the job
        return _no_safetensors(pickles) if pickles else None
    if path.exists():
        return None  # a file, not a model directory: loading fails the job
    if looks_local(model.ref):
        return f"not found: no directory {path}"
    return _hub_reason(model, allow_pickle_weights)


def _no_safetensors(files: Sequence[str]) -> str:
    found = f"weights: {', '.join(files)}" if files else "no weight files"
    return (
        f"no safetensors weights ({found}); stylemerge loads safetensors only "
        "(allow_pickle_weights: false)"
    )


def _hub_reason(model: ModelReference, allow_pickle_weights: bool) -> str | None:
    """The hub's answer for a hub id: not found (repository or revision), or no safetensors
    files; None when it has them, or offline (the cache and the loader decide)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        info = HfApi().model_info(model.ref, revision=model.revision, files_metadata=False)
    except GatedRepoError:
        raise  # it exists: access is a token's matter, not this run's
    except RepositoryNotFoundError:
        return "not found on the Hugging Face hub (no such repository, or it is private)"
    except RevisionNotFoundError:
        return f"not found on the Hugging Face hub: no revision {model.revision!r}"
    files = [s.rfilename for s in info.siblings or []]
    if any(f.endswith(".safetensors") for f in files):
        return None
    weights = [f for f in files if f.endswith(WEIGHT_SUFFIXES)]
    pickles = [f for f in weights if f.endswith((".bin", ".pt", ".pth"))]
    if pickles and allow_pickle_weights:
        return None
    return _no_safetensors(weights) + " on the Hugging Face hub"


def skip_unavailable_comparison(
    comparison: str | None,
    model: ModelReference,
    job: JobSettings,
    out: str | Path,
    directory: bool = False,
) -> bool:
    """For a comparison model (its name; None for any other model) that is unavailable: log
    the reason at error level, record it as ``out`` (a JSON file, or a directory holding
    ``metrics.json``) and return True, so that the job ends without evaluating it."""
    from stylemerge.core.files import atomic_path, write_json

    if comparison is None:
        return False
    reason = unavailable_reason(model, job.allow_pickle_weights)
    if reason is None:
        return False
    log.error(
        "comparison model %s (%s) is unavailable: %s. Not evaluated: recorded as unavailable "
        "in %s, and the tables mark its columns unavailable",
        comparison,
        model,
        reason,
        out,
    )
    record = {UNAVAILABLE: {"model": comparison, "ref": str(model), "reason": reason}}
    if not directory:
        write_json(out, record)
        return True
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "metrics.json", record)
    return True


def available_results(
    lm_eval: Sequence[str | Path], diversity: Sequence[str | Path]
) -> tuple[dict[str, dict], dict[str, Path], dict[str, str]]:
    """The evaluations (``{model: lm_eval.json}``) and diversity directories of the models
    that were evaluated, and ``{model: why not}`` for those recorded unavailable."""
    from stylemerge.core.files import read_json

    evals = {Path(p).parent.name: read_json(p) for p in lm_eval}
    dirs = {Path(p).parent.name: Path(p) for p in diversity}
    records = [*evals.items(), *((m, read_json(p / "metrics.json")) for m, p in dirs.items())]
    unavailable = {
        m: f"{r[UNAVAILABLE]['ref']}: {r[UNAVAILABLE]['reason']}"
        for m, r in records
        if r.get(UNAVAILABLE)
    }
    evals = {m: r for m, r in evals.items() if m not in unavailable}
    return evals, {m: p for m, p in dirs.items() if m not in unavailable}, unavailable


VS_COMPARISON = [
    "ppl_change_vs_comparison_pct",
    "vs_comparison_ci_low_pct",
    "vs_comparison_ci_high_pct",
]


def mark_unavailable(
    frames: Mapping[str, pd.DataFrame],
    unavailable: Mapping[str, str],
    comparison: str | None,
    domains: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """The ``lambada``, ``bits_per_byte`` and ``diversity`` frames with a row for each
    unavailable model (in ``diversity`` one per domain) and the reason in an ``unavailable``
    column; the lambada table's columns vs the comparison say ``unavailable`` in every row
    when the comparison is.  Empty when every model was evaluated."""
    import pandas as pd

    if not unavailable:
        return {}
    marked = {}
    for name in ("lambada", "bits_per_byte", "diversity"):
        if name not in frames:
            continue
        per = domains if name == "diversity" else [None]
        rows = [
            {**({"domain": d} if d else {}), "model": m, UNAVAILABLE: why}
            for m, why in unavailable.items()
            for d in per
        ]
        frame = frames[name].assign(**{UNAVAILABLE: None})
        frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
        if name == "lambada" and comparison in unavailable:
            frame[VS_COMPARISON] = UNAVAILABLE
        marked[name] = frame
    return marked
