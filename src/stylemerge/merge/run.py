"""Merges of the domain models with mergekit, and the entropy check around them.

mergekit is the engine: a merge is a mergekit YAML config, written next to the merged model,
from which ``mergekit-yaml`` (for mergekit's own methods) or ``stylemerge-mergekit-yaml``
(the same command with :mod:`stylemerge.merge.methods` registered) reproduces it.
With models this close to their common base, a Karcher mean of full weights is almost a
linear average; ``space: deltas`` (Karcher mean of the task vectors) is where the geometry
matters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

if TYPE_CHECKING:
    from stylemerge.core.job import JobSettings
    from stylemerge.models.reference import ModelReference

log = logging.getLogger(__name__)

CONFIG_NAME = "mergekit_config.yml"
METHODS = ("karcher", "karcher_weighted", "linear", "ties")
SPACES = ("weights", "deltas")
# Merges compute in float32, and domain models are saved in float32, whatever merge.dtype:
# the task vectors (~1e-4) are as small as bfloat16's rounding step at the weights' size.
COMPUTE_DTYPE = "float32"
DOMAIN_MODEL_DTYPE = "float32"


def register_methods() -> None:
    """Register ``karcher_weighted`` and ``karcher_deltas`` with mergekit (once)."""
    from stylemerge.merge import methods as mergekit_methods

    mergekit_methods.register()


def mergekit_config(
    method: str,
    space: str,
    models: Mapping[str, str],
    base: str,
    weights: Mapping[str, float],
    parameters: Mapping | None = None,
    dtype: str = "float32",
) -> dict:
    """The mergekit YAML config (as a dict) for one merge of ``models`` (name -> path),
    saved in ``dtype``.

    mergekit computes in its config's ``dtype`` and writes ``out_dtype``; the computation is
    always float32 (:data:`COMPUTE_DTYPE`). In bfloat16 the Karcher iteration loses the merge:
    the inputs are nearly parallel, their unit vectors' dot products round to 1 and the
    update vanishes, and each unit vector's rounding is as large as the task vectors.

    The base model is named as ``base_model`` only where the method treats it as the base
    (``ties``, and Karcher in ``deltas`` space); mergekit's ``karcher`` would otherwise
    average it in as one more input.
    """
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r} (known: {', '.join(METHODS)})")
    if space not in SPACES:
        raise ValueError(f"unknown merge space {space!r} (known: {', '.join(SPACES)})")
    names = list(models)
    uses_weights = method in ("karcher_weighted", "linear", "ties")
    if space == "deltas" and method in ("karcher", "karcher_weighted"):
        merge_method, with_base = "karcher_deltas", True
        if method == "karcher":  # equal weights, as mergekit's karcher
            weights = dict.fromkeys(names, 1.0)
        uses_weights = True
    elif space == "deltas" and method == "linear":
        raise ValueError("linear in deltas space equals linear in weights space: use weights")
    else:
        merge_method, with_base = method, method == "ties"
        if method == "ties" and space != "deltas":
            raise ValueError("ties merges task vectors: use space 'deltas'")
    entries = []
    for name in names:
        entry: dict = {"model": str(models[name])}
        if uses_weights:
            entry["parameters"] = {"weight": float(weights.get(name, 1.0))}
        entries.append(entry)
    config: dict = {
        "merge_method": merge_method,
        "models": entries,
        "dtype": COMPUTE_DTYPE,
        "out_dtype": dtype,
    }
    if with_base:
        config["base_model"] = str(base)
    if parameters:
        config["parameters"] = dict(parameters)
    return config


def run_mergekit(
    config: Mapping, out_dir: str | Path, threads: int = 1, trust_remote_code: bool = False
) -> None:
    """Run mergekit on ``config`` into ``out_dir`` and keep the YAML there."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from stylemerge.core.job import use_threads

    register_methods()
    use_threads(threads)  # run_merge ignores MergeOptions.num_threads
    source = yaml.safe_dump(dict(config), sort_keys=False)
    options = MergeOptions(
        copy_tokenizer=True,
        trust_remote_code=trust_remote_code,
        safe_serialization=True,
        quiet=True,
        write_model_card=False,
        lazy_unpickle=False,
    )
    run_merge(
        MergeConfiguration.model_validate(yaml.safe_load(source)),
        str(out_dir),
        options=options,
        config_source=source,
    )
    (Path(out_dir) / CONFIG_NAME).write_text(source)


def mergekit_yaml() -> None:
    """``stylemerge-mergekit-yaml CONFIG OUT``: mergekit's CLI with our methods registered."""
    from mergekit.scripts.run_yaml import main

    register_methods()
    main()


# --- entropy -------------------------------------------------------------------------------


@torch.no_grad()
def entropy_and_loss(
    model, blocks: torch.Tensor, batch_size: int = 8, autocast=contextlib.nullcontext
) -> dict[str, float]:
    """Mean next-token entropy (nats) of the model's predictions and mean held-out loss, the
    forward passes under ``autocast`` (the job's precision; never mergekit's arithmetic)."""
    model.eval()
    device = next(model.parameters()).device
    entropy = loss = 0.0
    count = 0
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start : start + batch_size].to(device)
        with autocast():
            logits = model(input_ids=ids).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        entropy += -(logp.exp() * logp).sum(-1).sum().item()
        loss += -logp.gather(-1, ids[:, 1:, None]).sum().item()
        count += logits.shape[0] * logits.shape[1]
    return {"entropy": entropy / count, "loss": loss / count}


def logit_scale_parameter(model) -> torch.nn.Parameter:
    """The final norm's weight: in these models logits = norm(h) @ W_out, so scaling it by s
    scales every logit by s (an inverse temperature) and leaves the rest untouched."""
    norm = getattr(getattr(model, "model", None), "norm", None)
    if norm is None or not hasattr(norm, "weight"):
        raise ValueError(f"{type(model).__name__}: no final norm weight to calibrate entropy")
    return norm.weight


def calibrate_entropy(
    model,
    blocks: torch.Tensor,
    target: float,
    measure=entropy_and_loss,
    iterations: int = 20,
    low: float = 0.25,
    high: float = 4.0,
) -> float:
    """Scale the logits (final norm weight) so mean entropy on ``blocks`` (as ``measure``
    gives it) matches ``target``; entropy falls as the scale grows, so bisect on the log
    scale."""
    weight = logit_scale_parameter(model)
    original = weight.detach().clone()

    def entropy_at(scale: float) -> float:
        with torch.no_grad():
            weight.copy_(original * scale)
        return measure(model, blocks)["entropy"]

    lo, hi = math.log(low), math.log(high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if entropy_at(math.exp(mid)) > target:
            lo = mid
        else:
            hi = mid
    scale = math.exp((lo + hi) / 2)
    entropy_at(scale)
    return scale


def merge_models(
    job: JobSettings,
    variant: Mapping,
    domain_models: Mapping[str, str | Path],
    base: ModelReference | str | Path,
    weights: Mapping[str, float],
    heldout_shards: Sequence[str | Path],
    out_dir: str | Path,
    settings: Mapping,
) -> dict:
    """Merge the domain models with mergekit as ``variant`` says (the config's
    ``merge.variants.<name>``: ``method``, ``space``, ``parameters``); measure (and optionally
    calibrate) entropy."""
    from stylemerge.core.files import atomic_path, read_json, write_json
    from stylemerge.models.reference import ModelReference

    job = job.apply()
    device, base = job.device, ModelReference.of(base)
    method, space = variant["method"], variant["space"]
    config = mergekit_config(
        method,
        space,
        {k: str(v) for k, v in domain_models.items()},
        base.mergekit,  # mergekit loads the base at the pinned revision too
        weights,
        variant.get("parameters"),
        settings["dtype"],
    )
    models = [ModelReference.of(path) for path in domain_models.values()]
    for model in (*models, base):  # mergekit reads them too: same rules
        model.check(job)
    tokenizer = base.tokenizer(job)
    blocks = heldout_blocks(tokenizer, heldout_shards, settings)

    def load(model):
        return ModelReference.of(model).model(job)

    measure = functools.partial(entropy_and_loss, autocast=job.autocast())

    inputs = {}
    for name, path in domain_models.items():
        metrics_file = Path(path) / "metrics.json"
        recorded = read_json(metrics_file) if metrics_file.exists() else {}
        same_blocks = (recorded.get("blocks"), recorded.get("seq_len")) == (
            len(blocks),
            settings["entropy_seq_len"],
        )
        inputs[name] = (
            recorded["heldout"] if same_blocks else measure(load(path).to(device), blocks)
        )
    base_measure = measure(load(base).to(device), blocks)
    target = sum(v["entropy"] for v in inputs.values()) / len(inputs)

    with atomic_path(out_dir) as tmp:
        run_mergekit(config, tmp, threads=job.threads, trust_remote_code=job.trust_remote_code)
        merged = load(tmp).to(device)
        measured = measure(merged, blocks)
        metrics = {
            "method": method,
            "space": space,
            "mergekit_method": config["merge_method"],
            "weights": {k: float(weights.get(k, 1.0)) for k in domain_models},
            "entropy": {
                "inputs": inputs,
                "inputs_mean": target,
                "base": base_measure,
                "merged": measured,
                "blocks": len(blocks),
            },
            "calibration": None,
            "provenance": dict(job.provenance),
        }
        if settings["calibrate_entropy"]:
            scale = calibrate_entropy(merged, blocks, target, measure)
            after = measure(merged, blocks)
            metrics["calibration"] = {"logit_scale": scale, "before": measured, "after": after}
            merged.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    log.info("%s/%s: entropy inputs %.3f, merged %.3f", method, space, target, measured["entropy"])
    return metrics


def apply_adapter(
    job: JobSettings,
    base: ModelReference | str | Path,
    adapter: str | Path,
    heldout_shards: Sequence[str | Path],
    out_dir: str | Path,
    settings: Mapping,
) -> dict:
    """The domain model: the adapter merged into the base (peft ``merge_and_unload``), saved
    as safetensors with its held-out entropy and loss (the merge's inputs).  An adapter
    trained on another base is refused (:func:`check_adapter_base`).

    Merged and saved in float32 (:data:`DOMAIN_MODEL_DTYPE`) whatever ``merge.dtype``: domain
    models are only the merges' inputs, and in bfloat16 the rounding of a weight near 0.02
    (~1e-4) is as large as the adapter's change to it."""
    from peft import PeftModel

    from stylemerge.core.files import atomic_path, write_json
    from stylemerge.models.reference import ModelError, ModelReference

    job = job.apply()
    base = ModelReference.of(base)
    recorded = check_adapter_base(adapter, base.ref)
    tokenizer = base.tokenizer(job)
    model = base.model(job, dtype=DOMAIN_MODEL_DTYPE)
    try:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (RuntimeError, ValueError) as err:  # size mismatch, target modules not found
        detail = str(err).strip().splitlines()
        raise ModelError(
            f"{adapter}: the adapter does not fit base {base.ref!r} (it was trained on "
            f"{recorded!r}): {' '.join(line.strip() for line in detail[:3])}"
        ) from err
    blocks = heldout_blocks(tokenizer, heldout_shards, settings)
    metrics = {
        "adapter": str(adapter),
        "heldout": entropy_and_loss(model.to(job.device), blocks, autocast=job.autocast()),
        "blocks": len(blocks),
        "seq_len": settings["entropy_seq_len"],
        "dtype": DOMAIN_MODEL_DTYPE,
        "provenance": dict(job.provenance),
    }
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def same_model_ref(a: str | Path, b: str | Path) -> bool:
    """Whether two model references name the same model: equal hub ids, or the same local
    directory however it is written."""
    if str(a) == str(b):
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_adapter_base(adapter: str | Path, base: str | Path) -> str | None:
    """The base model ``adapter`` records (peft's ``base_model_name_or_path``); an error
    naming both unless it is ``base``."""
    from stylemerge.core.files import read_json
    from stylemerge.models.reference import ModelError

    config_file = Path(adapter) / "adapter_config.json"
    if not config_file.is_file():
        raise ModelError(f"{adapter}: no adapter_config.json (not a peft adapter directory)")
    recorded = read_json(config_file).get("base_model_name_or_path")
    if recorded and not same_model_ref(recorded, base):
        raise ModelError(
            f"{adapter}: the adapter was trained on base {recorded!r}, not on {str(base)!r}; "
            "apply it to the base it was trained on, or train it again on this one"
        )
    return recorded


def heldout_blocks(tokenizer, heldout_shards: Sequence[str | Path], settings: Mapping):
    """The held-out text of all domains, as the blocks every entropy is measured on."""
    from stylemerge.core.training import pack
    from stylemerge.data.shards import shard_texts

    blocks = pack(tokenizer, shard_texts(heldout_shards), settings["entropy_seq_len"])
    return blocks[: settings["entropy_blocks"]]


if __name__ == "__main__":  # python -m stylemerge.merge.run CONFIG OUT [mergekit options]
    mergekit_yaml()
