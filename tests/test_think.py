import json
import math
import operator
import random
import runpy
import types
from itertools import islice
from pathlib import Path

import pytest
import torch

from conftest import ROOT, extract_answer, write_jsonl
from stylemerge.core.job import JobSettings
from stylemerge.core.precision import CPU_OVERRIDE
from stylemerge.data import arithmetic
from stylemerge.data.arithmetic import (
    build_traces,
    fewshot_prompt,
    format_example,
    format_trace,
    from_gsm8k,
    generate_problems,
    harness_doc,
    load_gsm8k,
    make_traces,
    problem_split,
    split_problems,
)
from stylemerge.data.shards import is_heldout
from stylemerge.data.tokenizer import THINK_TOKENS
from stylemerge.models.reference import ModelError, load_model, load_tokenizer
from stylemerge.think.optimize import ensure_think_tokens, optimize_think_tokens

# 1-shot traces fit the test model without cutting (~330 of its tokens); 30 steps: seconds
DATA = {"source": "builtin", "train": 48, "heldout": 16, "shots": 1, "heldout_fraction": 0.25}
SETTINGS = {"steps": 30, "learning_rate": 0.02, "batch_size": 8, "max_length": 384}
# the proxy's smaller vocabulary takes more tokens per trace: a longer max_length cuts none
PROXY_SETTINGS = {**SETTINGS, "max_length": 768}
EMBED = "model.embed_tokens.weight"
PROBLEM = {"question": "Ana buys 3 pens at $4 each. How much?", "reasoning": "3 * 4 = 12"}
PROBLEM["answer"] = "12"


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def think(model_dir, out, settings=SETTINGS, data=DATA, seed=5, precision="fp32"):
    return optimize_think_tokens(
        JobSettings(seed=seed, precision=precision),
        model_dir,
        build_traces(data, seed),
        out,
        settings,
    )


def save_variant(model_dir: Path, out: Path, variant: str) -> Path:
    """``model_dir`` saved to ``out`` untied, in bfloat16, or padded with 6 spare rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if variant == "untied":
        config = model.config
        config.tie_word_embeddings = False
        untied = AutoModelForCausalLM.from_config(config)
        untied.load_state_dict(model.state_dict(), strict=False)
        untied.lm_head.weight.data.copy_(model.lm_head.weight.data)
        assert untied.lm_head.weight is not untied.model.embed_tokens.weight
        model = untied
    elif variant == "bfloat16":
        model = model.to(torch.bfloat16)
    else:  # a padded vocabulary, as Qwen3's: spare rows beyond the tokenizer's ids
        model.resize_token_embeddings(
            len(model.get_input_embeddings().weight) + 6, mean_resizing=False
        )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def optimised(tiny_base, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("think") / "model"
    return out, think(tiny_base, out)


@pytest.fixture(scope="module")
def added(tiny_general_proxy, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny Llama proxy, whose tokenizer has no think tokens, optimised."""
    out = tmp_path_factory.mktemp("think-added") / "model"
    return out, think(tiny_general_proxy, out, settings=PROXY_SETTINGS)


# --- problems and formats ---------------------------------------------------------------------


def check_reasoning(problem):
    """Every worked step is right ("... 3 * 4 = 12 ...") and the last ends in the answer."""
    assert set(problem) == {"question", "reasoning", "answer"}
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
    for line in problem["reasoning"].splitlines():
        expr, result = line.split(" = ")
        a, op, b = expr.split()[-3:]
        assert ops[op](int(a), int(b)) == int(result.split()[0]), line
    assert result.split()[0] == problem["answer"] and int(problem["answer"]) >= 0


def test_generator_is_deterministic_varied_and_correct():
    first = list(islice(generate_problems(7), 300))
    assert first == list(islice(generate_problems(7), 300))
    assert first != list(islice(generate_problems(8), 300))
    assert len({p["question"] for p in first}) == 300
    for problem in first:
        check_reasoning(problem)
    for template in arithmetic.TEMPLATES.values():
        for seed in range(20):
            check_reasoning(template(random.Random(seed)))


def test_split_is_a_stable_hash_of_the_question():
    small = split_problems(generate_problems(3), 20, 5, 0.25)
    large = split_problems(generate_problems(3), 60, 15, 0.25)
    for split in ("train", "heldout"):
        assert large[split][: len(small[split])] == small[split]  # more problems: none move
        assert all(problem_split(p, 0.25) == split for p in large[split])
        assert all(is_heldout(p["question"], 0.25) == (split == "heldout") for p in large[split])
    assert not {p["question"] for p in large["train"]} & {p["question"] for p in large["heldout"]}
    with pytest.raises(ValueError, match="ran out of problems"):
        split_problems(islice(generate_problems(3), 10), 20, 5, 0.25)


def test_trace_format_is_the_harness_gsm8k_format_with_think_tags():
    other = {"question": "Ben has 5 cats and gets 2. How many?", "reasoning": "5 + 2 = 7"}
    other["answer"] = "7"
    assert format_example(PROBLEM) == (
        "Question: Ana buys 3 pens at $4 each. How much?\n"
        "Answer: <think> 3 * 4 = 12 </think> #### 12"
    )
    assert format_example(PROBLEM, think=False).endswith("Answer: 3 * 4 = 12 #### 12")
    prompt = fewshot_prompt([PROBLEM], other)
    assert prompt == format_example(PROBLEM) + "\n\nQuestion: " + other["question"] + "\nAnswer:"
    assert format_trace([PROBLEM], other) == prompt + " <think> 5 + 2 = 7 </think> #### 7"
    assert extract_answer(format_trace([PROBLEM], other)[len(prompt) :]) == "7"
    assert harness_doc(other) == {
        "question": other["question"],
        "answer": "<think> 5 + 2 = 7 </think> #### 7",
        "number": "7",
    }
    problems = list(islice(generate_problems(1), 10))
    traces = make_traces(problems, shots=3, seed=0)
    assert traces == make_traces(problems, shots=3, seed=0) and len(traces) == 10
    for target, trace in zip(problems, traces, strict=True):
        assert trace.count("Question:") == 4 and trace.count("<think>") == 4
        assert trace.endswith(format_example(target).split("\nAnswer: ")[1])
        assert trace.count(target["question"]) == 1  # the target is never its own example
    with pytest.raises(ValueError, match="too few"):
        make_traces(problems[:3], shots=3, seed=0)


GSM8K = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
        "<<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    *(
        {"question": f"What is {n} times 1,000?", "answer": f"{n} * 1000 = {n},000\n#### {n},000"}
        for n in range(2, 40)
    ),
]


def test_gsm8k_records_become_problems_and_traces(tmp_path, monkeypatch):
    natalia = next(from_gsm8k(GSM8K))
    assert natalia["answer"] == "72"
    assert natalia["reasoning"] == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in "
        "April and May."
    )
    assert "<<48/2=24>>" in next(from_gsm8k(GSM8K, strip_calculator=False))["reasoning"]
    assert next(from_gsm8k(GSM8K[1:]))["answer"] == "2000"
    with pytest.raises(ValueError, match="record 1: expected"):
        list(from_gsm8k([GSM8K[0], {"question": "q", "answer": "no mark"}]))

    # the hub loader, pointed at a local data set directory (no network)
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", GSM8K)
    records = load_gsm8k(str(tmp_path / "gsm8k"), name=None, split="train")
    assert [dict(r) for r in records] == GSM8K

    calls = []
    monkeypatch.setattr(arithmetic, "load_gsm8k", lambda *a: calls.append(a) or GSM8K)
    data = {
        **DATA,
        "source": "gsm8k",
        "train": 8,
        "heldout": 3,
        "path": "openai/gsm8k",
        "name": "main",
        "split": "train",
        "revision": None,
        "strip_calculator": True,
    }
    traces = build_traces(data, seed=0)
    assert calls == [("openai/gsm8k", "main", "train", None)]
    assert len(traces["train"]) == 8 and len(traces["heldout"]) == 3
    assert traces["info"]["source"] == "gsm8k" and traces["info"]["problems"]["heldout"] == 3
    assert all(t.count("<think>") == 2 and "<<" not in t for t in traces["train"])
    with pytest.raises(ValueError, match="think data source 'web'"):
        build_traces({**data, "source": "web"}, seed=0)


# --- the optimisation ---------------------------------------------------------------------------


def test_only_the_two_think_rows_change_and_heldout_ce_falls(tiny_base, optimised):
    out, metrics = optimised
    ids = list(metrics["think_tokens"].values())
    assert metrics["tied_embeddings"] is True  # the tiny base ties input and output vectors
    assert metrics["trained"] == {EMBED: ids}
    assert metrics["frozen_max_abs_change_overall"] == 0.0
    assert set(metrics["frozen_max_abs_change"].values()) == {0.0}
    assert all(v > 0 for v in metrics["think_rows_max_abs_change"][EMBED])

    old, new = weights(tiny_base), weights(out)
    assert set(old) == set(new)
    for name, tensor in old.items():
        if name == EMBED:
            others = torch.ones(len(tensor), dtype=torch.bool)
            others[ids] = False
            assert torch.equal(new[name][others], tensor[others])
            assert (new[name][ids] != tensor[ids]).any(dim=1).all()
        else:
            assert torch.equal(new[name], tensor), name

    before, after = metrics["heldout_ce_before"], metrics["heldout_ce_after"]
    assert before["tokens"]["think_tags"] == 2 * 2 * DATA["heldout"]  # 1 shot + target, 2 tags
    assert after["overall"] < before["overall"]
    assert after["think_tags"] < before["think_tags"] - 1.0
    for ce in (before, after):  # per trace: the overall mean is their token-weighted mean
        per_doc = ce["per_document"]
        assert len(per_doc["nats"]) == DATA["heldout"] == len(per_doc["tokens"])
        assert sum(per_doc["tokens"]) == ce["tokens"]["overall"]
        assert sum(per_doc["nats"]) / sum(per_doc["tokens"]) == pytest.approx(ce["overall"])
    assert metrics["truncated"] == {"train": 0, "heldout": 0}
    assert metrics["steps"] == 30 and metrics["log_history"][-1]["step"] == 30
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["heldout_ce_after"] == after and saved["saved_dtype"] == "float32"


def test_optimised_model_loads_with_transformers_and_generates(optimised):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, metrics = optimised
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    problem, target = list(islice(generate_problems(2), 2))
    enc = tok(fewshot_prompt([problem], target), return_tensors="pt")
    generated = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] == enc["input_ids"].shape[1] + 6

    trace = format_trace([problem], target)
    ids = tok(trace, add_special_tokens=False)["input_ids"]
    assert ids.count(metrics["think_tokens"]["<think>"]) == 2
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded.count("<think>") == 2 and decoded.count("</think>") == 2
    assert metrics["think_tokens_special"] == [False, False]


@pytest.mark.parametrize("variant", ["untied", "bfloat16"])
def test_untied_and_bfloat16_models_change_only_the_think_rows(tiny_base, tmp_path, variant):
    """Untied: the output projection's two rows train too.  bfloat16: trained in float32,
    saved in bfloat16, every other parameter bit-identical to the checkpoint."""
    save_variant(tiny_base, tmp_path / "in", variant)
    metrics = think(tmp_path / "in", tmp_path / "out", settings={**SETTINGS, "steps": 4})
    ids = list(metrics["think_tokens"].values())
    old, new = weights(tmp_path / "in"), weights(tmp_path / "out")
    trained = {EMBED} | ({"lm_head.weight"} if variant == "untied" else set())
    assert set(metrics["trained"]) == trained and metrics["tied_embeddings"] is (
        variant != "untied"
    )
    assert set(old) == set(new)
    for name, tensor in old.items():
        assert new[name].dtype == tensor.dtype
        if name in trained:
            others = torch.ones(len(tensor), dtype=torch.bool)
            others[ids] = False
            assert torch.equal(new[name][others], tensor[others]), name
            assert not torch.equal(new[name][ids], tensor[ids]), name
        else:
            assert torch.equal(new[name], tensor), name
    assert metrics["saved_dtype"] == ("bfloat16" if variant == "bfloat16" else "float32")
    assert math.isfinite(metrics["heldout_ce_after"]["overall"])


def test_a_tokenizer_with_think_tokens_is_not_resized(tiny_base, optimised):
    out, metrics = optimised
    rows = len(weights(tiny_base)[EMBED])
    assert metrics["think_tokens_added"] is False and metrics["think_rows_init"] == "existing"
    assert metrics["vocab_size_before"] == metrics["vocab_size_after"] == len(load_tokenizer(out))
    assert metrics["embedding_rows_before"] == metrics["embedding_rows_after"] == rows
    assert len(weights(out)[EMBED]) == rows
    assert metrics["preexisting_rows_max_abs_change"] == {EMBED: 0.0}


def check_added(model_in: Path, out: Path, metrics: dict, embeddings: set[str]) -> None:
    """The tags were added at the end of the vocabulary, their rows started at the mean of the
    existing token rows, and nothing else changed: every pre-existing row and every other
    tensor is bit-identical to ``model_in``'s."""
    vocab = len(load_tokenizer(model_in))
    old, new = weights(model_in), weights(out)
    rows = len(old[EMBED])
    ids = list(metrics["think_tokens"].values())
    assert metrics["think_tokens_added"] is True and metrics["think_rows_init"] == "mean"
    assert ids == [vocab, vocab + 1]
    assert (metrics["vocab_size_before"], metrics["vocab_size_after"]) == (vocab, vocab + 2)
    assert metrics["embedding_rows_before"] == rows
    assert metrics["embedding_rows_after"] == len(new[EMBED]) == max(rows, vocab + 2)
    assert metrics["preexisting_rows_max_abs_change"] == dict.fromkeys(embeddings, 0.0)
    assert metrics["trained"] == dict.fromkeys(embeddings, ids)
    assert metrics["frozen_max_abs_change_overall"] == 0.0
    assert set(old) == set(new)
    for name, tensor in old.items():
        if name not in embeddings:
            assert torch.equal(new[name], tensor), name
            continue
        keep = torch.ones(rows, dtype=torch.bool)
        keep[[i for i in ids if i < rows]] = False
        assert torch.equal(new[name][:rows][keep], tensor[keep]), name
        # the recorded change of each tag row is its distance from the mean of the token rows
        mean = tensor[:vocab].double().mean(dim=0).to(tensor.dtype)
        moved = (new[name][ids] - mean).abs().amax(dim=1)
        assert moved.tolist() == pytest.approx(metrics["think_rows_max_abs_change"][name])
        assert (moved > 0).all(), name


def test_a_tokenizer_without_think_tokens_gets_them_at_the_mean(tiny_general_proxy, added):
    out, metrics = added
    assert metrics["tied_embeddings"] is True
    check_added(tiny_general_proxy, out, metrics, {EMBED})
    before, after = metrics["heldout_ce_before"], metrics["heldout_ce_after"]
    assert metrics["truncated"] == {"train": 0, "heldout": 0}
    assert before["tokens"]["think_tags"] == 2 * 2 * DATA["heldout"]  # the tags are one token
    assert after["think_tags"] < before["think_tags"] - 1.0
    assert after["overall"] < before["overall"]

    # the saved model and tokenizer agree, reload, and keep the tags as single tokens
    tok, model = load_tokenizer(out), load_model(out)
    assert len(tok) == metrics["vocab_size_after"] <= len(model.get_input_embeddings().weight)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for token, i in metrics["think_tokens"].items():
        assert tok(token, add_special_tokens=False)["input_ids"] == [i]
    trace = format_trace([next(generate_problems(2))], PROBLEM)
    ids = tok(trace, add_special_tokens=False)["input_ids"]
    assert ids.count(metrics["think_tokens"]["<think>"]) == 2
    assert tok.decode(ids, skip_special_tokens=True).count("</think>") == 2
    assert metrics["think_tokens_special"] == [False, False]


@pytest.mark.parametrize("variant", ["untied", "padded"])
def test_added_think_tokens_in_untied_and_padded_models(tiny_general_proxy, tmp_path, variant):
    """Untied: the output rows start at their own mean too.  Padded: the tags take two spare
    rows and the matrix keeps its size."""
    model_in = save_variant(tiny_general_proxy, tmp_path / "in", variant)
    metrics = think(model_in, tmp_path / "out", settings={**PROXY_SETTINGS, "steps": 4})
    embeddings = {EMBED} | ({"lm_head.weight"} if variant == "untied" else set())
    check_added(model_in, tmp_path / "out", metrics, embeddings)
    assert metrics["tied_embeddings"] is (variant != "untied")
    if variant == "padded":
        assert metrics["embedding_rows_after"] == metrics["embedding_rows_before"]


def test_tags_that_stay_several_tokens_are_refused(tiny_general_proxy):
    tok, model = load_tokenizer(tiny_general_proxy), load_model(tiny_general_proxy)
    assert len(tok(THINK_TOKENS[0], add_special_tokens=False)["input_ids"]) > 1
    tok.add_tokens = lambda tokens, **kwargs: 0  # a tokenizer that takes no new tokens
    with pytest.raises(ModelError, match=r"proxy-x: its tokenizer encodes '<think>' as \d+ tok"):
        ensure_think_tokens(tok, model, "proxy-x")


def test_the_optimisation_is_deterministic_for_a_seed(tiny_base, tmp_path):
    settings = {**SETTINGS, "steps": 3}
    a = think(tiny_base, tmp_path / "a", settings=settings, seed=9)
    b = think(tiny_base, tmp_path / "b", settings=settings, seed=9)
    assert a["heldout_ce_after"] == b["heldout_ce_after"]
    assert torch.equal(weights(tmp_path / "a")[EMBED], weights(tmp_path / "b")[EMBED])
    with pytest.raises(ValueError, match="needs train and held-out traces, got 0 and 1"):
        optimize_think_tokens(
            JobSettings(), tiny_base, {"train": [], "heldout": ["x"]}, tmp_path / "c", settings
        )


def test_a_nan_loss_stops_with_its_step(tiny_base, tmp_path):
    # an infinite learning rate turns the think rows into NaN at the first update
    settings = {**SETTINGS, "steps": 5, "learning_rate": math.inf}
    with pytest.raises(FloatingPointError, match="training loss is nan at step 2"):
        think(tiny_base, tmp_path / "out", settings=settings)
    assert not (tmp_path / "out").exists()


def test_the_snakemake_script_translates_to_one_library_call(tiny_base, tmp_path):
    settings = {**SETTINGS, "steps": 2, "data": {**DATA, "train": 8, "heldout": 4}}
    snakemake = types.SimpleNamespace(
        input=types.SimpleNamespace(model=str(tiny_base)),
        params=types.SimpleNamespace(
            job={
                "seed": 3,
                "device": "cpu",
                "precision": "fp32",
                "trust_remote_code": False,
                "allow_pickle_weights": False,
            },  # fmt: skip
            model={"ref": None, "revision": None},
            checkpoints=str(tmp_path / "checkpoints" / "think" / "base"),
            settings=settings,
        ),
        output=[str(tmp_path / "think" / "base")],
        log=[str(tmp_path / "logs" / "base.log")],
        threads=1,
        config={"think": settings},
    )
    script = ROOT / "workflow" / "scripts" / "optimize_think_tokens.py"
    runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    metrics = json.loads((tmp_path / "think" / "base" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["data"]["problems"] == {"train": 8, "heldout": 4}
    assert metrics["provenance"]["seed"] == 3
    assert "held-out CE" in (tmp_path / "logs" / "base.log").read_text()
    assert not (tmp_path / "checkpoints" / "think" / "base").exists()  # removed when done


# --- the cheaper path (paper scale's memory settings) ------------------------------------------

CHEAP = {"gradient_checkpointing": True, "micro_batch_size": 3}


def trained_rows(out: Path, metrics: dict) -> torch.Tensor:
    return weights(out)[EMBED][list(metrics["think_tokens"].values())]


def test_checkpointing_autocast_and_micro_batches_give_the_same_rows(
    tiny_base, tmp_path, monkeypatch
):
    """Micro-batches of 3, 3 and 2 traces with checkpointing reproduce one 8-trace pass in
    float32 (to 1e-5); with bfloat16 autocast as well, the rows stay within 2 % of how far
    they moved (measured: see the report), trained, graded and updated in float32 throughout."""
    settings = {**SETTINGS, "steps": 4}
    initial = weights(tiny_base)[EMBED]
    plain = think(tiny_base, tmp_path / "plain", settings=settings)
    split = think(tiny_base, tmp_path / "split", settings={**settings, **CHEAP})
    # bf16 is honoured on any CPU with bfloat16 (torch computes it, if slowly, without)
    monkeypatch.setenv(CPU_OVERRIDE, "avx512")
    cheap = think(tiny_base, tmp_path / "cheap", settings={**settings, **CHEAP}, precision="bf16")
    rows = {name: trained_rows(tmp_path / name, plain) for name in ("plain", "split", "cheap")}
    moved = (rows["plain"] - initial[list(plain["think_tokens"].values())]).abs().max().item()
    split_diff = (rows["split"] - rows["plain"]).abs().max().item()
    cheap_diff = (rows["cheap"] - rows["plain"]).abs().max().item()
    print(
        f"rows moved {moved:.3g}; split vs plain {split_diff:.3g}; cheap vs plain {cheap_diff:.3g}"
    )
    assert moved > 0.01
    assert split_diff < 1e-5
    assert cheap_diff < 0.02 * moved
    assert abs(cheap["heldout_ce_after"]["overall"] - plain["heldout_ce_after"]["overall"]) < 1e-2
    for metrics in (split, cheap):
        assert metrics["frozen_max_abs_change_overall"] == 0.0
    assert plain["precision"] == {
        "autocast": None,
        "trained_rows": ["float32"],
        "gradients": ["float32"],
        "adam_moments": ["float32"],
        "gradient_checkpointing": False,
        "micro_batch_size": 8,
    }
    assert cheap["precision"] == {
        **plain["precision"],
        "autocast": "bfloat16",
        "gradient_checkpointing": True,
        "micro_batch_size": 3,
    }
    assert [h["loss"] for h in cheap["log_history"]] == pytest.approx(
        [h["loss"] for h in plain["log_history"]], rel=1e-2
    )


def test_checkpointing_recomputes_each_layer_without_dropout():
    """Inside ``checkpointed`` the backward pass runs each layer's forward again (its query
    projection sees two calls per pass, not one) while attention stays in eval mode; outside,
    the model is as before."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from stylemerge.think.optimize import checkpointed

    config = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
        attention_dropout=0.5,
    )  # fmt: skip
    model = Qwen3ForCausalLM(config).eval()
    for param in model.parameters():
        param.requires_grad_(param is model.get_input_embeddings().weight)
    calls, layer = [], model.model.layers[0]
    layer.self_attn.q_proj.register_forward_pre_hook(lambda *_: calls.append(1))
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    grads = []
    for enabled in (False, True, False):
        calls.clear()
        with checkpointed(model, enabled):
            assert not layer.self_attn.training
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        grads.append(model.get_input_embeddings().weight.grad.clone())
        model.zero_grad(set_to_none=True)
        assert len(calls) == (2 if enabled else 1)
        assert not layer.training and not layer.gradient_checkpointing
    # attention_dropout 0.5 would make the passes differ if dropout ran
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
