"""Data sizes: documents and tokens of each domain (counted for the builtin corpus and local
files, assumed for hub data), the lm-eval tasks' sizes (``harness_tasks.yaml``) and the think
stage's traces."""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

import yaml

from stylemerge.resources.sizes import CostError
from stylemerge.workflow.config import stage_settings

# Text-size assumptions where the data are not on disk.
CHARS_PER_TOKEN = 4.0
CHARS_PER_WORD = 6.0  # a word and its space
HUB_DOCUMENT_CHARS = 8000  # mean document of a hub data set (capped at shards.max_chars)
HUB_DOCUMENTS = 10000  # documents of a hub source without shards.max_documents


@functools.cache
def harness_tasks() -> dict:
    """``harness_tasks.yaml``: lm-eval task sizes, example lengths, the uncheatable_eval
    categories."""
    return yaml.safe_load(resources.files(__package__).joinpath("harness_tasks.yaml").read_text())


def example_tokens(kind: str) -> int:
    """Tokens of one solved example with its answer: ``gsm8k`` or ``builtin_problem``."""
    return harness_tasks()["example_tokens"][kind]


UNCHEATABLE_TASK = re.compile(r"uncheatable_eval_\w+")


@dataclass(frozen=True)
class DomainData:
    train_documents: int
    train_chars: int
    heldout_documents: int
    heldout_chars: int
    basis: str
    heldout_longest_chars: int = 0  # the longest held-out document (for memory)

    @property
    def train_tokens(self) -> int:
        return int(self.train_chars / CHARS_PER_TOKEN)

    @property
    def heldout_tokens(self) -> int:
        return int(self.heldout_chars / CHARS_PER_TOKEN)

    def heldout_tokens_of(self, documents: int | None) -> int:
        """Held-out tokens of the first ``documents`` documents (all for None)."""
        if documents is None or documents >= self.heldout_documents:
            return self.heldout_tokens
        return int(self.heldout_tokens * documents / max(self.heldout_documents, 1))


def domain_data(source: Mapping, domain: str, shards: Mapping) -> DomainData:
    """Documents and characters per split: counted for builtin sources and local sources whose
    files exist (the same filters and split as ``build_shards``), assumed for hub data."""
    if source["type"] in ("builtin", "local"):
        from stylemerge.data.shards import filter_documents, is_heldout
        from stylemerge.data.sources import read_source

        try:
            split = {"train": [0, 0], "heldout": [0, 0]}
            longest = 0
            counts: Counter = Counter()
            for doc, _ in filter_documents(read_source(source, domain), shards, counts):
                name = "heldout" if is_heldout(doc.id, shards["heldout_fraction"]) else "train"
                split[name][0] += 1
                split[name][1] += len(doc.text)
                if name == "heldout":
                    longest = max(longest, len(doc.text))
            basis = f"{source['type']} (counted)"
            return DomainData(*split["train"], *split["heldout"], basis, longest)
        except (OSError, ValueError) as err:
            if source["type"] == "builtin":
                raise CostError(f"domain {domain!r}: {err}") from err
            basis = f"local files not readable here ({err}); assumed"
    else:
        basis = "hub data (assumed)"
    documents = shards["max_documents"] or HUB_DOCUMENTS
    chars = min(shards["max_chars"], HUB_DOCUMENT_CHARS)
    heldout = round(documents * shards["heldout_fraction"])
    return DomainData(
        documents - heldout,
        (documents - heldout) * chars,
        heldout,
        heldout * chars,
        basis,
        shards["max_chars"],
    )


def config_data(config: Mapping) -> dict[str, DomainData]:
    """Every domain's :class:`DomainData` for a validated config."""
    return {
        domain: domain_data(spec["source"], domain, stage_settings(config, "shards", domain))
        for domain, spec in config["domains"].items()
    }


def heldout_tokens(data: Mapping[str, DomainData], domains: Iterable[str] | None = None) -> int:
    return sum(data[d].heldout_tokens for d in (domains or data))


def think_trace_tokens(think: Mapping) -> int:
    """Tokens of one k-shot trace (estimate), capped at ``max_length``."""
    data = think["data"]
    per_example = example_tokens("gsm8k" if data["source"] == "gsm8k" else "builtin_problem")
    return min(think["max_length"], (data["shots"] + 1) * per_example)


def _limited(documents: float, limit) -> float:
    if limit is None:
        return documents
    return documents * limit if limit < 1 else min(documents, limit)


def lm_eval_tasks(
    config: Mapping,
    data: Mapping[str, DomainData],
    task: Mapping,
    note: Callable[[str], None] = lambda text: None,
) -> list[tuple[str, float, float]]:
    """(task, context tokens, generated tokens) per evaluated model for one configured task;
    ``note`` receives the assumptions made for tasks whose data are not here."""
    s = config["evaluate"]["lm_eval"]
    limit, name, shots = s["limit"], task["name"], task.get("num_fewshot")
    tables = harness_tasks()

    def sub(names):
        return [t for n in names for t in lm_eval_tasks(config, data, n, note)]

    if name == "stylemerge":
        return sub(
            {"name": n, "num_fewshot": shots}
            for n in ("stylemerge_lambada", "stylemerge_gsm8k", "stylemerge_bpb")
        )
    if name == "uncheatable_eval":
        return sub({"name": f"uncheatable_eval_{c}"} for c in tables["uncheatable_categories"])
    if name in ("stylemerge_lambada", "stylemerge_lambada_ood"):
        # passages are disjoint runs of sentences of the held-out text: at most all of it
        lam = s["lambada"]
        if name == "stylemerge_lambada_ood":  # every document of the out-of-domain sources
            whole = {**config["shards"], "heldout_fraction": 1.0}
            sources = s["lambada_ood"]["sources"]
            tokens = heldout_tokens({n: domain_data(src, n, whole) for n, src in sources.items()})
        else:
            tokens = heldout_tokens(data, [d for d in lam["domains"] if d in data])
        passage = (lam["min_words"] + lam["max_words"]) / 2 * CHARS_PER_WORD / CHARS_PER_TOKEN
        passages = _limited(lam["max_passages"] or tokens / passage, limit)
        return [(name, min(tokens, passages * passage), 0)]
    if name == "stylemerge_bpb":
        # one task per domain (lm-eval's limit applies to each), on its first documents
        cap = s["bpb"]["max_documents"]
        tokens = 0
        for d in data.values():
            documents = d.heldout_documents if cap is None else min(cap, d.heldout_documents)
            tokens += d.heldout_tokens_of(math.ceil(_limited(documents, limit)))
        return [(name, tokens, 0)]
    if name in ("stylemerge_gsm8k", "gsm8k", "stylemerge_gsm8k_think"):
        if name == "gsm8k":
            spec = tables["tasks"]["gsm8k"]
            documents, default_shots = spec["documents"], spec["shots"]
            example, generated = example_tokens(spec["example"]), None
        elif name == "stylemerge_gsm8k_think":  # gsm8k's test split, answers in think tags
            spec = tables["tasks"]["gsm8k"]
            documents, default_shots = spec["documents"], 3
            example = example_tokens(spec["example"])
            generated = (s.get("gsm8k_think") or {}).get("max_gen_toks")
        else:
            documents, default_shots = s["gsm8k"]["heldout"], 3
            example, generated = example_tokens("builtin_problem"), s["gsm8k"]["max_gen_toks"]
        shots = default_shots if shots is None else shots
        documents = _limited(documents, limit)
        return [
            (
                name,
                documents * (shots * example + example // 2),  # shots, then the question
                documents * (generated or tables["max_gen_toks"]),
            )
        ]
    if name.startswith("uncheatable_eval_"):
        documents = config["shards"]["max_documents"] or HUB_DOCUMENTS
        note(
            f"uncheatable_eval_<category>: the snapshot's documents per category assumed as "
            f"shards.max_documents or {HUB_DOCUMENTS} ({documents}) x {HUB_DOCUMENT_CHARS} "
            "characters"
        )
        documents = _limited(documents, limit)
        return [(name, documents * HUB_DOCUMENT_CHARS / CHARS_PER_TOKEN, 0)]
    spec = tables["tasks"].get(name)
    if spec is None:
        spec = tables["unknown"]
        note(
            f"{name}: not modelled; assumed {spec['documents']} documents x {spec['tokens']} tokens"
        )
    return [(name, _limited(spec["documents"], limit) * spec["tokens"], 0)]
