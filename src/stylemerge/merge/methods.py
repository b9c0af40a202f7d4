"""Merge methods registered with mergekit, both on mergekit's own Karcher kernel.

(No ``from __future__ import annotations`` here: mergekit reads these signatures' type
hints at definition time.)

- ``karcher_weighted``: per-model weights.  mergekit's ``karcher`` uses equal weights and
  silently ignores ``weight``; its kernel also rescales by the *raw* weights' sum of norms,
  so the weights are normalised to sum 1 first (unnormalised weights inflate the result).
- ``karcher_deltas``: the weighted Karcher mean of the task vectors ``model - base``, added
  back to the base (``space: deltas``).

Both compute in float32 (float64 if given it) whatever the inputs' dtype, and return the
inputs' dtype: stylemerge's configs ask mergekit for float32 already (``dtype``, with
``out_dtype`` for the saved weights), this keeps a YAML written by hand precise too.
"""

import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import (
    BasePolicy,
    InputContract,
    PerInput,
    PerNonBase,
    TensorGroup,
)
from mergekit.merge_methods.easy_define import merge_method
from mergekit.merge_methods.karcher import karcher_merge_tensors


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def normalised(weights) -> list:
    values = [float(w) for w in weights]
    total = sum(values)
    if not total > 0:
        raise ValueError(f"merge weights must sum to more than 0, got {values}")
    return [w / total for w in values]


@merge_method(name="karcher_weighted", pretty_name="Weighted Karcher Mean")
def karcher_weighted(
    group: TensorGroup, weight: PerInput[float], max_iter: int = 10, tol: float = 1e-5
) -> torch.Tensor:
    entries = group.entries
    if len(entries) == 1:
        return entries[0].tensor
    alphas = normalised(weight.values_for(entries))
    dtype = compute_dtype(entries[0].tensor)
    tensors = [e.tensor.to(dtype) for e in entries]
    return karcher_merge_tensors(tensors, alphas, max_iter, tol).to(entries[0].tensor.dtype)


@merge_method(
    name="karcher_deltas",
    pretty_name="Karcher Mean of Task Vectors",
    contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=1),
)
def karcher_deltas(
    group: TensorGroup, weight: PerNonBase[float], max_iter: int = 10, tol: float = 1e-5
) -> torch.Tensor:
    base = [e for e in group.entries if e.is_base]
    others = [e for e in group.entries if not e.is_base]
    base_tensor = base[0].tensor
    dtype = compute_dtype(base_tensor)
    deltas = [e.tensor.to(dtype) - base_tensor.to(dtype) for e in others]
    mean = karcher_merge_tensors(deltas, normalised(weight.values_for(others)), max_iter, tol)
    return (base_tensor.to(dtype) + mean).to(base_tensor.dtype)


def register() -> None:
    """Make both methods available to mergekit by name (idempotent)."""
    known = {m.spec.name for m in registry.registered_methods()}
    for method in (karcher_weighted, karcher_deltas):
        if method.spec.name not in known:
            registry.register(method)
