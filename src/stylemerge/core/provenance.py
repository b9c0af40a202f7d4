"""What made a result: config hash, git revision, package versions, seed, host.

Every result JSON carries this under ``provenance``.  Nothing secret goes in: the config
holds no tokens (they come from the environment only) and the environment is not recorded.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

PACKAGES = (
    "stylemerge",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "trl",
    "lm_eval",
    "mergekit",
    "datasets",
    "pandas",
    "snakemake",
)


def config_hash(config: Mapping) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(cwd: str | None = None) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "revision": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def provenance(
    config: Mapping | None = None,
    seed: int | None = None,
    hub_commits: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What made a result.  ``hub_commits``: ``repo@commit`` of each hub reference the config
    names, which the workflow's lock knows (:func:`stylemerge.workflow.provenance.provenance`
    fills it in)."""
    return {
        "config_sha256": config_hash(config) if config is not None else None,
        "hub_commits": dict(hub_commits) if hub_commits else None,
        "seed": seed,
        "git": git_revision(),
        "packages": package_versions(),
        "python": platform.python_version(),
        # the environment the job ran in (a cluster profile may give jobs their own)
        "environment": sys.prefix,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
