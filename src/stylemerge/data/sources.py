"""Document sources: ``builtin`` (the corpus shipped in this package), ``local`` (files on
disk) and ``hf`` (a hub data set, streamed).  Each reader yields :class:`Document` objects
in a fixed order; filtering, de-duplication and splitting are :mod:`stylemerge.data.shards`' job.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stylemerge.core.files import DataError, read_jsonl, read_text


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    origin: dict[str, Any] = field(default_factory=dict)  # where it came from (file, line, ...)


def text_id(text: str) -> str:
    """A content id: stable however the source is reordered or extended."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def builtin_corpora() -> list[str]:
    root = resources.files("stylemerge") / "corpus"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def read_builtin(spec: Mapping, domain: str) -> Iterator[Document]:
    name = spec.get("corpus") or domain
    root = resources.files("stylemerge") / "corpus" / name
    if not root.is_dir():
        raise DataError(
            f"domain {domain!r}: no builtin corpus {name!r} "
            f"(available: {', '.join(builtin_corpora())}); set source.corpus to one of them"
        )
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".txt"):
            yield Document(
                id=f"{name}/{path.name[:-4]}",
                text=path.read_text(encoding="utf-8"),
                origin={"builtin": f"{name}/{path.name}"},
            )


def _record_text(record: Mapping, text_field: str, where: str) -> str:
    if text_field not in record:
        raise DataError(f"{where}: no field {text_field!r} (fields: {', '.join(map(str, record))})")
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def _record_document(record: Mapping, spec: Mapping, where: str, origin: dict) -> Document:
    text = _record_text(record, spec["text_field"], where)
    id_field = spec.get("id_field")
    if id_field:
        if id_field not in record:
            raise DataError(f"{where}: no id field {id_field!r}")
        doc_id = str(record[id_field])
    else:
        doc_id = text_id(text)
    return Document(id=doc_id, text=text, origin=origin)


def _local_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return {".jsonl": "jsonl", ".json": "json"}.get(path.suffix.lower(), "text")


def read_local(spec: Mapping, domain: str) -> Iterator[Document]:
    for pattern in spec["paths"]:
        matches = sorted(glob.glob(pattern, recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise DataError(f"domain {domain!r}: no files match {pattern!r}")
        for path in files:
            fmt = _local_format(path, spec.get("format", "auto"))
            if fmt == "text":
                yield Document(id=str(path), text=read_text(path), origin={"path": str(path)})
            elif fmt == "jsonl":
                for line, record in read_jsonl(path):
                    origin = {"path": str(path), "line": line}
                    yield _record_document(record, spec, f"{path}:{line}", origin)
            else:
                yield from _read_json_list(path, spec)


def _read_json_list(path: Path, spec: Mapping) -> Iterator[Document]:
    """A JSON list of strings (the Uncheatable Eval data files) or of objects."""
    try:
        items = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of strings or objects")
    for index, item in enumerate(items):
        origin = {"path": str(path), "index": index}
        if isinstance(item, str):
            yield Document(id=text_id(item), text=item, origin=origin)
        elif isinstance(item, dict):
            yield _record_document(item, spec, f"{path}[{index}]", origin)
        else:
            raise DataError(f"{path}[{index}]: expected a string or an object")


def read_hf(spec: Mapping, domain: str) -> Iterator[Document]:
    """Stream a hub data set (or a local data set directory) with ``datasets``.

    A hub token, when needed, comes from the environment (HF_TOKEN) through huggingface_hub;
    it is never passed, logged or recorded here.
    """
    import datasets

    dataset = datasets.load_dataset(
        spec["path"],
        spec.get("name"),
        split=spec.get("split", "train"),
        revision=spec.get("revision"),
        data_files=spec.get("data_files"),
        streaming=spec.get("streaming", True),
    )
    where = spec.get("where") or {}
    label = f"{spec['path']}[{spec.get('split', 'train')}]"
    for index, record in enumerate(dataset):
        if any(record.get(key) != value for key, value in where.items()):
            continue
        origin = {"dataset": spec["path"], "split": spec.get("split", "train"), "index": index}
        yield _record_document(record, spec, f"{label} record {index}", origin)


def source_files(spec: Mapping, domain: str) -> list[str]:
    """The files a source reads (for Snakemake to track); none for a hub data set."""
    if spec["type"] == "builtin":
        root = resources.files("stylemerge") / "corpus" / (spec.get("corpus") or domain)
        # relative to the working directory where the corpus lies inside it (the workflow's
        # own src/): a moved or copied workflow directory then reruns nothing
        return (
            sorted(_relative(str(p)) for p in root.iterdir() if p.name.endswith(".txt"))
            if root.is_dir()
            else []
        )
    if spec["type"] == "local":
        return sorted(
            {
                m
                for pattern in spec["paths"]
                for m in glob.glob(pattern, recursive=True)
                if Path(m).is_file()
            }
        )
    return []


def _relative(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


SOURCES: dict[str, Callable[[Mapping, str], Iterator[Document]]] = {
    "builtin": read_builtin,
    "local": read_local,
    "hf": read_hf,
}


def read_source(spec: Mapping, domain: str) -> Iterator[Document]:
    """Documents of one domain, from the source named by ``spec['type']``."""
    try:
        reader = SOURCES[spec["type"]]
    except KeyError:
        raise DataError(
            f"domain {domain!r}: unknown source type {spec.get('type')!r} "
            f"(known: {', '.join(SOURCES)})"
        ) from None
    return reader(spec, domain)
