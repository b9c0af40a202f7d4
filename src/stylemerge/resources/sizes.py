"""Model sizes: architectures whose parameters can be counted, the known hub models
(``known_models.yaml``), and the size of each model a config names."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import yaml


class CostError(ValueError):
    """Something the cost model cannot estimate; the message says what to give it."""


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


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
    max_position_embeddings: int | None = None
    dtype: str | None = None  # of the stored weights (what ``dtype="auto"`` loads)

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
        dtype = config.get("dtype") or config.get("torch_dtype")
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
            max_position_embeddings=config.get("max_position_embeddings"),
            dtype=dtype if dtype in DTYPE_BYTES else None,
        )


@functools.cache
def known_models() -> dict[str, Architecture]:
    """Hub models whose architecture is known here (``known_models.yaml``), by hub id or
    GGUF file name."""
    table = yaml.safe_load(resources.files(__package__).joinpath("known_models.yaml").read_text())
    shapes = {name: Architecture(**spec) for name, spec in table["architectures"].items()}
    return {ref: shapes[shape] for ref, shape in table["models"].items()}


@dataclass(frozen=True)
class ModelSize:
    ref: str
    parameters: int
    compute_parameters: int
    basis: str
    architecture: Architecture | None = None  # None when only the count was given


def tiny_architecture(model: Mapping) -> Architecture:
    """The tiny model ``models.<name>`` builds (stylemerge.models.reference.build_tiny_model)."""
    from stylemerge.models.reference import tiny_shape

    tiny, tokenizer = model["tiny"], model["tokenizer"]
    return Architecture(
        vocab_size=tokenizer["vocab_size"] + (2 if tokenizer.get("think_tokens") else 0),
        **tiny_shape(tiny),
        qk_norm=tiny["architecture"] == "qwen3",
        dtype="float32",
    )


def tiny_size(name: str, model: Mapping) -> ModelSize:
    arch = tiny_architecture(model)
    return ModelSize(
        f"results/models/{name}",
        arch.parameters(),
        arch.compute_parameters(),
        f"tiny {model['tiny']['architecture']} built here (models.{name}.tiny, "
        f"vocab {arch.vocab_size})",
        arch,
    )


def model_size(ref: str | None, overrides: Mapping[str, float], name: str = "") -> ModelSize:
    """Parameters of a hub id or a local model directory: ``overrides`` (by ref or by role
    name, e.g. ``base``) first, then a local ``config.json``, then :func:`known_models`."""
    for key in (ref, name):
        if key and key in overrides:
            n = int(overrides[key])
            return ModelSize(str(ref), n, n, "given (--params)")
    path = Path(str(ref)) / "config.json"
    if ref and path.is_file():
        arch = Architecture.from_hf_config(json.loads(path.read_text(encoding="utf-8")))
        return ModelSize(str(ref), arch.parameters(), arch.compute_parameters(), str(path), arch)
    known = known_models()
    if ref in known:
        arch = known[ref]
        return ModelSize(
            ref, arch.parameters(), arch.compute_parameters(), "known architecture", arch
        )
    raise CostError(
        f"model {ref!r}{f' ({name})' if name else ''}: parameter count unknown; give it with "
        f"--params {ref}=COUNT (e.g. 4.02e9)"
    )


def config_model_size(name: str, model: Mapping, overrides: Mapping[str, float]) -> ModelSize:
    """The size of ``models.<name>``: a GGUF model by its file's name (converted in
    ``gguf.dtype``), a tiny model from its settings, else by its reference."""
    if model["gguf"] is not None:
        size = model_size(Path(model["gguf"]["path"]).name, overrides, name)
        if size.architecture is None:
            return size
        return replace(size, architecture=replace(size.architecture, dtype=model["gguf"]["dtype"]))
    if model["ref"] is None and name not in overrides:
        return tiny_size(name, model)
    return model_size(model["ref"], overrides, name)
