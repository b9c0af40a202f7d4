"""vLLM, the paper path's generation engine: GRPO's rollouts (``grpo.trainer.use_vllm``) and
lm-eval's generation-heavy tasks (``evaluate.lm_eval.backend: vllm``).

vLLM is an optional dependency (the ``gpu`` extra: Linux with CUDA); nothing here imports it,
so the config checks and the argument building below run, and are tested, without it.  A job
that needs it and lacks it fails at once, naming the setting and the install command
(:func:`require_vllm`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from stylemerge.models import ModelReference
from stylemerge.trl_fields import trl_default

if TYPE_CHECKING:
    from stylemerge.job import JobSettings

# The gpu extra has its own environment and pins (numpy: see constraints-gpu.txt's header)
INSTALL = 'make gpu-venv, i.e. pip install -c constraints-gpu.txt -e ".[gpu]" in a new venv'
# Tokens the derived vllm_max_model_length adds to prompt + completion: a prompt is a window of
# grpo.prompt_tokens decoded to text, which trl encodes again; that may add a BOS token and
# split the window's cut ends (a partial word, half a UTF-8 character) into a few more tokens.
PROMPT_MARGIN = 16


class VLLMMissing(RuntimeError):
    """A setting asks for vLLM and it is not installed."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm(setting: str) -> None:
    """Raise :class:`VLLMMissing`, naming ``setting`` and the install command, unless vllm
    can be imported."""
    if not vllm_available():
        raise VLLMMissing(
            f"{setting} needs vLLM, which is not installed in this environment; on a Linux "
            f"machine with CUDA run in the GPU environment ({INSTALL}) or with --sdm conda, or "
            "turn the setting off to use the transformers path"
        )


# --- GRPO: the context vLLM reserves ------------------------------------------------------------


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
    :func:`stylemerge.models.check_model_dir`) safetensors weights, which "auto" takes before any
    pickle file.  ``dtype`` left to vLLM is "auto": the snapshot config's own, as the policy's.

    In ``vllm_mode: server`` the server loads what ``trl vllm-serve`` was started with (give it
    ``--revision``); the trainer side is the same snapshot."""
    base = ModelReference.of(base)
    return base.local_snapshot(job) if trainer.get("use_vllm") else base


# --- lm-eval: the harness's own vLLM model ------------------------------------------------------


def vllm_model_args(
    job: JobSettings, model_ref: ModelReference | str | Path, settings: Mapping
) -> dict:
    """The arguments of lm-eval's ``VLLM`` model (lm_eval.models.vllm_causallms) for
    ``model_ref``, with the hf path's guarantees: weights from safetensors only (unless
    ``allow_pickle_weights``), repository code only with ``trust_remote_code``, the model's
    revision for weights and tokenizer, the checkpoint's own dtype, and a context of
    ``settings["max_length"]`` tokens (vLLM reserves memory for it; None: the model's).

    Think tags: the harness's vLLM model decodes with ``skip_special_tokens=False`` and is
    given no ``think_end_token`` (which would cut the think block off), so generations keep
    ``<think>``/``</think>`` as the hf path's do."""
    model_ref = ModelReference.of(model_ref)
    args = {
        "pretrained": model_ref.ref,
        "revision": model_ref.revision,
        "tokenizer_revision": model_ref.revision,
        "trust_remote_code": job.trust_remote_code,
        # vLLM computes in its weights' dtype: bfloat16 under the job's bf16 precision, else
        # the checkpoint's own (as the hf path loads it, dtype="auto")
        "dtype": "bfloat16" if job.precision == "bf16" else "auto",
        "load_format": "auto" if job.allow_pickle_weights else "safetensors",
        "batch_size": settings["batch_size"],
        "seed": job.seed,
    }
    if settings.get("max_length") is not None:
        args["max_model_len"] = settings["max_length"]
    return args


def make_vllm_lm(job: JobSettings, model_ref: ModelReference | str | Path, settings: Mapping):
    """lm-eval's ``VLLM`` model for ``model_ref`` (:func:`vllm_model_args`); a local model
    directory is checked first as the hf path checks it (safetensors, or pickle weights only
    with ``allow_pickle_weights``)."""
    require_vllm("evaluate.lm_eval.backend: vllm")
    model_ref = ModelReference.of(model_ref)
    model_ref.check(job)
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(**vllm_model_args(job, model_ref, settings))
