"""Model references: load a model or tokenizer safely, or build a tiny one from settings.

A model reference is a hub id or a local directory in Hugging Face format; callers never
care which.  Weights load from safetensors only (pickle files only when the config sets
``allow_pickle_weights``), and repository code runs only when the config sets
``trust_remote_code``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stylemerge.core.job import JobSettings


class ModelError(ValueError):
    """A model directory is missing, corrupt or unsafe; the message names it."""


# Weight files that torch.load unpickles (safetensors files hold tensors only).
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth")
# What a local snapshot holds besides its weights: config and generation config, tokenizer
# (tokenizer.json, vocab.json, merges.txt, a sentencepiece .model, a chat template), and the
# safetensors index of sharded weights.  Repository code (*.py) only with trust_remote_code.
SNAPSHOT_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja")


@dataclasses.dataclass(frozen=True)
class ModelReference:
    """A model to load: a hub id or a local directory, and the hub revision it is pinned to.

    The two travel together so that no stage can load a hub model at another revision than
    the config names (load through :meth:`tokenizer` and :meth:`model`)."""

    ref: str
    revision: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "ref", str(self.ref))

    @classmethod
    def of(cls, model: ModelReference | str | Path) -> ModelReference:
        """``model`` as a reference (a bare hub id or path is unpinned)."""
        return model if isinstance(model, ModelReference) else cls(str(model))

    def __str__(self) -> str:
        return self.ref if self.revision is None else f"{self.ref}@{self.revision}"

    @property
    def mergekit(self) -> str:
        """As a mergekit YAML names it (``model@revision``)."""
        return str(self)

    def as_dict(self) -> dict:
        return {"ref": self.ref, "revision": self.revision}

    def tokenizer(self, job: JobSettings):
        return load_tokenizer(self.ref, job.trust_remote_code, self.revision)

    def model(self, job: JobSettings, dtype: str | None = None):
        return load_model(
            self.ref, job.trust_remote_code, self.revision, dtype, job.allow_pickle_weights
        )

    def check(self, job: JobSettings) -> None:
        check_model_dir(self.ref, job.allow_pickle_weights)

    def local_snapshot(self, job: JobSettings) -> ModelReference:
        """This model as a local directory (an unpinned reference to it): a local directory
        as it is (checked), a hub id as its snapshot in the hub cache at :attr:`revision`.

        For a consumer that takes a path and cannot be given the revision or a safetensors-only
        rule (trl's colocated vLLM, see :func:`stylemerge.grpo.vllm.grpo_policy_reference`):
        only config, tokenizer and safetensors files are fetched (pickle weights only where
        the revision has no safetensors and the config sets ``allow_pickle_weights``;
        repository code only with ``trust_remote_code``), and the directory is checked with
        :func:`check_model_dir`.  huggingface_hub does the fetching: a token from HF_TOKEN,
        nothing from the network under HF_HUB_OFFLINE=1 (then the cache must hold it).

        The snapshot folder is the hub cache's own (shared by every download of that commit),
        so it may also hold files another download put there; the check still guarantees
        safetensors weights, which loaders prefer (transformers with ``use_safetensors``,
        vLLM's ``load_format="auto"``) over any pickle file beside them."""
        if Path(self.ref).exists():
            self.check(job)
            return ModelReference(self.ref)
        from huggingface_hub import snapshot_download

        patterns = [*SNAPSHOT_FILES, "*.safetensors"]
        if job.trust_remote_code:
            patterns.append("*.py")
        label = f"{self.ref} at revision {self.revision or 'main'}"

        def fetch(allow: list[str]) -> Path:
            return Path(snapshot_download(self.ref, revision=self.revision, allow_patterns=allow))

        try:
            path = fetch(patterns)
            if job.allow_pickle_weights and not any(path.glob("*.safetensors")):
                path = fetch([*patterns, *PICKLE_PATTERNS])
        except (OSError, ValueError) as err:  # hub errors (not found, offline, gated) included
            raise ModelError(f"{label}: cannot fetch a local snapshot ({err})") from err
        check_model_dir(path, job.allow_pickle_weights, label=f"{label} (snapshot {path})")
        return ModelReference(str(path))


def pickle_files(directory: Path) -> list[str]:
    """The names of the pickle weight files in ``directory`` (:data:`PICKLE_PATTERNS`)."""
    return sorted(p.name for pattern in PICKLE_PATTERNS for p in directory.glob(pattern))


def check_model_dir(
    ref: str | Path, allow_pickle_weights: bool = False, label: str | None = None
) -> None:
    """A local model directory must hold a config and safetensors weights; pickle weights
    (``*.bin``, ``*.pt``, ``*.pth``) alone are refused unless ``allow_pickle_weights``.
    Messages name the directory, or ``label`` where given."""
    path = Path(ref)
    name = label or str(path)
    if not path.exists():
        return  # a hub id: transformers resolves it (use_safetensors decides there)
    if not path.is_dir():
        raise ModelError(f"{name}: not a model directory")
    if not (path / "config.json").is_file():
        raise ModelError(f"{name}: no config.json (not a Hugging Face model directory)")
    if any(path.glob("*.safetensors")):
        return
    pickles = pickle_files(path)
    if not pickles:
        raise ModelError(f"{name}: no safetensors weights")
    if not allow_pickle_weights:
        raise ModelError(
            f"{name}: no safetensors weights (only pickle weights: {', '.join(pickles)}); "
            "loading a pickle file can run arbitrary code. Convert the weights to safetensors, "
            "or, if you trust this directory, set allow_pickle_weights: true in the config"
        )


def load_tokenizer(ref: str | Path, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(ref), trust_remote_code=trust_remote_code, revision=revision
        )
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ModelError(f"{ref}: cannot load tokenizer ({err}){_remote_code_hint(err)}") from err


def load_model(
    ref: str | Path,
    trust_remote_code: bool = False,
    revision: str | None = None,
    dtype: str | None = None,
    allow_pickle_weights: bool = False,
):
    """Load a causal LM from safetensors; from pickle files only if ``allow_pickle_weights``
    (and then only where a directory has no safetensors weights)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    check_model_dir(ref, allow_pickle_weights)
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(ref),
            trust_remote_code=trust_remote_code,
            revision=revision,
            # True: refuse pickle files; None: prefer safetensors, fall back to them
            use_safetensors=None if allow_pickle_weights else True,
            dtype=dtype or "auto",
        )
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelError(f"{ref}: cannot load model ({err}){_remote_code_hint(err)}") from err


def _remote_code_hint(err: Exception) -> str:
    if "trust_remote_code" in str(err):
        return (
            " -- the repository's own Python code runs only if the config sets "
            "trust_remote_code: true (off by default; turn it on only for code you trust)"
        )
    return ""


def tiny_shape(tiny: Mapping) -> dict:
    """The transformers config values a tiny model's settings give (shared with the cost
    model, which sizes the same model without building it)."""
    heads = tiny["num_attention_heads"]
    return {
        "hidden_size": tiny["hidden_size"],
        "intermediate_size": tiny["intermediate_size"],
        "num_hidden_layers": tiny["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": tiny["num_key_value_heads"],
        "head_dim": tiny["hidden_size"] // heads,
        "max_position_embeddings": tiny["max_position_embeddings"],
        "tie_word_embeddings": tiny["tie_word_embeddings"],
    }


def build_tiny_model(tokenizer, tiny: Mapping):
    """A randomly initialised causal LM of the given architecture (``qwen3`` or ``llama``),
    sized by ``tiny``; call ``stylemerge.core.job.set_seed`` first for a reproducible init."""
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
        **tiny_shape(tiny),
        rope_parameters={"rope_type": "default", "rope_theta": float(tiny["rope_theta"])},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(config)
