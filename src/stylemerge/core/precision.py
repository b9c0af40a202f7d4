"""The precision of a job's matrix products: ``fp32``, or ``bf16`` under ``torch.autocast``.

Config ``precision`` (top level, or per stage) is ``auto``, ``bf16`` or ``fp32``.  It is
resolved once per job (:func:`resolve_precision`, from
:meth:`stylemerge.core.job.JobSettings.apply`)
against what the device can do (:func:`bf16_capability`):

- ``auto`` takes bfloat16 only where its matrix products are faster than float32: a CUDA
  device that supports it, or a CPU with AMX-BF16.  A CPU with AVX512-BF16 alone computes
  bfloat16 but, measured here (torch 2.13, oneDNN's ``avx512_core_bf16`` kernels, one thread),
  at about half float32's rate (81 against 154 GFLOP/s on 1536x576x1536), so ``auto`` stays
  float32 there.
- ``bf16`` is honoured wherever bfloat16 works, with one log line where it is known to be
  slower; where it does not work at all it falls back to float32 with one warning.

Under bfloat16 only activations and matrix products change: every weight stays float32, and
so do trainable weights (LoRA, the think rows), their gradients and optimiser state.  The
choice is recorded in every result's provenance (``provenance.precision``).

``STYLEMERGE_CPU_BF16`` (``none``, ``avx512`` or ``amx``) overrides what is read from the
CPU: for tests of the fallback, and for virtual machines that hide their CPU's flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# what a job's forward passes run under: a context factory (torch.autocast, or nothing)
Autocast = Callable[[], contextlib.AbstractContextManager]

PRECISIONS = ("auto", "bf16", "fp32")
CPU_OVERRIDE = "STYLEMERGE_CPU_BF16"
CPU_LEVELS = ("none", "avx512", "amx")


@dataclasses.dataclass(frozen=True)
class Capability:
    """What a device can do in bfloat16: compute it at all (``supported``), faster than
    float32 (``fast``), and why (``reason``, for the log and the provenance)."""

    supported: bool
    fast: bool
    reason: str


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_level() -> str:
    """``amx`` (AMX-BF16 tiles), ``avx512`` (AVX512-BF16 only) or ``none``: read from the
    CPU's flags and torch's oneDNN, unless ``STYLEMERGE_CPU_BF16`` says otherwise."""
    forced = os.environ.get(CPU_OVERRIDE)
    if forced:
        if forced not in CPU_LEVELS:
            raise ValueError(f"{CPU_OVERRIDE}={forced!r}: expected one of {list(CPU_LEVELS)}")
        return forced
    import torch

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "none"
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    return "avx512" if "avx512_bf16" in flags else "none"


def bf16_capability(device: str) -> Capability:
    """Whether ``device`` (``cpu`` or ``cuda``, already resolved) computes bfloat16, and
    whether faster than float32."""
    if device.startswith("cuda"):
        import torch

        ok = torch.cuda.is_bf16_supported()
        return Capability(ok, ok, "CUDA bf16" if ok else "this GPU has no bf16 support")
    level = cpu_bf16_level()
    if level == "amx":
        return Capability(True, True, "CPU with AMX-BF16")
    if level == "avx512":
        return Capability(
            True, False, "CPU with AVX512-BF16 but no AMX: bfloat16 matmuls slower than float32"
        )
    return Capability(False, False, "CPU without bfloat16 support (no AVX512-BF16 or AMX-BF16)")


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """``(precision, reason)``: ``bf16`` or ``fp32`` for ``requested`` on ``device``; logs
    one line where the result is not what was asked for, or is known to be slow."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {list(PRECISIONS)}")
    if requested == "fp32":
        return "fp32", "requested"
    capability = bf16_capability(device)
    if requested == "auto":
        chosen = "bf16" if capability.fast else "fp32"
        log.info("precision auto: %s (%s)", chosen, capability.reason)
        return chosen, f"auto: {capability.reason}"
    if not capability.supported:
        log.warning("precision bf16 requested: falling back to fp32 (%s)", capability.reason)
        return "fp32", f"fallback: {capability.reason}"
    if not capability.fast:
        log.info("precision bf16 as requested, though %s", capability.reason)
    return "bf16", f"requested: {capability.reason}"


def autocast(precision: str, device: str) -> Autocast:
    """A context factory: ``torch.autocast`` to bfloat16 on ``device``'s type for ``bf16``,
    else nothing (float32 as the weights are)."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision != "bf16":
        raise ValueError(f"precision {precision!r} is not resolved: expected bf16 or fp32")
    import torch

    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16)


def stage_precision(config: Mapping, settings: Mapping) -> str:
    """A stage's requested precision: its section's ``precision`` (``settings``) where set,
    else the config's top-level one (what common.smk hands each job)."""
    return settings.get("precision") or config["precision"]


def planned_precision(config: Mapping, settings: Mapping) -> str:
    """``bf16`` or ``fp32`` as planned before any job runs (the cost model's memory): ``auto``
    counts as bf16 on a GPU config and as fp32 on a CPU one, whose machine may lack AMX."""
    requested = stage_precision(config, settings)
    if requested == "auto":
        return "bf16" if config["device"] in ("cuda", "auto") else "fp32"
    return requested
