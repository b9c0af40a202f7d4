"""ProxyScorer.mean_logprobs (logits from the earliest scored token on, the softmax at scored
positions only) against the whole-tensor computation it replaced (every position's logits,
the softmax over all of them), on the smol tier's model: same values, time ratio.

64 held-out (24-token prompt, 32-token continuation) pairs of bbc_news and ao3_english,
batches of 16 (smol.yaml's scorer_batch_size), one thread, best of 3, interleaved.

    .venv/bin/python benchmarks/proxy_scoring.py --model results/smol/models/base
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import builtin_shards, machine  # noqa: E402
from precision import DOMAINS, smol_model, windows  # noqa: E402

from stylemerge.grpo.rewards import ProxyScorer  # noqa: E402


class WholeTensorScorer(ProxyScorer):
    """The baseline: every position's logits and log-softmax, then the scored ones summed."""

    @torch.no_grad()
    def mean_logprobs(self, prompts, completions):
        scores = []
        for _, input_ids, mask, target in self._batches(prompts, completions):
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            token_logp = logp.gather(-1, input_ids[:, 1:, None])[..., 0]
            target = target[:, 1:]
            total, count = (token_logp * target).sum(-1), target.sum(-1)
            scores += [t / n for t, n in zip(total.tolist(), count.tolist(), strict=True)]
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a converted SmolLM2 directory")
    args = parser.parse_args()

    from stylemerge.core.job import use_threads
    from stylemerge.models.reference import load_model, load_tokenizer

    use_threads(1)
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    model_dir = args.model or smol_model(work)
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    prompts, continuations = windows(tokenizer, builtin_shards(work / "shards", DOMAINS), 32, 32)
    times: dict[str, list[float]] = {"whole tensor": [], "scored rows": []}
    values = {}
    for _ in range(3):
        for name, cls in (("whole tensor", WholeTensorScorer), ("scored rows", ProxyScorer)):
            scorer = cls(model, tokenizer, batch_size=16)
            start = time.perf_counter()
            values[name] = scorer.mean_logprobs(prompts, continuations)
            times[name].append(time.perf_counter() - start)
    same = values["whole tensor"] == values["scored rows"]
    diff = max(abs(a - b) for a, b in zip(*values.values(), strict=True))
    whole, rows = min(times["whole tensor"]), min(times["scored rows"])
    print(f"{len(prompts)} pairs: whole tensor {whole:.2f} s, scored rows {rows:.2f} s, "
          f"speed-up {whole / rows:.2f}x; values identical: {same} "
          f"(max |difference| {diff:.3g})")  # fmt: skip


if __name__ == "__main__":
    main()
