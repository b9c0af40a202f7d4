"""``karcher_weighted`` (stylemerge's mergekit method) vs mergekit's own ``karcher``.

Both merge the same N tiny models (one architecture, different random weights) with equal
weights through ``stylemerge.merge.run.mergekit_config`` and ``run_mergekit`` (mergekit's
``run_merge``, one torch thread). With equal weights the two methods must give the same
tensors: ``karcher_weighted`` normalises the weights to 1/N, which are the alphas ``karcher``
uses, and both call mergekit's ``karcher_merge_tensors``. The script checks every tensor
(bit-identical, else the max abs difference against the tolerance) and times both.

Goal: time(karcher_weighted) / time(karcher) <= 1.1.

    .venv/bin/python benchmarks/karcher_merge.py [--quick] [--models N] [--hidden H]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import BASE_SHAPE, best_of, builtin_shards, builtin_tokenizer, machine, tiny_model

GOAL = 1.1
TOLERANCE = 1e-6  # absolute, float32 weights of magnitude ~0.02-1


def load_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    if not tensors:
        raise SystemExit(f"{directory}: no safetensors written")
    return tensors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=9, help="models merged (default 9)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    parser.add_argument("--layers", type=int, default=4, help="layers (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (best kept)")
    parser.add_argument("--quick", action="store_true", help="3 models, one run each")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.repeats = 3, 1
    if args.models < 2:
        parser.error("--models must be at least 2")

    import torch

    from stylemerge.merge.run import mergekit_config, run_mergekit

    torch.set_num_threads(args.threads)
    shape = {
        **BASE_SHAPE,
        "hidden_size": args.hidden,
        "intermediate_size": 3 * args.hidden,
        "num_hidden_layers": args.layers,
    }
    with tempfile.TemporaryDirectory(prefix="bench-karcher-") as tmp:
        root = Path(tmp)
        shards = builtin_shards(root / "shards", ["bbc_news", "github_python"])
        tokenizer = builtin_tokenizer(root / "tokenizer", shards, vocab_size=1024)
        models = {}
        for i in range(args.models):
            model = tiny_model(tokenizer, seed=100 + i, shape=shape)
            models[f"m{i}"] = root / f"m{i}"
            model.save_pretrained(models[f"m{i}"])
            tokenizer.save_pretrained(models[f"m{i}"])
        params = model.num_parameters()
        paths = {k: str(v) for k, v in models.items()}
        equal = dict.fromkeys(paths, 1.0)
        configs = {
            method: mergekit_config(method, "weights", paths, paths["m0"], equal)
            for method in ("karcher", "karcher_weighted")
        }
        runs = {"karcher": 0, "karcher_weighted": 0}

        def merge(method):
            def run():
                runs[method] += 1
                out = root / f"{method}_{runs[method]}"
                run_mergekit(configs[method], out, threads=args.threads)
                return out

            return run

        run_mergekit(configs["karcher"], root / "warm-up", threads=args.threads)
        builtin, ours = best_of(args.repeats, merge("karcher"), merge("karcher_weighted"))
        a, b = load_tensors(builtin.result), load_tensors(ours.result)
        if set(a) != set(b):
            raise SystemExit(f"different tensors: {sorted(set(a) ^ set(b))}")
        identical = sum(torch.equal(a[k], b[k]) for k in a)
        max_diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        elements = sum(t.numel() for t in a.values())

    ratio, cpu_ratio = ours.wall / builtin.wall, ours.cpu / builtin.cpu
    print(
        f"Karcher merge: {args.models} tiny qwen3 models of {params:,} parameters "
        f"(hidden {args.hidden}, {args.layers} layers, float32), equal weights, "
        f"mergekit run_merge via stylemerge.merge.run.run_mergekit"
    )
    print(f"{machine()}; best of {args.repeats}")
    print(f"  mergekit karcher            {builtin.wall:7.2f} s wall {builtin.cpu:7.2f} s cpu")
    print(f"  stylemerge karcher_weighted {ours.wall:7.2f} s wall {ours.cpu:7.2f} s cpu")
    print(
        f"  outputs: {identical}/{len(a)} tensors bit-identical ({elements:,} elements), "
        f"max abs diff {max_diff:.3g} (tolerance {TOLERANCE:g})"
    )
    print(
        f"  time ratio karcher_weighted / karcher: {ratio:.3f} wall, {cpu_ratio:.3f} cpu "
        f"(goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'NOT met'})"
    )
    if max_diff > TOLERANCE:
        print("  FAILED: outputs differ beyond the tolerance")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
