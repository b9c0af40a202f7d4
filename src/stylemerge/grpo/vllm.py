"""vLLM in GRPO: the context its engine reserves (``vllm_max_model_length``) and the policy
reference trl builds its colocated engine from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from stylemerge.grpo.trl_compat import trl_default
from stylemerge.models.reference import ModelReference

if TYPE_CHECKING:
    from stylemerge.core.job import JobSettings

# Tokens the derived vllm_max_model_length adds to prompt + completion: a prompt is a window of
# grpo.prompt_tokens decoded to text, which trl encodes again; that may add a BOS token and
# split the window's cut ends (a partial word, half a UTF-8 character) into a few more tokens.
PROMPT_MARGIN = 16


def grpo_context_length(grpo: Mapping) -> int:
    """Prompt plus completion in tokens: the longest sequence GRPO generates."""
    trainer = grpo.get("trainer") or {}
    completion = trainer.get("max_completion_length") or trl_default("max_completion_length")
    return grpo["prompt_tokens"] + completion


def grpo_trainer_settings(grpo: Mapping) -> dict:
    """``grpo.trainer`` as GRPOConfig takes it.  With ``use_vllm`` and no
    ``vllm_max_model_length``, that is derived (prompt + completion + :data:`PROMPT_MARGIN`):
    left unset, vLLM sizes its KV cache for the model's whole context (Qwen3: 32k tokens)."""
    trainer = dict(grpo["trainer"])
    if trainer.get("use_vllm") and trainer.get("vllm_max_model_length") is None:
        trainer["vllm_max_model_length"] = grpo_context_length(grpo) + PROMPT_MARGIN
    return trainer


def grpo_vllm_errors(grpo: Mapping, where: str = "grpo") -> list[str]:
    """Config problems of one domain's GRPO settings: an explicit ``vllm_max_model_length``
    shorter than prompt + completion (vLLM would cut every completion short, or refuse)."""
    trainer = grpo.get("trainer") or {}
    length = trainer.get("vllm_max_model_length")
    if not trainer.get("use_vllm") or length is None:
        return []
    needed = grpo_context_length(grpo)
    if length >= needed:
        return []
    return [
        f"config key '{where}.trainer.vllm_max_model_length': {length} is shorter than a "
        f"prompt plus its completion ({where}.prompt_tokens {grpo['prompt_tokens']} + "
        f"max_completion_length {needed - grpo['prompt_tokens']} = {needed} tokens); set it "
        "to at least that, or leave it out to have it derived"
    ]


def grpo_policy_reference(
    job: JobSettings, base: ModelReference | str | Path, trainer: Mapping
) -> ModelReference:
    """The reference GRPO loads its policy and tokenizer from: with ``trainer["use_vllm"]``,
    ``base`` as a local directory (:meth:`ModelReference.local_snapshot`), else ``base``.

    trl 1.16 builds its colocated vLLM engine from the policy model alone
    (trl/generation/vllm_generation.py, ``VLLMGeneration._init_vllm``)::

        self.llm = LLM(
            model=model.name_or_path,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_length,
            ...
            model_impl=self.model_impl,
            ...
            trust_remote_code=self.trust_remote_code,
        )

    with no ``revision``, ``tokenizer``, ``tokenizer_revision``, ``load_format`` or ``dtype``,
    and GRPOConfig has no field that would forward them (``vllm_model_impl`` picks an
    implementation, not files).  Given a hub id, vLLM would read config and tokenizer at the
    default branch, not the pinned revision, and its default ``load_format="auto"`` falls back
    to pickle weights (``*.bin``, ``*.pt``) where a directory has no safetensors.  trl syncs the
    policy's weights into vLLM before each generation, but the config, the tokenizer and the
    first load are vLLM's own.  Loaded from the pinned snapshot, the policy's ``name_or_path``
    is that directory: vLLM reads the pinned revision's files, and (checked by
    :func:`stylemerge.models.reference.check_model_dir`) safetensors weights, which "auto" takes
    before any pickle file.  ``dtype`` left to vLLM is "auto": the snapshot config's own, as the
    policy's.

    In ``vllm_mode: server`` the server loads what ``trl vllm-serve`` was started with (give it
    ``--revision``); the trainer side is the same snapshot."""
    base = ModelReference.of(base)
    return base.local_snapshot(job) if trainer.get("use_vllm") else base
