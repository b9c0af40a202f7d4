"""Batched sampling vs one ``generate`` call per sample.

Measured: ``stylemerge.generation.sampling.sample_completions`` (what ``measure_diversity`` and
the GRPO held-out evaluation call: ``batch_size`` prompts per ``generate`` call,
``num_return_sequences`` = K, left padding) against the baseline of one ``model.generate`` call
per sample (P x K calls, one sequence each), on the same P prompts of the builtin corpus's
held-out documents, with the embedded default's tiny base architecture (randomly initialised)
and tokenizer. Sampling settings are the embedded default's ``evaluate.diversity`` (P=16, K=6,
24 prompt tokens, 48 new tokens, batch 16, temperature 1, one torch thread).

Goal: batched >= 4x faster.

    .venv/bin/python benchmarks/diversity_sampling.py [--quick] [--prompts P] [--samples K]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import best_of, builtin_shards, builtin_tokenizer, machine, tiny_model

GOAL = 4.0


def per_sample(model, tokenizer, prompts, samples, max_new_tokens, temperature, top_p, seed):
    """The baseline: one ``generate`` call, one sequence, per sample."""
    import torch

    torch.manual_seed(seed)
    out = []
    with torch.no_grad():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            group = []
            for _ in range(samples):
                generated = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                group.append(
                    tokenizer.decode(
                        generated[0, enc["input_ids"].shape[1] :], skip_special_tokens=True
                    )
                )
            out.append(group)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="P (default 16)")
    parser.add_argument("--samples", type=int, default=6, help="K (default 6)")
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (best kept)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true", help="P=8, K=4, one run each")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.samples, args.repeats = 8, 4, 1

    import torch

    from stylemerge.data.shards import shard_texts
    from stylemerge.generation.sampling import make_prompts, sample_completions

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        shards = builtin_shards(Path(tmp) / "shards")
        tokenizer = builtin_tokenizer(Path(tmp) / "tokenizer", shards)
        texts = [t for domain in sorted(shards) for t in shard_texts([shards[domain]["heldout"]])]
    model = tiny_model(tokenizer, args.seed)
    prompts = make_prompts(tokenizer, texts, args.prompt_tokens, 1, args.prompts)
    if len(prompts) < args.prompts:
        raise SystemExit(f"only {len(prompts)} prompts of {args.prompt_tokens} tokens")
    settings = (args.samples, args.max_new_tokens, 1.0, 1.0, args.seed)

    def batched():
        return sample_completions(model, tokenizer, prompts, *settings, batch_size=args.batch_size)

    def baseline():
        return per_sample(model, tokenizer, prompts, *settings)

    sample_completions(model, tokenizer, prompts[:2], 2, 4, 1.0, 1.0, 0)  # warm-up
    fast, slow = best_of(args.repeats, batched, baseline)
    for name, result in (("batched", fast.result), ("per-sample", slow.result)):
        shape = [len(g) for g in result]
        if shape != [args.samples] * len(prompts):
            raise SystemExit(f"{name}: unexpected samples per prompt {shape}")
    n = len(prompts) * args.samples
    ratio, cpu_ratio = slow.wall / fast.wall, slow.cpu / fast.cpu
    calls = -(-len(prompts) // args.batch_size)

    print(
        f"diversity sampling: P={len(prompts)} prompts x K={args.samples} samples, "
        f"{args.prompt_tokens} prompt tokens, <= {args.max_new_tokens} new tokens, "
        f"batch {args.batch_size}"
    )
    print(
        f"model: tiny {model.config.model_type}, {model.num_parameters():,} parameters, "
        f"vocab {len(tokenizer)} (random init); {machine()}; best of {args.repeats}"
    )
    print("                                  wall       cpu    wall/sample  generate calls")
    for label, t, c in (
        ("batched (sample_completions)", fast, calls),
        ("baseline (one call per sample)", slow, n),
    ):
        print(f"  {label:30} {t.wall:7.2f} s {t.cpu:7.2f} s {1000 * t.wall / n:8.1f} ms  {c:6d}")
    print(
        f"  speed-up: {ratio:.1f}x wall, {cpu_ratio:.1f}x cpu "
        f"(goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
