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

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stylemerge.grpo.trl_compat import trl_default
from stylemerge.models.names import (
    arms,
    diversity_models,
    lm_eval_models,
    lm_eval_tasks_for,
    replicate_seeds,
    think_models,
)
from stylemerge.resources.data import (
    UNCHEATABLE_TASK,
    DomainData,
    config_data,
    heldout_tokens,
    lm_eval_tasks,
    think_trace_tokens,
)
from stylemerge.resources.rules import RULES
from stylemerge.resources.sizes import CostError, ModelSize, config_model_size, model_size
from stylemerge.workflow.config import stage_settings

DEFAULT_PEAK_TFLOPS = 989.0  # NVIDIA H100 SXM, dense BF16 tensor cores
DEFAULT_UTILISATION = 0.4
STAGES = ("pretrain", "proxy", "grpo", "merge", "think", "evaluate")

FORWARD, TRAIN, FROZEN_TRAIN, RECOMPUTE = 2, 6, 4, 2

PROXY_SCORER_MAX_LENGTH = 512  # stylemerge.grpo.rewards.ProxyScorer: prompt + completion tokens
KARCHER_RECALIBRATIONS = 21  # merge.calibrate_entropy: 20 bisection steps and the final one


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

    def request(self, stage: str, rule: str, jobs: int, runtime_min: float, gpus: int) -> None:
        """``jobs`` jobs of ``rule`` requesting ``runtime_min`` minutes and ``gpus`` GPUs each."""
        if RULES[rule].gpu and not gpus and self.config["device"] == "cuda":
            self.note(
                f"{rule} puts its models on device cuda but requests no GPU"
                f" ({RULES[rule].section}.gpus: 0): requested GPU-h count none for it, yet a"
                " Slurm job of profiles/slurm holds one"
            )
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
        requested = {"jobs": 0, "job_hours": 0.0, "gpu_hours": 0.0}
        for entry in self.requested.values():
            for key in requested:
                requested[key] += entry[key]
        return {
            "flops": sum(r.flops for r in self.rows),
            "gpu_hours": sum(r.gpu_hours for r in self.rows),
            "requested": requested,
        }

    def heldout_tokens(self, domains: Iterable[str] | None = None) -> int:
        return heldout_tokens(self.data, domains)


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
        e.request("pretrain", "pretrain_model", 1, s["runtime_min"], s["gpus"])


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
        e.request("proxy", "train_proxy", 1, s["runtime_min"], s["gpus"])


def grpo_schedule(settings: Mapping, train_documents: int) -> dict:
    """Steps, completions and tokens of one GRPO run (trl 1.16's defaults for unset keys)."""
    t = settings["trainer"]
    per_device = t.get("per_device_train_batch_size", 8)
    accumulation = t.get("gradient_accumulation_steps", 1)
    generations = t.get("num_generations", 8)
    iterations = t.get("num_iterations", 1)
    completion = t.get("max_completion_length") or trl_default("max_completion_length")
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
        e.request("grpo", "train_adapter", 1, s["runtime_min"], s["gpus"])


def _merge(e: Estimate) -> None:
    m = e.config["merge"]
    blocks = _blocks(m["entropy_blocks"], e.heldout_tokens(), m["entropy_seq_len"])
    tokens = blocks * m["entropy_seq_len"]
    applied = [f"{d}{arm}" for d in e.config["domains"] for arm in arms(e.config)]
    for domain in applied:
        e.add("merge", f"apply_adapter/{domain}", "held-out entropy", "base", tokens, FORWARD)
    e.request("merge", "apply_adapter", len(applied), m["runtime_min"], m["gpus"])
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
    e.request("merge", "merge_models", len(merges), m["runtime_min"], m["gpus"])


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
            FROZEN_TRAIN + (RECOMPUTE if t["gradient_checkpointing"] else 0),
        )
        e.add(
            "think",
            name,
            "held-out CE before/after",
            "base",
            2 * t["data"]["heldout"] * trace,
            FORWARD,
        )
        e.request("think", "optimize_think_tokens", 1, t["runtime_min"], t["gpus"])


def _evaluate(e: Estimate) -> None:
    ev = e.config["evaluate"]
    lm, div = ev["lm_eval"], ev["diversity"]
    scored = lm_eval_models(e.config)
    comparisons = ev["comparisons"]
    evaluated = diversity_models(e.config)
    for name in evaluated:
        # made here from the base (or the base itself), else a comparison sized by its ref
        model = name if name in comparisons else "base"
        if model not in e.sizes:
            e.sizes[model] = model_size(comparisons[name], e.overrides, name)
        specs = lm_eval_tasks_for(e.config, name) if name in scored else []
        tasks = [t for spec in specs for t in lm_eval_tasks(e.config, e.data, spec, e.note)]
        for task, context, generated in tasks:
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
    e.request("evaluate", "evaluate_lm", len(scored), lm["runtime_min"], lm["gpus"])
    e.request("evaluate", "measure_diversity", len(evaluated), div["runtime_min"], div["gpus"])


def estimate(
    config: Mapping,
    assumptions: Assumptions | None = None,
    params: Mapping[str, float] | None = None,
) -> Estimate:
    """Every stage's rows for a *validated* config
    (:func:`stylemerge.workflow.config.validate_config`)."""
    assumptions = assumptions or Assumptions()
    if assumptions.gpu_peak_tflops <= 0:
        raise CostError("--gpu-peak-tflops must be positive")
    if not 0 < assumptions.utilisation <= 1 or not 0 < assumptions.generation <= 1:
        raise CostError("utilisation must be in (0, 1]")
    overrides = dict(params or {})
    sizes = {
        name: config_model_size(name, model, overrides) for name, model in config["models"].items()
    }
    e = Estimate(config, sizes, config_data(config), assumptions, overrides)
    for stage in (_pretrain, _proxy):
        stage(e)
    shared = len(e.rows)
    for stage in (_grpo, _merge, _think, _evaluate):
        stage(e)
    # every stage from GRPO on runs once per replicate (seed); the others are shared
    seeds = len(replicate_seeds(config))
    if seeds > 1:
        for row in e.rows[shared:]:
            row.tokens *= seeds
            row.flops *= seeds
            row.gpu_hours *= seeds
        for stage in ("grpo", "merge", "think", "evaluate"):
            for key, value in e.requested.get(stage, {}).items():
                e.requested[stage][key] = value * seeds
        e.note(f"grpo, merge, think and evaluate run once per replicate: x{seeds} seeds")
    return e
