"""Hub id or local path: the one decision every stage, the rules and the report make about a
model or data set reference."""

from __future__ import annotations

from pathlib import Path


def looks_local(ref: str) -> bool:
    """A reference that can only be a path (a hub id is ``name`` or ``owner/name``)."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref


def is_local(ref: str) -> bool:
    """A path that exists here (what Snakemake can track as an input)."""
    return Path(ref).exists()


def is_hub_id(ref) -> bool:
    """A hub repository id: a non-empty string that could name one and is no path here."""
    return isinstance(ref, str) and bool(ref) and not looks_local(ref) and not is_local(ref)
