"""Memory requests (stylemerge.resources.memory): measured against a real pass, and their
structure."""

import copy
import json
import subprocess
import sys

import pytest

from conftest import ROOT, SCHEMA
from stylemerge.cli.cost import load_config
from stylemerge.resources.jobs import job_mem_mb, job_memory, mem_requests
from stylemerge.resources.memory import MARGIN, MiB, context, lm_eval_sequence
from stylemerge.resources.rules import job_items
from stylemerge.resources.sizes import CostError
from stylemerge.workflow.config import validate_config

QWEN3_VOCAB = 151936


def default_config(**lm_eval) -> dict:
    config = load_config(ROOT / "config" / "config.yaml", SCHEMA)
    config["evaluate"]["lm_eval"].update(lm_eval)
    return config


def with_vocab(config: dict, vocab: int) -> dict:
    """The base model's tokenizer at ``vocab`` tokens with <think> and </think>."""
    config = copy.deepcopy(config)
    config["models"]["base"]["tokenizer"]["vocab_size"] = vocab - 2
    return config


def test_a_bigger_vocabulary_asks_for_more_and_qwen3s_for_more_than_4_gb():
    config = default_config()
    requests = [
        job_mem_mb(with_vocab(config, v), "evaluate_lm", "base") for v in (2050, 49152, QWEN3_VOCAB)
    ]
    assert requests == sorted(requests) and len(set(requests)) == 3
    # The measured case: a ~10 M-parameter base with Qwen3's vocabulary took 11.8 GB in
    # evaluate_lm at batch 8 while its rule asked for 4 GB: 8 x ~1000 tokens x 151936 x 8 bytes
    # (logits and a float32 log-softmax) is ~10 GB of it.
    qwen = with_vocab(config, QWEN3_VOCAB)
    qwen["models"]["base"]["tiny"].update(hidden_size=64, max_position_embeddings=1024)
    memory = job_memory(qwen, "evaluate_lm", "base")
    assert 9e6 < memory.terms["weights"][0] / 4 < 11e6
    assert memory.estimate_mb > 4000
    windows = copy.deepcopy(qwen)  # a harness task: rolling windows as long as allowed
    windows["evaluate"]["lm_eval"]["tasks"] = [{"name": "uncheatable_eval_bbc_news"}]
    assert job_mem_mb(windows, "evaluate_lm", "base") * MiB > 11.8e9
    # logits dominate: they grow with the batch; think training and merges' entropy too
    larger = copy.deepcopy(qwen)
    larger["evaluate"]["lm_eval"]["batch_size"] = 16
    assert job_mem_mb(larger, "evaluate_lm", "base") > memory.estimate_mb
    for rule, item in (("optimize_think_tokens", "karcher"), ("apply_adapter", "bbc_news")):
        assert job_mem_mb(qwen, rule, item) > job_mem_mb(config, rule, item)


def test_the_stage_setting_wins_over_the_estimate():
    config = default_config(mem_mb=1234)
    config["merge"]["mem_mb"] = 2345
    assert job_mem_mb(config, "evaluate_lm", "base") == 1234
    assert job_mem_mb(config, "merge_models", "karcher") == 2345
    assert job_mem_mb(config, "apply_adapter", "bbc_news") == 2345
    assert job_memory(config, "evaluate_lm", "base").estimate_mb != 1234
    # per domain, as the other per-domain settings
    config["domains"]["bbc_news"]["grpo"] = {"mem_mb": 999}
    config = validate_config(config, SCHEMA)
    assert job_mem_mb(config, "train_adapter", "bbc_news") == 999
    assert job_mem_mb(config, "train_adapter", "ao3_english") > 0


def test_every_job_of_every_tier_has_a_request():
    for name in ("config.yaml", "smol.yaml", "paper.yaml"):
        config = load_config(ROOT / "config" / name, SCHEMA)
        requests = mem_requests(config)
        assert {rule: len(items) for rule, items in requests.items()} == {
            rule: len(items) for rule, items in job_items(config).items()
        }
        assert all(mb >= 100 for jobs in requests.values() for mb in jobs.values()), name
    paper = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    # on a GPU the host holds the staged weights (Qwen3-4B in bf16, 7.5 GiB), not the logits
    memory = job_memory(paper, "evaluate_lm", "base")
    assert 8000 < memory.estimate_mb < 20000
    assert "weights staged on the host" in memory.counted()


def test_an_unknown_model_asks_for_the_stage_setting():
    config = default_config()
    config["models"]["base"] = {**config["models"]["base"], "ref": "org/unknown"}
    with pytest.raises(CostError, match=r"set evaluate\.lm_eval\.mem_mb"):
        job_mem_mb(config, "evaluate_lm", "base")
    config["evaluate"]["lm_eval"]["mem_mb"] = 4000
    assert job_mem_mb(config, "evaluate_lm", "base") == 4000


# A forward pass as lm-eval's loglikelihood makes it (logits, then a float32 log-softmax), in a
# fresh process: its peak RSS is measured, not assumed.
FORWARD = """
import json, resource, sys, torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM
torch.set_num_threads(1)
tiny, vocab, batch, length = json.loads(sys.argv[1])
heads = tiny["num_attention_heads"]
config = CONFIG_MAPPING["qwen3"](
    vocab_size=vocab, hidden_size=tiny["hidden_size"], intermediate_size=tiny["intermediate_size"],
    num_hidden_layers=tiny["num_hidden_layers"], num_attention_heads=heads,
    num_key_value_heads=tiny["num_key_value_heads"], head_dim=tiny["hidden_size"] // heads,
    max_position_embeddings=tiny["max_position_embeddings"], tie_word_embeddings=True)
model = AutoModelForCausalLM.from_config(config).eval()
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    torch.log_softmax(model(torch.zeros((1, 8), dtype=torch.long)).logits, -1)  # warm up
    before = peak()
    ids = torch.randint(0, vocab, (batch, length))
    logits = model(ids).logits
    out = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    tensors = logits.nbytes + out.nbytes  # held at once, at the peak
print(json.dumps({"before": before, "peak": peak(), "tensors": tensors}))
"""


def test_the_estimate_covers_a_measured_forward_pass_at_qwen3s_vocabulary():
    config = with_vocab(default_config(batch_size=2, max_length=256), QWEN3_VOCAB)
    config["models"]["base"]["tiny"].update(hidden_size=64, intermediate_size=128)
    memory = job_memory(config, "evaluate_lm", "base")
    tiny = config["models"]["base"]["tiny"]
    length = int(lm_eval_sequence_of(config))
    assert length == 256  # the builtin corpus has held-out documents longer than that
    result = subprocess.run(
        [sys.executable, "-c", FORWARD, json.dumps([tiny, QWEN3_VOCAB, 2, length])],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    modelled = sum(b for name, b in memory.counted().items() if name != "weights")
    # the logits and their log-softmax, as allocated (2 x 256 x 151936 x 4 bytes, twice: 622
    # MB): exact sizes, where RSS growth reads low when the machine is short of memory (seen
    # in CI: 363 MB) and the kernel keeps fewer of the pages resident
    tensors = measured["tensors"]
    assert tensors == 2 * 2 * 256 * QWEN3_VOCAB * 4
    assert tensors <= MARGIN * modelled, (tensors / MiB, modelled / MiB)
    assert modelled <= 1.5 * tensors, (tensors / MiB, modelled / MiB)  # and not absurdly more
    # what the process really held at its peak is within the job's estimate (RSS can only
    # read lower under memory pressure, never higher)
    assert measured["peak"] <= memory.estimate_mb * MiB


def lm_eval_sequence_of(config: dict) -> float:
    c = context(config)
    return lm_eval_sequence(c, c.evaluated("base"), "base")


def test_think_gpu_memory_drops_with_checkpointing_autocast_and_micro_batches():
    """Paper scale: plain float32 think training (8 x 1024 tokens back to the embeddings
    through 36 layers) does not fit an 80 GB GPU; paper.yaml's settings do, and each one
    lowers the estimate; the cost report prints it."""
    paper = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    assert paper["think"]["gradient_checkpointing"] and paper["think"]["precision"] == "bf16"
    plain = copy.deepcopy(paper)
    plain["think"].update(gradient_checkpointing=False, precision="fp32", micro_batch_size=None)
    gpu = {"plain": job_memory(plain, "optimize_think_tokens", "karcher").gpu_mb}
    for key, value in (("gradient_checkpointing", True), ("precision", "bf16")):
        one = copy.deepcopy(plain)
        one["think"][key] = value
        gpu[key] = job_memory(one, "optimize_think_tokens", "karcher").gpu_mb
    gpu["micro_batch_size"] = job_memory(
        {**plain, "think": {**plain["think"], "micro_batch_size": 2}},
        "optimize_think_tokens",
        "karcher",
    ).gpu_mb
    gpu["paper"] = job_memory(paper, "optimize_think_tokens", "karcher").gpu_mb
    assert gpu["plain"] * MiB > 100e9
    assert all(gpu[key] < gpu["plain"] for key in gpu if key != "plain"), gpu
    assert gpu["paper"] * MiB < 0.6 * 80e9
    # on the host nothing changes: the staged weights and the unchanged-check copy
    assert (
        job_memory(paper, "optimize_think_tokens", "karcher").estimate_mb
        == job_memory(plain, "optimize_think_tokens", "karcher").estimate_mb
    )
    # off the GPU there is no GPU estimate
    assert job_memory(default_config(), "optimize_think_tokens", "karcher").gpu_mb is None
    report = subprocess.run(
        [sys.executable, "-m", "stylemerge.cli.cost", str(ROOT / "config" / "paper.yaml")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    row = next(line for line in report.splitlines() if line.startswith("  optimize_think_tokens"))
    assert f"{gpu['paper']:,} (" in row


def test_every_gpu_rule_has_a_gpu_estimate_on_cuda():
    """Each rule that holds a GPU (cost.jobs.GPU_RULES, the list profiles/slurm follows) has
    GPU memory in its estimate on device: cuda; the merges' is their entropy pass (mergekit
    itself stays in host memory, which they still request)."""
    from stylemerge.resources.rules import GPU_RULES

    paper = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    items = job_items(paper)
    for rule in GPU_RULES:
        job = job_memory(paper, rule, items[rule][0])
        assert job.gpu_mb, rule
    for rule in ("apply_adapter", "merge_models"):
        job = job_memory(paper, rule, items[rule][0])
        assert any("entropy" in term for term in job.gpu_terms()), (rule, job.gpu_terms())
    merge = job_memory(paper, "merge_models", items["merge_models"][0])
    assert "mergekit: inputs mapped, output held" in merge.counted()  # on the host
