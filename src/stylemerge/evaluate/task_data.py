"""The lm-eval tasks packaged here (``stylemerge_*``) and their data: the embedded default's
evaluation tasks, which need no network.

The packaged tasks live in ``stylemerge/lm_tasks/`` as YAML templates that mirror the
harness's own, with only the data set changed; :func:`prepare_task_data` writes their data
(local JSONL) and the filled-in YAMLs to a per-run directory, which
``TaskManager(include_path=..., include_defaults=False)`` then indexes in milliseconds
(indexing every harness task costs ~10 s):

- ``stylemerge_lambada``: ``lambada_openai`` on passages of held-out shard text whose last word
  is the target (:func:`lambada_passages`), from the configured (prose) domains: in-domain
  text, of domains the adapters trained on;
- ``stylemerge_lambada_ood``: the same passages from text of no domain of the run (the
  ``evaluate.lm_eval.lambada_ood`` sources, sharded whole): out-of-domain text, as the card's
  ``lambada_openai`` (book text) is to its adapters.  Not in the tag ``stylemerge``;
- ``stylemerge_gsm8k``: ``gsm8k`` (3-shot) on the arithmetic problems of
  :mod:`stylemerge.data.arithmetic`: held-out problems as test documents, train problems as the
  few-shot pool, answers ``<think> reasoning </think> #### N``;
- ``stylemerge_bpb_<domain>`` (group ``stylemerge_bpb``): ``uncheatable_eval``'s rolling
  log-likelihood (bits per byte) on each domain's held-out shard;
- ``stylemerge_gsm8k_think`` (paper scale): ``gsm8k`` on the harness's own data (openai/gsm8k:
  the test split as test documents, the train split as the few-shot pool), every answer
  rewritten as the think-token traces are (:func:`stylemerge.data.arithmetic.from_gsm8k`, then
  ``<think> rationale </think> #### N``), so that the 3-shot prompt shows the tags whose rows
  were trained, where the stock ``gsm8k`` prompt never does.  Its data come from the hub (or a
  local data set directory), so the tag ``stylemerge`` leaves it out.

The tag ``stylemerge`` names every other packaged task. :mod:`stylemerge.evaluate.harness` runs
them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from itertools import zip_longest
from pathlib import Path

import yaml

from stylemerge.core.files import sha256_file, write_jsonl
from stylemerge.data import arithmetic
from stylemerge.data.shards import read_shard

TEMPLATES = Path(__file__).parent / "lm_tasks"
PREFIX = "stylemerge"  # packaged task names start with this; anything else is a harness task
LAMBADA, GSM8K, BPB = "stylemerge_lambada", "stylemerge_gsm8k", "stylemerge_bpb"
GSM8K_THINK = "stylemerge_gsm8k_think"
# The hub data set each harness task (lm-eval's own) of the shipped configs loads, as lm-eval
# 0.4.13's task YAMLs name it (tests/test_revisions.py checks them): so that the run's lock
# pins them without lm-eval's task index (about 10 s) in every snakemake process. A harness
# task not here loads its data set at the revision its YAML names (the main process warns).
HARNESS_DATA_SETS = {
    "lambada_openai": "EleutherAI/lambada_openai",
    "gsm8k": "openai/gsm8k",
}
HARNESS_DATA_SET_PREFIXES = {"uncheatable_eval_": "Jellyfish042/UncheatableEval-2026-07"}


def harness_data_set(task: str) -> str | None:
    """The hub data set harness task ``task`` loads, where known (None for packaged tasks,
    groups and tasks not listed)."""
    if task in HARNESS_DATA_SETS:
        return HARNESS_DATA_SETS[task]
    return next((repo for p, repo in HARNESS_DATA_SET_PREFIXES.items() if task.startswith(p)), None)


LAMBADA_OOD = "stylemerge_lambada_ood"
# The lambada tasks by the text they score.  The card's lambada_openai is book text that no
# adapter trained on: its claim maps to the out-of-domain row, and the in-domain mirror (text
# of the domains the adapters fitted) is shown beside it, labelled, never in its place.
OUT_OF_DOMAIN, IN_DOMAIN = "out-of-domain", "in-domain"
LAMBADA_TEXTS = {OUT_OF_DOMAIN: ("lambada_openai", LAMBADA_OOD), IN_DOMAIN: (LAMBADA,)}
LAMBADA_TASKS = (*LAMBADA_TEXTS[OUT_OF_DOMAIN], *LAMBADA_TEXTS[IN_DOMAIN])  # out-of-domain first


def lambada_text(task: str) -> str:
    """Which text a lambada task scores (a key of :data:`LAMBADA_TEXTS`)."""
    return next(text for text, tasks in LAMBADA_TEXTS.items() if task in tasks)


# --- lambada-style passages ---------------------------------------------------------------------

# a word that ends a sentence: . ! or ? then optional closing quotes or brackets
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
_TRAILING = re.compile(r"[^\w]+$")
# a target word: letters, inner apostrophes or hyphens allowed ("don't", "well-known")
_WORD = re.compile(r"[^\W\d_]{2,}(?:['\u2019-][^\W\d_]+)*|[^\W\d_]+(?:['\u2019-][^\W\d_]+)+")


def lambada_passages(text: str, min_words: int, max_words: int) -> list[str]:
    """LAMBADA-style passages of ``text``: consecutive, non-overlapping runs of whole sentences,
    ``min_words`` to ``max_words`` words long, ending in a plain word (letters only, at least
    two) whose sentence punctuation is dropped, so that the passage's last space-separated word
    is the target, as in ``lambada_openai``.  Whitespace (newlines included) becomes single
    spaces, because the task splits on ``' '``.

    A sentence end whose last word is no plain word (a number, a quoted word, code) does not end
    a passage: the passage grows to the next sentence end.  A run that passes ``max_words``
    without a usable end is dropped and the next passage starts after it.  Unlike LAMBADA's,
    these passages are not filtered for needing the wider context (that needed human
    annotators): the target is simply the last word of a run of sentences."""
    if not 1 <= min_words <= max_words:
        raise ValueError(
            f"lambada passages: need 1 <= min_words <= max_words, got {min_words} and {max_words}"
        )
    words = text.split()
    passages, start = [], 0
    for i, word in enumerate(words):
        if not _SENTENCE_END.search(word):
            continue
        length = i - start + 1
        if length > max_words:
            start = i + 1
            continue
        core = _TRAILING.sub("", word)
        if length < min_words or not _WORD.fullmatch(core):
            continue
        passages.append(" ".join([*words[start:i], core]))
        start = i + 1
    return passages


def lambada_documents(
    heldout_shards: Mapping[str, str | Path],
    settings: Mapping,
    domains: Sequence[str] | None = None,
) -> list[dict]:
    """Passages of the held-out shards of ``domains`` (default ``settings["domains"]``),
    interleaved (first passage of every document, then every second passage, ...) so that a
    ``limit`` or ``max_passages`` keeps passages of many documents; at most ``max_passages``
    (null: all)."""
    domains = list(settings["domains"] if domains is None else domains)
    missing = [d for d in domains if d not in heldout_shards]
    if missing:
        raise ValueError(
            f"evaluate lambada domains {missing} have no held-out shard (domains with one: "
            f"{', '.join(sorted(heldout_shards))})"
        )
    per_document = []
    for domain in domains:
        for number, record in enumerate(read_shard(heldout_shards[domain])):
            passages = lambada_passages(
                record["text"], settings["min_words"], settings["max_words"]
            )
            doc_id = record.get("id") or f"{domain}/{number}"
            per_document.append(
                [
                    {
                        "id": f"{doc_id}:{k}",
                        "document": doc_id,  # the unit intervals resample
                        "domain": domain,
                        "text": passage,
                    }
                    for k, passage in enumerate(passages)
                ]
            )
    docs = [d for rank in zip_longest(*per_document) for d in rank if d is not None]
    if settings.get("max_passages"):
        docs = docs[: settings["max_passages"]]
    if not docs:
        raise ValueError(
            f"no lambada passages in the held-out shards of {domains} "
            f"({settings['min_words']} to {settings['max_words']} words ending a sentence in a "
            "plain word); lower lambada.min_words or raise max_words"
        )
    return docs


# --- gsm8k with think-tagged answers -------------------------------------------------------------


def gsm8k_think_data(settings: Mapping, data_dir: Path) -> dict:
    """The test and few-shot splits of a GSM8k data set (``path``, ``name``, ``revision``,
    ``test_split``, ``fewshot_split``) as harness records whose answers are
    ``<think> rationale </think> #### N``, calculator annotations removed as
    ``strip_calculator`` says (as the think-token traces were); the data files written under
    ``data_dir`` as ``{"train": ..., "test": ...}`` (``train``: the few-shot pool)."""
    written = {}
    for split, source in (("train", settings["fewshot_split"]), ("test", settings["test_split"])):
        records = arithmetic.load_gsm8k(
            settings["path"], settings["name"], source, settings["revision"]
        )
        problems = arithmetic.from_gsm8k(records, settings["strip_calculator"])
        docs = [arithmetic.harness_doc(problem) for problem in problems]
        written[split] = _data_file(data_dir / f"gsm8k_think_{split}.jsonl", docs)
    return written


# --- task data and YAMLs ------------------------------------------------------------------------


def _template(name: str) -> dict:
    return yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text(encoding="utf-8"))


def _write_task(path: Path, config: Mapping) -> None:
    header = (
        "# Written by stylemerge.evaluate.task_data.prepare_task_data from the packaged template.\n"
    )
    path.write_text(
        header + yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def _data_file(path: Path, records: Sequence[Mapping]) -> dict:
    write_jsonl(path, records)
    return {"file": str(path), "documents": len(records), "sha256": sha256_file(path)}


def prepare_task_data(
    heldout_shards: Mapping[str, str | Path],
    out_dir: str | Path,
    settings: Mapping,
    seed: int,
    heldout_fraction: float,
    tasks: Sequence[str] = (LAMBADA, GSM8K, BPB),
    ood_shards: Mapping[str, str | Path] | None = None,
) -> dict:
    """Write the data and task YAMLs of the packaged tasks named in ``tasks`` to ``out_dir``;
    return ``{"include_path": out_dir, "tasks": {task: {split: {file, documents, sha256}}}}``.

    ``heldout_shards``: domain -> held-out shard; ``ood_shards``: out-of-domain source ->
    its shard (every document; :data:`LAMBADA_OOD`'s text).  ``settings``: the ``lambada``
    (``domains``, ``min_words``, ``max_words``, ``max_passages``), ``gsm8k`` (``train``,
    ``heldout``, ``max_gen_toks``), ``gsm8k_think`` (:func:`gsm8k_think_data`'s settings,
    ``max_gen_toks``) and ``bpb`` (``max_documents``) sections.  ``seed`` and
    ``heldout_fraction`` pick the arithmetic problems: pass the think stage's, so that the test
    problems are held out of its training traces (the split is a hash of the question text).
    Data sets are cached inside ``out_dir`` (not in ``~/.cache``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = str(out / "datasets_cache")
    written: dict[str, dict] = {}
    for name in (LAMBADA, LAMBADA_OOD):
        if name in tasks:
            written[name] = _lambada_task(name, heldout_shards, ood_shards, settings, out, cache)
    if GSM8K in tasks:
        written[GSM8K] = _gsm8k_task(settings["gsm8k"], seed, heldout_fraction, out, cache)
    if GSM8K_THINK in tasks:
        written[GSM8K_THINK] = _gsm8k_think_task(settings, out, cache)
    if BPB in tasks or any(t.startswith(f"{BPB}_") for t in tasks):
        written.update(_bpb_tasks(heldout_shards, settings, out, cache))
    return {"include_path": str(out), "tasks": written}


def _lambada_task(
    name: str,
    heldout_shards: Mapping[str, str | Path],
    ood_shards: Mapping[str, str | Path] | None,
    settings: Mapping,
    out: Path,
    cache: str,
) -> dict:
    """Write lambada mirror ``name``'s passages and YAML under ``out``; return ``{"test":
    data file}``.  :data:`LAMBADA_OOD` scores every out-of-domain source's whole shard, the
    in-domain mirror the run's held-out shards."""
    ood = name == LAMBADA_OOD  # every source's whole shard, not the run's held-out ones
    if ood and not ood_shards:
        raise ValueError(
            f"{LAMBADA_OOD}: no out-of-domain text (set evaluate.lm_eval.lambada_ood.sources)"
        )
    shards = ood_shards if ood else heldout_shards
    docs = lambada_documents(shards, settings["lambada"], list(shards) if ood else None)
    written = {"test": _data_file(out / "data" / f"{name[len(PREFIX) + 1 :]}_test.jsonl", docs)}
    config = _template(LAMBADA)
    if ood:  # the mirror's template under its own name, outside the tag stylemerge
        config["task"] = name
        del config["tag"]
    config["dataset_kwargs"] = {"data_files": {"test": written["test"]["file"]}, "cache_dir": cache}
    _write_task(out / f"{name}.yaml", config)
    return written


def _gsm8k_task(gsm: Mapping, seed: int, heldout_fraction: float, out: Path, cache: str) -> dict:
    """Write :data:`GSM8K`'s arithmetic problems (held-out ones as test documents, train ones
    as the few-shot pool) and YAML under ``out``; return ``{"train": ..., "test": ...}``."""
    problems = arithmetic.split_problems(
        arithmetic.generate_problems(seed), gsm["train"], gsm["heldout"], heldout_fraction
    )
    written = {
        split: _data_file(
            out / "data" / f"gsm8k_{split}.jsonl",
            [arithmetic.harness_doc(p) for p in problems[source]],
        )
        for split, source in (("train", "train"), ("test", "heldout"))
    }
    config = _template(GSM8K)
    config["dataset_kwargs"] = {
        "data_files": {split: info["file"] for split, info in written.items()},
        "cache_dir": cache,
    }
    if gsm.get("max_gen_toks"):
        config["generation_kwargs"]["max_gen_toks"] = gsm["max_gen_toks"]
    _write_task(out / f"{GSM8K}.yaml", config)
    return written


def _gsm8k_think_task(settings: Mapping, out: Path, cache: str) -> dict:
    """Write :data:`GSM8K_THINK`'s data (:func:`gsm8k_think_data`) and YAML (the gsm8k
    template under its own name and tag) under ``out``; return the data files."""
    written = gsm8k_think_data(settings["gsm8k_think"], out / "data")
    config = _template(GSM8K)
    config["task"], config["tag"] = GSM8K_THINK, ["stylemerge_think"]
    config["dataset_kwargs"] = {
        "data_files": {split: info["file"] for split, info in written.items()},
        "cache_dir": cache,
    }
    if settings["gsm8k_think"].get("max_gen_toks"):
        config["generation_kwargs"]["max_gen_toks"] = settings["gsm8k_think"]["max_gen_toks"]
    _write_task(out / f"{GSM8K_THINK}.yaml", config)
    return written


def _bpb_tasks(
    heldout_shards: Mapping[str, str | Path], settings: Mapping, out: Path, cache: str
) -> dict:
    """Write a :data:`BPB` task per domain (its held-out shard's first ``max_documents``
    documents) and the group naming them under ``out``; return ``{task: {"test": ...}}``."""
    shutil.copyfile(TEMPLATES / f"_{BPB}_base.yaml", out / f"_{BPB}_base.yaml")
    group = _template(BPB)
    limit = settings["bpb"].get("max_documents")
    written = {}
    for domain, shard in sorted(heldout_shards.items()):
        name = f"{BPB}_{domain}"
        docs = [{"id": r.get("id"), "text": r["text"]} for r in read_shard(shard)]
        written[name] = {"test": _data_file(out / "data" / f"bpb_{domain}.jsonl", docs[:limit])}
        config = _template(f"{BPB}_domain")
        config["task"], config["task_alias"] = name, f"bpb_{domain}"
        config["dataset_kwargs"] = {
            "data_files": {"test": written[name]["test"]["file"]},
            "cache_dir": cache,
        }
        _write_task(out / f"{name}.yaml", config)
        group["task"].append(name)
    _write_task(out / f"{BPB}.yaml", group)
    return written
