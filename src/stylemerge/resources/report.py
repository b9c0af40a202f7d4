"""The estimate as text: assumption lines, tables per component, item and stage, and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from stylemerge.resources.data import (
    CHARS_PER_TOKEN,
    CHARS_PER_WORD,
    HUB_DOCUMENT_CHARS,
    HUB_DOCUMENTS,
    think_trace_tokens,
)
from stylemerge.resources.sizes import CostError
from stylemerge.resources.stages import (
    FORWARD,
    FROZEN_TRAIN,
    RECOMPUTE,
    TRAIN,
    Estimate,
    grpo_schedule,
)
from stylemerge.workflow.config import stage_settings


def _si(value: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _hours(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def assumption_lines(e: Estimate) -> list[str]:
    a = e.assumptions
    lines = [
        f"GPU peak {a.gpu_peak_tflops:g} TFLOP/s; utilisation {a.utilisation:g} "
        f"(training, scoring, evaluation), {a.generation:g} (generation): "
        f"{a.rate('compute') / 1e12:.1f} and {a.rate('generate') / 1e12:.1f} TFLOP/s sustained",
        f"FLOPs per token: forward {FORWARD}N, full training {TRAIN}N, frozen network "
        f"(LoRA, think rows) {FROZEN_TRAIN}N, +{RECOMPUTE}N with activation checkpointing; "
        "N = parameters in matrix products; attention scores, optimiser, data loading, "
        "mergekit (CPU) and sentence embeddings not counted",
        "tokens are upper bounds: completions at max_completion_length / max_new_tokens, "
        "traces at their estimate (capped at max_length), generated tokens of lm-eval at "
        "max_gen_toks",
        f"text: {CHARS_PER_TOKEN:g} characters per token, {CHARS_PER_WORD:g} per word; hub "
        f"documents {HUB_DOCUMENT_CHARS} characters (at most shards.max_chars), "
        f"{HUB_DOCUMENTS} per source without shards.max_documents",
    ]
    for role, size in e.sizes.items():
        lines.append(
            f"model {role}: {size.ref}: {size.parameters:,} parameters "
            f"({size.compute_parameters:,} in matrix products; {size.basis})"
        )
    bases = sorted({d.basis for d in e.data.values()})
    heldout = sum(d.heldout_documents for d in e.data.values())
    lines.append(
        f"data: {len(e.data)} domains, {heldout:,} held-out documents, "
        f"{e.heldout_tokens():,} held-out tokens ({'; '.join(bases)})"
    )
    if e.config.get("domains"):
        first = next(iter(e.config["domains"]))
        g = grpo_schedule(stage_settings(e.config, "grpo", first), e.data[first].train_documents)
        lines.append(
            f"GRPO ({first}; per domain unless overridden): {g['steps']} steps x "
            f"{g['completions_per_step']} completions ({g['prompts_per_step']:g} prompts x "
            f"num_generations), {g['sequence_tokens']} tokens each (prompt + completion), "
            f"training {g['train_factor']}N, sampling-policy pass {g['old_logprobs']}, "
            f"reference pass {g['reference']}"
        )
    lines.append(f"think traces: {think_trace_tokens(e.config['think'])} tokens each")
    if e.config.get("device") == "cpu":
        lines.append("config device is cpu: figures are GPU-equivalent hours")
    lines.extend(e.notes)
    return lines


def _table(rows: Sequence[Sequence[str]], align: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        out.append("  " + "  ".join(cells).rstrip())
        if k == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def format_table(e: Estimate, source: str = "", detail: bool = False) -> str:
    total = e.total()
    lines = [f"stylemerge cost model{f': {source}' if source else ''}", "", "Assumptions"]
    lines += [f"  - {line}" for line in assumption_lines(e)]

    lines += ["", "Per stage and component (summed over items)"]
    rows = [["stage", "component", "models", "items", "tokens", "FLOPs/token", "FLOPs", "GPU-h"]]
    for c in e.components():
        rows.append(
            [
                c["stage"],
                c["component"],
                ", ".join(c["models"]),
                str(len(c["items"])),
                _si(c["tokens"]),
                f"{c['factor']}N",
                _si(c["flops"]),
                _hours(c["gpu_hours"]),
            ]
        )
    lines += _table(rows, "lllrrrrr")

    lines += ["", "Per item"]
    if detail:
        rows = [["stage", "item", "component", "model", "tokens", "FLOPs/token", "GPU-h"]]
        for r in e.rows:
            rows.append(
                [
                    r.stage,
                    r.item,
                    r.component,
                    r.model,
                    _si(r.tokens),
                    f"{r.factor}N",
                    _hours(r.gpu_hours),
                ]
            )
        lines += _table(rows, "llllrrr")
    else:
        rows = [["stage", "item", "FLOPs", "GPU-h"]]
        rows += [
            [i["stage"], i["item"], _si(i["flops"]), _hours(i["gpu_hours"])] for i in e.items()
        ]
        lines += _table(rows, "llrr")

    lines += ["", "Per stage (requested: runtime_min x jobs from the config, for comparison)"]
    rows = [["stage", "FLOPs", "GPU-h", "share", "jobs", "requested h", "requested GPU-h"]]
    for stage, s in e.stages().items():
        req = s["requested"] or {"jobs": 0, "job_hours": 0.0, "gpu_hours": 0.0}
        share = s["gpu_hours"] / total["gpu_hours"] if total["gpu_hours"] else 0.0
        rows.append(
            [
                stage,
                _si(s["flops"]),
                _hours(s["gpu_hours"]),
                f"{share:.1%}",
                str(req["jobs"]),
                _hours(req["job_hours"]),
                _hours(req["gpu_hours"]),
            ]
        )
    req = total["requested"]
    rows.append(
        [
            "total",
            _si(total["flops"]),
            _hours(total["gpu_hours"]),
            "100%",
            str(req["jobs"]),
            _hours(req["job_hours"]),
            _hours(req["gpu_hours"]),
        ]
    )
    lines += _table(rows, "lrrrrrr")
    lines += ["", memory_title(e)]
    rows = memory_table(memory_rows(e), detail)
    lines += _table(rows, "llrrl" if len(rows[0]) == 5 else "llrl")
    return "\n".join(lines) + "\n"


def memory_rows(e: Estimate) -> list[dict]:
    """Every job's memory request (stylemerge.resources.memory), or why there is none."""
    from stylemerge.resources.jobs import job_memory
    from stylemerge.resources.rules import job_items

    rows = []
    for rule, items in job_items(e.config).items():
        for item in items:
            try:
                rows.append(job_memory(e.config, rule, item).as_dict())
            except CostError as err:
                rows.append({"rule": rule, "item": item, "request_mb": None, "error": str(err)})
    return rows


def memory_title(e: Estimate) -> str:
    where = "host memory" if e.config["device"] != "cuda" else "host memory (tensors on the GPU)"
    gpu = (
        "; gpu_mb: the estimate of GPU memory per job (the largest term on the GPU beside it)"
        if e.config["device"] == "cuda"
        else ""
    )
    return (
        f"Memory per job ({where}, MiB: mem_mb where the config sets it, else the estimate of "
        f"stylemerge.resources.memory{gpu})"
    )


def _largest(row: dict) -> str:
    if row.get("error"):
        return f"unknown: {row['error']}; set the stage's mem_mb"
    if row["override_mb"] is not None:
        return f"config mem_mb (estimate {row['estimate_mb']})"
    terms = row["terms_mb"]
    if not terms:
        return f"overhead {row['overhead_mb']:g}"
    name = max(terms, key=terms.get)
    return f"{name} {terms[name]:,.0f}"


def _gpu(row: dict) -> str:
    """A job's GPU estimate and its largest GPU term, or "-" off the GPU."""
    if row.get("gpu_mb") is None:
        return "-"
    terms = row["gpu_terms_mb"]
    largest = max(terms, key=terms.get) if terms else None
    return f"{row['gpu_mb']:,}" + (f" ({largest} {terms[largest]:,.0f})" if largest else "")


def memory_table(rows: Sequence[dict], detail: bool = False) -> list[list[str]]:
    """One row per job with ``detail``, else per rule (the largest request of its jobs); a
    ``gpu_mb`` column when any job runs on a GPU (the largest of the rule's jobs)."""
    gpu = any(row.get("gpu_mb") is not None for row in rows)
    head = ["rule", "job" if detail else "jobs", "mem_mb", "largest term"]
    out = [[*head[:3], "gpu_mb (largest GPU term)", head[3]] if gpu else head]
    by_rule: dict[str, list[dict]] = {}
    for row in rows:
        by_rule.setdefault(row["rule"], []).append(row)
    for rule, jobs in by_rule.items():
        if detail:
            shown = [(row["item"], row) for row in jobs]
        else:
            top = max(jobs, key=lambda r: -1 if r["request_mb"] is None else r["request_mb"])
            shown = [(str(len(jobs)), top)]
        for label, row in shown:
            mb = "?" if row["request_mb"] is None else f"{row['request_mb']:,}"
            if not gpu:
                out.append([rule, label, mb, _largest(row)])
                continue
            on_gpu = [r for r in (jobs if not detail else [row]) if r.get("gpu_mb") is not None]
            top_gpu = max(on_gpu, key=lambda r: r["gpu_mb"]) if on_gpu else row
            out.append([rule, label, mb, _gpu(top_gpu), _largest(row)])
    return out


def to_json(e: Estimate, source: str = "") -> dict:
    a = e.assumptions
    return {
        "config": source,
        "assumptions": {
            "gpu_peak_tflops": a.gpu_peak_tflops,
            "utilisation": a.utilisation,
            "generation_utilisation": a.generation,
            "flops_per_token": {
                "forward": FORWARD,
                "train": TRAIN,
                "frozen_train": FROZEN_TRAIN,
                "recompute": RECOMPUTE,
            },
            "chars_per_token": CHARS_PER_TOKEN,
            "lines": assumption_lines(e),
        },
        "models": {role: asdict(size) for role, size in e.sizes.items()},
        "domains": {
            d: {**asdict(v), "train_tokens": v.train_tokens, "heldout_tokens": v.heldout_tokens}
            for d, v in e.data.items()
        },
        "rows": [asdict(r) for r in e.rows],
        "items": e.items(),
        "stages": e.stages(),
        "total": e.total(),
        "memory": memory_rows(e),
    }
