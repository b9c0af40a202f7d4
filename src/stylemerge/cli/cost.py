"""``stylemerge-cost``: the command line of the cost model."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from stylemerge.resources.report import format_table, to_json
from stylemerge.resources.sizes import CostError
from stylemerge.resources.stages import (
    DEFAULT_PEAK_TFLOPS,
    DEFAULT_UTILISATION,
    Assumptions,
    estimate,
)
from stylemerge.workflow.config import ConfigError, validate_config


def default_schema() -> Path:
    """The workflow's schema: beside the package in a checkout (editable install), else in
    the working directory."""
    relative = Path("workflow") / "schemas" / "config.schema.yaml"
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / relative).is_file():
            return root / relative
    raise CostError(f"no {relative} found: give --schema")


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """``4.02e9``, ``4022468096``, ``360M``, ``4B`` -> a positive number."""
    text = text.strip().replace("_", "").replace(",", "")
    scale = _SUFFIXES.get(text[-1:].lower(), 1.0)
    number = float(text[:-1] if scale != 1.0 else text)
    if not number * scale > 0:
        raise ValueError(f"not positive: {text}")
    return number * scale


def parse_params(values: Sequence[str]) -> dict[str, float]:
    """``["REF=COUNT", ...]`` (``--params``) -> ``{REF: COUNT}``."""
    out = {}
    for value in values:
        ref, _, count = value.rpartition("=")
        try:
            if not ref:
                raise ValueError("no REF")
            out[ref] = parse_count(count)
        except ValueError:
            raise CostError(
                f"--params {value!r}: expected REF=COUNT with COUNT > 0 (e.g. "
                "Qwen/Qwen3-4B-Base=4.02e9, base=4B)"
            ) from None
    return out


def load_config(path: str | Path, schema: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return validate_config(raw, schema)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stylemerge-cost",
        description="Estimated GPU-hours per workflow stage for a config (FLOP-based).",
    )
    parser.add_argument(
        "config",
        nargs="?",
        default="config/paper.yaml",
        help="config YAML (default: config/paper.yaml)",
    )
    parser.add_argument("--schema", help="config schema (default: the workflow's)")
    parser.add_argument(
        "--gpu-peak-tflops",
        type=float,
        default=DEFAULT_PEAK_TFLOPS,
        help=f"peak FLOP/s of one GPU in TFLOP/s (default {DEFAULT_PEAK_TFLOPS:g}"
        ": H100 SXM, dense BF16)",
    )
    parser.add_argument(
        "--utilisation",
        type=float,
        default=DEFAULT_UTILISATION,
        help=f"fraction of peak sustained (default {DEFAULT_UTILISATION:g})",
    )
    parser.add_argument(
        "--generation-utilisation",
        type=float,
        default=None,
        help="fraction of peak during generation (default: --utilisation; "
        "decoding is memory-bound, often 0.05-0.2)",
    )
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="REF=COUNT",
        help="parameter count of a model by hub id, path or role (base, general_proxy); repeatable",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--detail", action="store_true", help="table: one row per pass")
    args = parser.parse_args(argv)
    try:
        schema = args.schema or default_schema()
        config = load_config(args.config, schema)
        e = estimate(
            config,
            Assumptions(args.gpu_peak_tflops, args.utilisation, args.generation_utilisation),
            parse_params(args.params),
        )
    except (CostError, ConfigError, OSError) as err:
        print(f"stylemerge-cost: {err}", file=sys.stderr)
        return 2
    if args.format == "json":
        json.dump(to_json(e, str(args.config)), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(e, str(args.config), args.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
