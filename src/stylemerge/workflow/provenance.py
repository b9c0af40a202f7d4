"""A workflow job's provenance: the core record plus the hub commits its config's lock pins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stylemerge.core import provenance as core
from stylemerge.workflow.revisions import loaded


def provenance(config: Mapping, seed: int | None = None) -> dict[str, Any]:
    """:func:`stylemerge.core.provenance.provenance` with the hub commit of each hub reference
    the config names (the run's ``revisions.lock`` applied); none for a config without models
    (the data jobs' own configs)."""
    commits = loaded(config) if "models" in config else None
    return core.provenance(config, seed, hub_commits=commits)
