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

from stylemerge.models.reference import ModelReference

if TYPE_CHECKING:
    from stylemerge.core.job import JobSettings

# The gpu extra has its own environment and pins (numpy: see constraints-gpu.txt's header)
INSTALL = 'make gpu-venv, i.e. pip install -c constraints-gpu.txt -e ".[gpu]" in a new venv'


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
