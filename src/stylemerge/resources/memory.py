"""The memory a job needs, derived from what the cost model knows (requests per job:
:mod:`stylemerge.resources.jobs`).

A job's peak resident memory (MiB) is estimated as::

    request = overhead(rule) + margin x (weights + training state + activations + logits
                                         + KV cache + packed tokens + copies)

- **overhead**: the process before any tensor: python, torch, transformers and the rule's
  libraries (lm-eval, trl + peft, mergekit), measured with ``/usr/bin/time -v`` on the imports
  of each job, plus what a run adds beside its model (lm-eval's task and data set objects,
  Trainer, tokenizers), fitted on the embedded default's benchmarks, whose models are tiny;
- **weights**: parameters x bytes of the dtype each model is loaded in, for every model the
  job holds (GRPO: the policy and both proxies; merges: every input mapped by mergekit);
- **training state**: gradients and AdamW's two moments of the trained parameters (fp32:
  12 bytes each; all of them for the proxies and pretraining, the LoRA matrices for GRPO, the
  embedding rows' matrices for think tokens);
- **activations** kept for the backward pass: batch x sequence x layers x (4 hidden + 5 query
  + 3 key/value + 4 intermediate widths) values (the tensors a Llama/Qwen3 block saves; only
  each layer's input with activation checkpointing); inference holds one layer's worth;
- **logits**: batch x sequence x vocabulary x 4 bytes per copy: they dominate at a large
  vocabulary (Qwen3's 151 936 tokens). Training holds four copies (logits, log-softmax and
  their gradients); lm-eval's loglikelihood the model's logits and a float32 log-softmax;
  entropy measurements four (logits, log-probabilities, probabilities and their product);
- **KV cache** of generation: 2 x layers x key/value width x sequences x length;
- **packed tokens**: texts packed into blocks go through a list of Python ints (~44 bytes a
  token with the tensor) before being cut;
- **margin**: 1.2 on the tensor terms: the allocator's fragmentation, tokenizers and Python
  objects not counted above; with it the estimate covers peaks measured on bare forward and
  training passes (SmolLM2-135M, 1k-8k tokens: within 10 % without it).

Sequences are upper bounds: every completion at ``max_completion_length``, every trace at
``max_length``, lm-eval's windows at ``max_length`` (or the model's positions) unless its tasks'
longest request is shorter (documents bounded at 2 characters a token).  On ``device: cuda``
only what stays on the host counts (weights staged while loading, CPU copies, packed tokens,
mergekit, which merges on the CPU) plus the CUDA runtime's host memory; on ``auto``
everything counts, as on the CPU (an upper bound when a GPU turns up).

On ``device: cuda`` the other terms are a job's GPU memory: :attr:`JobMemory.gpu_mb`, the
same margin on them plus the CUDA context (``CUDA_CONTEXT_GPU_MB``).  vLLM's share of a GRPO
job's GPU (``vllm_gpu_memory_utilization``) is not modelled beyond its KV cache term.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stylemerge.core.hub import looks_local
from stylemerge.core.precision import planned_precision
from stylemerge.models import names as model_names
from stylemerge.resources.data import (
    CHARS_PER_WORD,
    DomainData,
    config_data,
    example_tokens,
    harness_tasks,
)
from stylemerge.resources.sizes import (
    DTYPE_BYTES,
    Architecture,
    CostError,
    config_model_size,
    model_size,
)
from stylemerge.resources.stages import PROXY_SCORER_MAX_LENGTH, grpo_schedule
from stylemerge.workflow.config import stage_settings

MiB = 2**20
MARGIN = 1.2
# Host memory of the CUDA runtime (context, cuBLAS/cuDNN kernels) and of vLLM's engine when
# colocated (its CPU swap space is 4 GiB by default): assumed, not measured here.
CUDA_HOST_MB = 3000
CUDA_CONTEXT_GPU_MB = 500  # the CUDA context and cuBLAS workspaces on the GPU: assumed
VLLM_HOST_MB = 6000
PACKED_TOKEN_BYTES = 44  # a Python int (28) and its list slot (8), and the int64 tensor (8)
MIN_CHARS_PER_TOKEN = 2.0  # bounds a document's tokens from its characters
ENTROPY_BATCH = 8  # stylemerge.merge.run.entropy_and_loss
SAMPLE_BATCH = 16  # stylemerge.generation.sampling.sample_completions: prompts per generate call
LM_EVAL_AUTO_BATCH = 64  # lm-eval's max_batch_size, where batch_size "auto" starts
DEFAULT_POSITIONS = 4096  # a model whose max_position_embeddings is unknown


@dataclass
class JobMemory:
    """One job's estimate: named terms in bytes (``host`` True: in host memory whatever the
    device), the rule's overhead, and the config's override if any."""

    rule: str
    item: str
    overhead_mb: float
    terms: dict[str, tuple[float, bool]] = field(default_factory=dict)
    override_mb: int | None = None
    on_gpu: bool = False
    extra_host_mb: float = 0.0  # CUDA runtime, vLLM

    def add(self, name: str, nbytes: float, host: bool = False) -> None:
        if nbytes > 0:
            self.terms[name] = (float(nbytes), host)

    def add_largest(self, phases: Mapping[str, tuple[float, bool]]) -> None:
        """Phases that follow one another: only the largest is held at the peak; on a GPU,
        the largest in host memory and the largest on the GPU (they do not share memory)."""
        sides = [phases] if not self.on_gpu else [
            {k: v for k, v in phases.items() if v[1] == host} for host in (True, False)
        ]  # fmt: skip
        for side in filter(None, sides):
            name = max(side, key=lambda k: side[k][0])
            self.add(name, *side[name])

    def counted(self) -> dict[str, float]:
        """The terms in host memory (bytes): all of them unless the job runs on a GPU."""
        return {k: b for k, (b, host) in self.terms.items() if host or not self.on_gpu}

    @property
    def estimate_mb(self) -> int:
        tensors = sum(self.counted().values()) / MiB
        total = self.overhead_mb + self.extra_host_mb + MARGIN * tensors
        return int(math.ceil(total / 100) * 100)  # whole hundreds of MiB

    @property
    def request_mb(self) -> int:
        return self.override_mb if self.override_mb is not None else self.estimate_mb

    def gpu_terms(self) -> dict[str, float]:
        """The terms on the GPU (bytes): none unless the job runs on one."""
        return {k: b for k, (b, host) in self.terms.items() if self.on_gpu and not host}

    @property
    def gpu_mb(self) -> int | None:
        """The job's GPU memory (MiB, whole hundreds); None off the GPU or with no tensor on
        it (mergekit's jobs run on the CPU)."""
        if not self.gpu_terms():
            return None
        total = CUDA_CONTEXT_GPU_MB + MARGIN * sum(self.gpu_terms().values()) / MiB
        return int(math.ceil(total / 100) * 100)

    def as_dict(self) -> dict:
        return {
            "rule": self.rule,
            "item": self.item,
            "overhead_mb": self.overhead_mb + self.extra_host_mb,
            "terms_mb": {k: round(b / MiB, 1) for k, b in self.counted().items()},
            "estimate_mb": self.estimate_mb,
            "override_mb": self.override_mb,
            "request_mb": self.request_mb,
            "gpu_mb": self.gpu_mb,
            "gpu_terms_mb": {k: round(b / MiB, 1) for k, b in self.gpu_terms().items()},
        }


# --- building blocks (bytes) ------------------------------------------------------------------


def _bytes(dtype: str | None) -> int:
    return DTYPE_BYTES.get(dtype or "float32", 4)


def layer_values(a: Architecture) -> int:
    """Values one decoder layer keeps per token for its backward pass."""
    q = a.num_attention_heads * a.head_dim
    kv = a.num_key_value_heads * a.head_dim
    norms = q + kv if a.qk_norm else 0
    return 4 * a.hidden_size + 5 * q + 3 * kv + 4 * a.intermediate_size + norms


def activations(a: Architecture, tokens: float, nbytes: int, checkpointing: bool) -> float:
    """Kept for the backward pass: every layer's values, or with activation checkpointing
    each layer's input and one layer recomputed."""
    if checkpointing:
        return tokens * (a.num_hidden_layers * a.hidden_size + layer_values(a)) * nbytes
    return tokens * a.num_hidden_layers * layer_values(a) * nbytes


def inference(a: Architecture, tokens: float, nbytes: int) -> float:
    """One layer's values at a time (no gradients)."""
    return tokens * layer_values(a) * nbytes


def logits(a: Architecture, tokens: float, copy_bytes: float) -> float:
    """``tokens`` x vocabulary, ``copy_bytes`` per entry over all copies held at once."""
    return tokens * a.vocab_size * copy_bytes


def kv_cache(a: Architecture, tokens: float, nbytes: int) -> float:
    return 2 * a.num_hidden_layers * a.num_key_value_heads * a.head_dim * tokens * nbytes


def lora_parameters(a: Architecture, lora: Mapping) -> int:
    """Parameters of the LoRA matrices (r x (inputs + outputs) per adapted projection)."""
    h, i = a.hidden_size, a.intermediate_size
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    shapes = {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    per_layer = sum(sum(shapes.get(m, (h, h))) for m in lora["target_modules"])
    return lora["r"] * per_layer * a.num_hidden_layers


# --- the config's models -----------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """A model as a job loads it."""

    ref: str
    arch: Architecture
    dtype: str

    @property
    def bytes(self) -> int:
        return _bytes(self.dtype)

    @property
    def weights(self) -> float:
        return self.arch.parameters() * self.bytes


class Context:
    """Sizes of a config's models and data, computed once per config."""

    def __init__(self, config: Mapping):
        self.config = config
        self.sizes = {
            name: config_model_size(name, model, {}) for name, model in config["models"].items()
        }
        self._data: dict[str, DomainData] | None = None

    @property
    def data(self) -> dict[str, DomainData]:
        if self._data is None:
            self._data = config_data(self.config)
        return self._data

    def model(self, name: str, dtype: str | None = None) -> Loaded:
        """``models.<name>`` loaded in ``dtype`` (None: as stored, float32 where unknown)."""
        size = self.sizes[name]
        if size.architecture is None:  # only reachable with --params overrides
            raise CostError(f"model {size.ref!r} ({name}): architecture unknown")
        return Loaded(size.ref, size.architecture, dtype or size.architecture.dtype or "float32")

    def evaluated(self, item: str) -> Loaded:
        """An evaluated model: the base, a model made from it (a domain model: float32; a
        merge or a think-token model: in merge.dtype, or the base's for think_base), or a
        comparison."""
        comparisons = self.config["evaluate"]["comparisons"]
        if item in comparisons:
            if looks_local(comparisons[item]) and not Path(comparisons[item]).exists():
                return self.model("base")  # nothing to load: its jobs record it unavailable
            size = model_size(comparisons[item], {}, item)
            return Loaded(size.ref, size.architecture, size.architecture.dtype or "float32")
        if item in ("base", "think_base"):
            return self.model("base")
        if item in model_names.domain_models(self.config):
            return self.model("base", "float32")  # stylemerge.merge.run.DOMAIN_MODEL_DTYPE
        return self.model("base", self.config["merge"]["dtype"])

    def heldout_tokens(self) -> float:
        return sum(d.heldout_tokens for d in self.data.values())

    def longest_heldout_document(self) -> float:
        """Tokens of the longest held-out document, bounded (2 characters a token)."""
        return max(d.heldout_longest_chars for d in self.data.values()) / MIN_CHARS_PER_TOKEN


@functools.lru_cache(maxsize=8)
def _context(key: str) -> Context:
    return Context(json.loads(key))


def context(config: Mapping) -> Context:
    return _context(json.dumps(config, sort_keys=True, default=str))


# --- per rule ----------------------------------------------------------------------------------


def _train_lm(m: JobMemory, c: Context, model: Loaded, s: Mapping, packed: float) -> None:
    """transformers' Trainer in float32 (pretraining, proxies)."""
    tokens = s["batch_size"] * s["seq_len"]
    m.add("weights", model.weights)
    m.add("gradients and AdamW moments", 12 * model.arch.parameters())
    m.add("activations", activations(model.arch, tokens, 4, checkpointing=False))
    m.add("logits (4 copies)", logits(model.arch, tokens, 16))
    m.add("packed tokens", packed * PACKED_TOKEN_BYTES, host=True)


def _pretrain(m: JobMemory, c: Context, item: str) -> None:
    s = c.config["models"][item]["pretrain"]
    packed = sum(d.train_tokens + d.heldout_tokens for d in c.data.values())
    _train_lm(m, c, c.model(item, "float32"), s, packed)


def _proxy(m: JobMemory, c: Context, item: str) -> None:
    s = stage_settings(c.config, "proxy", item)
    packed = c.data[item].train_tokens + c.heldout_tokens()
    model = c.model("general_proxy", "float32")
    _train_lm(m, c, model, s, packed)
    if m.on_gpu:
        m.add("weights staged on the host", model.weights, host=True)


def _convert(m: JobMemory, c: Context, item: str) -> None:
    """The GGUF model dequantized (float32), its plain copy in gguf.dtype, and the saved
    copy safetensors serialises."""
    model = c.model(item)
    params = model.arch.parameters()
    m.add("dequantized model (float32)", 4 * params, host=True)
    m.add("plain copy", model.weights, host=True)
    m.add("serialised copy", model.weights, host=True)


def _grpo(m: JobMemory, c: Context, item: str) -> None:
    domain, _ = model_names.split_arm(c.config, item)
    s = stage_settings(c.config, "grpo", domain)
    t = s["trainer"]
    base, general = c.model("base"), c.model("general_proxy")
    g = grpo_schedule(s, c.data[domain].train_documents)
    seq = g["sequence_tokens"]
    # the domain proxy is saved by train_proxy in float32
    proxies = general.weights + 4 * general.arch.parameters()
    m.add("weights: policy, general and domain proxies", base.weights + proxies)
    m.add("LoRA weights, gradients, AdamW", 16 * lora_parameters(base.arch, s["lora"]))
    micro = t.get("per_device_train_batch_size", 8) * seq
    checkpointing = g["train_factor"] > 4
    training = activations(base.arch, micro, base.bytes, checkpointing) + logits(
        base.arch, micro, 16
    )
    scored = s["scorer_batch_size"] * min(seq, PROXY_SCORER_MAX_LENGTH)
    scoring = inference(general.arch, scored, 4) + logits(general.arch, scored, 4 + 4 + 4)
    generated = max(
        g["completions_per_step"] * (t.get("steps_per_generation") or 1),
        SAMPLE_BATCH * s["eval_samples"],
    )
    generation = kv_cache(base.arch, generated * seq, base.bytes) + logits(base.arch, generated, 12)
    # the phases alternate every step (sample, score, train): what one frees the allocator
    # keeps for the next, so they count together
    m.add("activations and logits (training step)", training)
    m.add("proxy scoring (logits, log-probabilities)", scoring)
    m.add("generation (KV cache, logits)", generation)
    if m.on_gpu:
        m.add("weights staged on the host", max(base.weights, general.weights), host=True)
        if t.get("use_vllm"):  # colocated: its own copy of the weights, loaded on the host
            m.add("vLLM: weights staged on the host", base.weights, host=True)
            m.extra_host_mb += VLLM_HOST_MB


def _entropy(c: Context, model: Loaded) -> float:
    """stylemerge.merge.run.entropy_and_loss on entropy_seq_len blocks."""
    tokens = ENTROPY_BATCH * c.config["merge"]["entropy_seq_len"]
    return inference(model.arch, tokens, 4) + logits(model.arch, tokens, model.bytes + 12)


def _apply(m: JobMemory, c: Context, item: str) -> None:
    """The base with the adapter merged in (float32, stylemerge.merge.run.DOMAIN_MODEL_DTYPE),
    its entropy, then save_pretrained (safetensors serialises a copy of the weights)."""
    model = c.model("base", "float32")
    m.add("weights", model.weights, host=True)
    m.add_largest(
        {
            # on a GPU the model is moved there for its entropy
            "the domain model and its entropy": (
                (model.weights if m.on_gpu else 0.0) + _entropy(c, model),
                False,
            ),
            "serialised copy (save_pretrained)": (model.weights, True),
        }
    )
    m.add("packed tokens (held-out)", c.heldout_tokens() * PACKED_TOKEN_BYTES, host=True)


def _merge(m: JobMemory, c: Context, item: str) -> None:
    """mergekit (on the CPU) maps every input's weights (the domain models, float32, and the
    base) and holds the output until written; the merge is then loaded for its entropy."""
    stored = c.model("base", c.config["merge"]["dtype"])
    mapped = len(c.config["domains"]) * c.model("base", "float32").weights
    mapped += c.model("base").weights + stored.weights
    m.add_largest(
        {
            "mergekit: inputs mapped, output held": (mapped, True),
            "the merge and its entropy": (stored.weights + _entropy(c, stored), False),
        }
    )
    m.add("packed tokens (held-out)", c.heldout_tokens() * PACKED_TOKEN_BYTES, host=True)


def _think(m: JobMemory, c: Context, item: str) -> None:
    """stylemerge.think.optimize: float32 weights; the embedding matrix's gradient and Adam moments
    (the mask zeroes all rows but two, the tensors are whole); per pass micro_batch_size
    traces at max_length, their activations in bfloat16 under autocast, each layer's input
    only with gradient checkpointing."""
    t = c.config["think"]
    stored = c.evaluated("think_base" if item == "base" else item)
    model = Loaded(stored.ref, stored.arch, "float32")  # trained in float32
    a = model.arch
    rows = a.vocab_size * a.hidden_size * (1 if a.tie_word_embeddings else 2)
    amp = planned_precision(c.config, t) == "bf16"
    m.add("weights (float32)", model.weights)
    m.add("copy of every parameter (unchanged check)", model.weights + 4 * rows, host=True)
    m.add("embedding gradients and Adam moments", 12 * rows)
    tokens = (t["micro_batch_size"] or t["batch_size"]) * t["max_length"]
    checkpointing = t["gradient_checkpointing"]
    m.add("activations", activations(a, tokens, 2 if amp else 4, checkpointing))
    m.add("logits (4 copies)", logits(a, tokens, 16))
    if amp:  # autocast keeps a bfloat16 copy of a weight that requires grad for the pass
        m.add("autocast: bfloat16 copy of the embeddings", 2 * rows)
    if m.on_gpu:  # loaded and made float32 on the host, then moved
        m.add("weights staged on the host (float32)", model.weights, host=True)


def lm_eval_sequence(c: Context, model: Loaded, item: str) -> float:
    """The longest window lm-eval scores in one batch on model ``item``: max_length (or the
    model's positions), or the longest request of its tasks where that is shorter."""
    lm = c.config["evaluate"]["lm_eval"]
    window = lm["max_length"] or model.arch.max_position_embeddings or DEFAULT_POSITIONS
    longest = 0.0
    for task in model_names.lm_eval_tasks_for(c.config, item):
        name = task["name"]
        if name in ("stylemerge", "stylemerge_bpb") or name.startswith("stylemerge_bpb_"):
            longest = max(longest, c.longest_heldout_document())
        if name in ("stylemerge", "stylemerge_lambada", "stylemerge_lambada_ood"):
            words = lm["lambada"]["max_words"]
            longest = max(longest, words * CHARS_PER_WORD / MIN_CHARS_PER_TOKEN)
        if name in ("stylemerge", "stylemerge_gsm8k"):
            shots = task.get("num_fewshot")
            shots = 3 if shots is None else shots
            gen = lm["gsm8k"]["max_gen_toks"] or harness_tasks()["max_gen_toks"]
            longest = max(longest, (shots + 1) * example_tokens("builtin_problem") + gen)
        if name == "stylemerge_gsm8k_think":  # gsm8k's problems, 3-shot unless set
            shots = task.get("num_fewshot")
            shots = 3 if shots is None else shots
            gen = lm["gsm8k_think"]["max_gen_toks"] or harness_tasks()["max_gen_toks"]
            longest = max(longest, (shots + 1) * example_tokens("gsm8k") + gen)
        if not name.startswith("stylemerge"):  # the harness's own: as long as allowed
            longest = window
    return min(window, longest or window)


def _evaluate(m: JobMemory, c: Context, item: str) -> None:
    lm = c.config["evaluate"]["lm_eval"]
    model = c.evaluated(item)
    batch = LM_EVAL_AUTO_BATCH if lm["batch_size"] == "auto" else lm["batch_size"]
    tokens = batch * lm_eval_sequence(c, model, item)
    m.add("weights", model.weights)
    m.add("logits and float32 log-softmax", logits(model.arch, tokens, model.bytes + 4))
    m.add("one layer's values", inference(model.arch, tokens, model.bytes))
    if m.on_gpu:
        m.add("weights staged on the host", model.weights, host=True)


def _diversity(m: JobMemory, c: Context, item: str) -> None:
    d = c.config["evaluate"]["diversity"]
    model = c.evaluated(item)
    sequences = d["batch_size"] * d["samples"]
    length = d["prompt_tokens"] + d["max_new_tokens"]
    m.add("weights", model.weights)
    m.add("generation: KV cache", kv_cache(model.arch, sequences * length, model.bytes))
    m.add("generation: logits, scores, probabilities", logits(model.arch, sequences, 12))
    m.add("one layer's values", inference(model.arch, sequences * length, model.bytes))
    if m.on_gpu:
        m.add("weights staged on the host", model.weights, host=True)


RULE_MODELS = {  # rule -> the terms of one of its jobs
    "pretrain_model": _pretrain,
    "convert_model": _convert,
    "train_proxy": _proxy,
    "train_adapter": _grpo,
    "apply_adapter": _apply,
    "merge_models": _merge,
    "optimize_think_tokens": _think,
    "evaluate_lm": _evaluate,
    "measure_diversity": _diversity,
}
