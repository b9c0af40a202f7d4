import json
import math

import pytest
import torch

from conftest import PRETRAIN, TINY
from stylemerge.core.job import JobSettings, set_seed
from stylemerge.core.training import pack
from stylemerge.data.tokenizer import EOS, THINK_TOKENS, train_tokenizer
from stylemerge.models.pretrain import pretrain_tiny_model
from stylemerge.models.reference import ModelError, build_tiny_model, check_model_dir, load_model


def test_set_seed_leaves_every_generator_as_transformers_set_seed_does():
    import random

    import numpy as np
    from transformers import set_seed as transformers_set_seed

    def states():
        return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state()

    transformers_set_seed(1234)
    expected = states()
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    set_seed(1234)
    got = states()
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_think_tags_are_single_non_special_tokens_that_survive_decoding(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "<think>add 2 and 3</think> The answer is 5."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    think_ids = [tok.convert_tokens_to_ids(t) for t in THINK_TOKENS]
    assert all(ids.count(i) == 1 for i in think_ids)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.eos_token == EOS and tok.pad_token == EOS
    assert tok.decode([tok.eos_token_id, *ids], skip_special_tokens=True) == text  # EOS is special


def test_tokenizer_metrics_count_tokens_per_shard(tokenizer_dir):
    metrics = json.loads((tokenizer_dir / "metrics.json").read_text())
    assert metrics["vocab_size"] == 512 + len(THINK_TOKENS)
    assert set(metrics["shards"]) == {
        "github_python/train",
        "github_python/heldout",
        "bbc_news/train",
        "bbc_news/heldout",
    }
    assert all(v["tokens"] > 0 and v["chars_per_token"] > 1 for v in metrics["shards"].values())


def test_tokenizer_without_think_tokens(shards, tmp_path):
    from transformers import AutoTokenizer

    train_tokenizer(shards["train"], tmp_path / "t", vocab_size=400, think_tokens=False)
    tok = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert len(tok("<think>", add_special_tokens=False)["input_ids"]) > 1


@pytest.mark.parametrize(
    "architecture, cls", [("qwen3", "Qwen3ForCausalLM"), ("llama", "LlamaForCausalLM")]
)
def test_build_tiny_model(tokenizer_dir, architecture, cls):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_tiny_model(tok, {**TINY, "architecture": architecture})
    assert type(model).__name__ == cls
    assert model.config.vocab_size == len(tok)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight


def test_bad_tiny_shape_is_rejected(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    with pytest.raises(ModelError, match="not divisible by num_attention_heads"):
        build_tiny_model(tok, {**TINY, "hidden_size": 30})


def test_pack_appends_eos_and_cuts_blocks(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    blocks = pack(tok, ["one two three", "four five six"], seq_len=4)
    assert blocks.shape[1] == 4 and blocks.dtype == torch.long
    assert (blocks == tok.eos_token_id).sum() >= 1
    with pytest.raises(ValueError, match="fewer than one block"):
        pack(tok, ["x"], seq_len=1000)


def test_pretraining_lowers_heldout_loss_and_saves_safetensors(shards, tokenizer_dir, tmp_path):
    out = tmp_path / "model"
    metrics = pretrain_tiny_model(
        JobSettings(seed=3), tokenizer_dir, shards["train"], shards["heldout"], out, TINY, PRETRAIN
    )
    assert math.isclose(metrics["heldout_loss_untrained"], metrics["uniform_loss"], rel_tol=0.05)
    assert metrics["heldout_loss"] < metrics["heldout_loss_untrained"] - 0.5
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert json.loads((out / "metrics.json").read_text())["heldout_loss"] == metrics["heldout_loss"]

    model = load_model(out)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    generated = model.generate(
        **tok("The council", return_tensors="pt"), max_new_tokens=5, do_sample=False
    )
    assert generated.shape[1] > 2


def test_pretraining_is_deterministic_for_a_seed(shards, tokenizer_dir, tmp_path):
    settings = {**PRETRAIN, "steps": 5}
    a = pretrain_tiny_model(
        JobSettings(seed=7),
        tokenizer_dir,
        shards["train"],
        shards["heldout"],
        tmp_path / "a",
        TINY,
        settings,
    )
    b = pretrain_tiny_model(
        JobSettings(seed=7),
        tokenizer_dir,
        shards["train"],
        shards["heldout"],
        tmp_path / "b",
        TINY,
        settings,
    )
    assert a["heldout_loss"] == b["heldout_loss"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()


def test_model_dir_checks(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(
        ModelError,
        match=r"no safetensors weights \(only pickle weights: "
        r"pytorch_model.bin\)",
    ):
        load_model(tmp_path)
    check_model_dir("Some/hub-id")  # not a path here: left to transformers


def test_corrupt_model_dir_is_named(tmp_path, shards, tokenizer_dir):
    out = tmp_path / "model"
    pretrain_tiny_model(
        JobSettings(seed=1),
        tokenizer_dir,
        shards["train"],
        shards["heldout"],
        out,
        TINY,
        {**PRETRAIN, "steps": 1},
    )
    (out / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=str(out)):
        load_model(out)


def test_report_to_tensorboard_writes_the_training_logs_where_the_job_says(
    shards, tokenizer_dir, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "unused"))  # restored after
    logs = tmp_path / "results" / "logs" / "pretrain" / "base"
    job = JobSettings(seed=1, report_to=("tensorboard",), tracking_dir=str(logs))
    settings = {**PRETRAIN, "steps": 4}
    pretrain_tiny_model(
        job, tokenizer_dir, shards["train"], shards["heldout"], tmp_path / "m", TINY, settings
    )
    events = EventAccumulator(str(logs)).Reload()
    losses = [event.value for event in events.Scalars("train/loss")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)  # logging_steps 1
    # without report_to nothing is written there
    quiet = tmp_path / "quiet"
    pretrain_tiny_model(
        JobSettings(seed=1, tracking_dir=str(quiet)),
        tokenizer_dir,
        shards["train"],
        shards["heldout"],
        tmp_path / "m2",
        TINY,
        settings,
    )
    assert not list(quiet.rglob("events.out.tfevents.*"))
