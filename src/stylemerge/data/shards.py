"""Per-domain shards: filter, de-duplicate and split a source's documents.

A shard is JSONL, one document per line: ``{"id", "domain", "text", "origin", "truncated"}``.
The split is a pure function of the document id (:func:`is_heldout`), so adding documents to
a source never moves the ones already there from one split to the other.  An out-of-domain
source (text of no domain of the run: ``evaluate.lm_eval.lambada_ood``) has no train split:
every document is held out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from stylemerge.core.files import (
    DataError,
    read_json,
    read_jsonl,
    sha256_file,
    write_json,
    write_jsonl,
)
from stylemerge.data.sources import Document, read_source

SPLITS = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class DomainShards:
    """One domain's two shard files."""

    domain: str
    train: str | Path
    heldout: str | Path


def is_heldout(doc_id: str, heldout_fraction: float) -> bool:
    """Deterministic split by a hash of the id: the same id lands in the same split always."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction


def filter_documents(
    documents: Iterable[Document], settings: Mapping, counts: Counter
) -> Iterator[tuple[Document, bool]]:
    """Yield ``(document, truncated)`` kept by the filters; ``counts`` tallies every decision."""
    seen_texts: set[str] = set()
    seen_ids: Counter = Counter()
    kept = 0
    for doc in documents:
        counts["read"] += 1
        text = doc.text.strip()
        if len(text) < settings["min_chars"]:
            counts["too_short"] += 1
            continue
        truncated = len(text) > settings["max_chars"]
        if truncated:
            text = text[: settings["max_chars"]]
            counts["truncated"] += 1
        if settings["dedupe"]:
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            if digest in seen_texts:
                counts["duplicates"] += 1
                continue
            seen_texts.add(digest)
        doc_id = doc.id
        seen_ids[doc.id] += 1
        if seen_ids[doc.id] > 1:  # same id, different text: keep both, apart
            doc_id = f"{doc.id}#{seen_ids[doc.id]}"
        yield Document(id=doc_id, text=text, origin=doc.origin), truncated
        kept += 1
        if settings.get("max_documents") and kept >= settings["max_documents"]:
            counts["stopped_at_max_documents"] = 1
            return


def build_shards(
    source: Mapping,
    domain: str,
    settings: Mapping,
    train_path: str | Path | None,
    heldout_path: str | Path,
    manifest_path: str | Path,
    provenance: Mapping | None = None,
) -> dict:
    """Read ``source``, write the two splits and the manifest; return the manifest.  With no
    ``train_path`` (an out-of-domain source) every document goes to the held-out split."""
    counts: Counter = Counter()
    ood = train_path is None
    fraction = 1.0 if ood else settings["heldout_fraction"]
    splits: dict[str, list[dict]] = {name: [] for name in (("heldout",) if ood else SPLITS)}
    for doc, truncated in filter_documents(read_source(source, domain), settings, counts):
        split = "heldout" if ood or is_heldout(doc.id, fraction) else "train"
        splits[split].append(
            {
                "id": doc.id,
                "domain": domain,
                "text": doc.text,
                "origin": doc.origin,
                "truncated": truncated,
            }
        )
    kept = sum(len(docs) for docs in splits.values())
    filters = {k: settings[k] for k in ("min_chars", "max_chars", "max_documents", "dedupe")}
    if kept == 0:
        raise DataError(
            f"domain {domain!r} is empty after filtering: read {counts['read']} documents, "
            f"{counts['too_short']} shorter than min_chars, {counts['duplicates']} duplicates "
            f"(source {dict(source)}, filters {filters})"
        )
    for name, docs in splits.items():
        if not docs:
            raise DataError(
                f"domain {domain!r}: the {name} split is empty ({kept} documents kept, "
                f"heldout_fraction={fraction}); add documents or change "
                f"shards.heldout_fraction"
            )

    paths = (
        {"heldout": Path(heldout_path)}
        if ood
        else {"train": Path(train_path), "heldout": Path(heldout_path)}
    )
    for name, docs in splits.items():
        write_jsonl(paths[name], docs)
    manifest = {
        "domain": domain,
        "source": dict(source),
        "filters": filters,
        "heldout_fraction": fraction,
        "counts": {
            "read": counts["read"],
            "kept": kept,
            "too_short": counts["too_short"],
            "duplicates": counts["duplicates"],
            "truncated": counts["truncated"],
            "stopped_at_max_documents": bool(counts["stopped_at_max_documents"]),
        },
        "splits": {
            name: {
                "file": paths[name].name,
                "documents": len(docs),
                "characters": sum(len(d["text"]) for d in docs),
                "sha256": sha256_file(paths[name]),
            }
            for name, docs in splits.items()
        },
        "provenance": dict(provenance or {}),
    }
    write_json(manifest_path, manifest)
    return manifest


def read_shard(path: str | Path) -> Iterator[dict]:
    """Records of a shard; a missing, empty or malformed shard is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard not found")
    count = 0
    for line, record in read_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise DataError(f"{path}:{line}: shard record has no text")
        count += 1
        yield record
    if count == 0:
        raise DataError(f"{path}: shard is empty")


def shard_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    for path in paths:
        for record in read_shard(path):
            yield record["text"]


# A split's shards of every domain, as one file: jobs that read all domains (proxies, merges,
# evaluation) depend on it instead of on every shard, so the DAG grows linearly with the
# number of domains rather than quadratically (measured: `snakemake -n` for 90 domains).
def write_shard_index(shards: Iterable[str | Path], out: str | Path) -> dict:
    """``{"shards": {domain: {"path", "sha256"}}}`` for shards at results/shards/<domain>/."""
    index = {
        "shards": {Path(p).parent.name: {"path": str(p), "sha256": sha256_file(p)} for p in shards}
    }
    write_json(out, index)
    return index


def read_shard_index(path: str | Path) -> dict[str, str]:
    """``{domain: shard path}`` from an index; a shard that is missing or changed since the
    index was written is an error naming both files."""
    shards = {}
    for domain, entry in read_json(path)["shards"].items():
        shard = Path(entry["path"])
        if not shard.is_file():
            raise DataError(f"{path}: shard {shard} not found")
        if sha256_file(shard) != entry["sha256"]:
            raise DataError(f"{path}: shard {shard} changed since the index was written")
        shards[domain] = str(shard)
    return shards
