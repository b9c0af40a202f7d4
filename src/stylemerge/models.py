"""Model references: load a model or tokenizer safely, or build a tiny one from settings.

A model reference is a hub id or a local directory in Hugging Face format; callers never
care which.  Weights load from safetensors only, and repository code runs only when the
config sets ``trust_remote_code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class ModelError(ValueError):
    """A model directory is missing, corrupt or unsafe; the message names it."""


def check_model_dir(ref: str | Path) -> None:
    """A local model directory must hold a config and safetensors weights."""
    path = Path(ref)
    if not path.exists():
        return  # a hub id: transformers resolves it
    if not path.is_dir():
        raise ModelError(f"{path}: not a model directory")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json (not a Hugging Face model directory)")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin"))
        detail = f" (only pickle weights: {', '.join(pickles)})" if pickles else ""
        raise ModelError(f"{path}: no safetensors weights{detail}")


def load_tokenizer(ref: str | Path, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(ref), trust_remote_code=trust_remote_code, revision=revision
    )


def load_model(
    ref: str | Path,
    trust_remote_code: bool = False,
    revision: str | None = None,
    dtype: str | None = None,
):
    """Load a causal LM from safetensors (never from pickle files)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    check_model_dir(ref)
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(ref),
            trust_remote_code=trust_remote_code,
            revision=revision,
            use_safetensors=True,
            dtype=dtype or "auto",
        )
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelError(f"{ref}: cannot load model ({err})") from err


def build_tiny_model(tokenizer, tiny: Mapping):
    """A randomly initialised causal LM of the given architecture (``qwen3`` or ``llama``),
    sized by ``tiny``; call ``transformers.set_seed`` first for a reproducible init."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    heads = tiny["num_attention_heads"]
    if tiny["hidden_size"] % heads:
        raise ModelError(
            f"tiny model: hidden_size {tiny['hidden_size']} is not divisible by "
            f"num_attention_heads {heads}"
        )
    if heads % tiny["num_key_value_heads"]:
        raise ModelError(
            f"tiny model: num_attention_heads {heads} is not divisible by "
            f"num_key_value_heads {tiny['num_key_value_heads']}"
        )
    config = CONFIG_MAPPING[tiny["architecture"]](
        vocab_size=len(tokenizer),
        hidden_size=tiny["hidden_size"],
        intermediate_size=tiny["intermediate_size"],
        num_hidden_layers=tiny["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=tiny["num_key_value_heads"],
        head_dim=tiny["hidden_size"] // heads,
        max_position_embeddings=tiny["max_position_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": float(tiny["rope_theta"])},
        tie_word_embeddings=tiny["tie_word_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(config)
