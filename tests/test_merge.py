import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stylemerge.core.job import JobSettings
from stylemerge.merge.run import (
    CONFIG_NAME,
    entropy_and_loss,
    heldout_blocks,
    merge_models,
    mergekit_config,
    run_mergekit,
)
from stylemerge.models.reference import load_model, load_tokenizer

DOMAINS = ("alpha", "beta", "gamma")
SETTINGS = {
    "dtype": "float32",
    "entropy_blocks": 8,
    "entropy_seq_len": 32,
    "calibrate_entropy": False,
}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def domain_models(tiny_base, tmp_path_factory):
    """Three 'domain models': the tiny base moved along different random directions."""
    root = tmp_path_factory.mktemp("domains")
    tokenizer = load_tokenizer(tiny_base)
    paths = {}
    for i, name in enumerate(DOMAINS):
        model = load_model(tiny_base)
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for param in model.parameters():
                noise = torch.randn(param.shape, generator=generator)
                param.add_(0.05 * param.std().clamp_min(1e-3) * noise * (i + 1))
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def karcher_reference(tensors, weights, iterations=200):
    """Weighted Karcher (spherical) mean, float64, written independently of mergekit: the
    fixed point of the weighted log-map average on the unit sphere, scaled by the weighted
    mean norm."""
    x = [t.double().flatten() for t in tensors]
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    norms = torch.stack([v.norm() for v in x])
    units = [v / v.norm() for v in x]
    mean = sum(wi * u for wi, u in zip(w, units, strict=True))
    mean = mean / mean.norm()
    for _ in range(iterations):
        step = torch.zeros_like(mean)
        for wi, u in zip(w, units, strict=True):
            cos = torch.clamp(mean @ u, -1.0, 1.0)
            theta = torch.arccos(cos)
            if theta > 1e-12:
                step += wi * theta / torch.sin(theta) * (u - cos * mean)
        length = step.norm()
        if length < 1e-14:
            break
        mean = torch.cos(length) * mean + torch.sin(length) * step / length
        mean = mean / mean.norm()
    return ((w * norms).sum() * mean).reshape(tensors[0].shape)


def merged_tensors(config, out):
    run_mergekit(config, out, threads=1)
    return load_file(out / "model.safetensors")


def inputs(domain_models, key):
    return [load_file(domain_models[d] / "model.safetensors")[key] for d in DOMAINS]


def test_weighted_karcher_matches_an_independent_float64_implementation(
    domain_models, tiny_base, tmp_path
):
    weights = {"alpha": 3.0, "beta": 1.0, "gamma": 0.5}  # not normalised: the method must
    config = mergekit_config("karcher_weighted", "weights", domain_models, tiny_base, weights)
    merged = merged_tensors(config, tmp_path / "m")
    for key in (
        "model.layers.0.self_attn.q_proj.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
    ):
        expected = karcher_reference(inputs(domain_models, key), list(weights.values()))
        torch.testing.assert_close(merged[key].double(), expected, rtol=0, atol=1e-5)


def test_equal_weights_equal_mergekits_karcher_exactly(domain_models, tiny_base, tmp_path):
    ours = merged_tensors(
        mergekit_config(
            "karcher_weighted", "weights", domain_models, tiny_base, dict.fromkeys(DOMAINS, 1.0)
        ),
        tmp_path / "ours",
    )
    config = mergekit_config("karcher", "weights", domain_models, tiny_base, {})
    assert "base_model" not in config  # karcher would average the base in as an input
    assert all("parameters" not in m for m in config["models"])  # karcher ignores weights
    theirs = merged_tensors(config, tmp_path / "theirs")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_karcher_of_deltas_is_added_back_to_the_base(domain_models, tiny_base, tmp_path):
    weights = {"alpha": 1.0, "beta": 2.0, "gamma": 1.0}
    config = mergekit_config("karcher", "deltas", domain_models, tiny_base, weights)
    assert config["merge_method"] == "karcher_deltas" and config["base_model"] == str(tiny_base)
    merged = merged_tensors(config, tmp_path / "d")
    key = "model.layers.1.mlp.up_proj.weight"
    base = load_file(tiny_base / "model.safetensors")[key].double()
    deltas = [t.double() - base for t in inputs(domain_models, key)]
    expected = base + karcher_reference(deltas, [1.0, 1.0, 1.0])  # `karcher`: equal weights
    torch.testing.assert_close(merged[key].double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "method, command",
    [("karcher", "mergekit-yaml"), ("karcher_weighted", "stylemerge-mergekit-yaml")],
)
def test_the_yaml_next_to_a_merge_reproduces_it(
    domain_models, tiny_base, tmp_path, method, command
):
    config = mergekit_config(
        method, "weights", domain_models, tiny_base, {"alpha": 2.0, "beta": 1.0, "gamma": 1.0}
    )
    first = merged_tensors(config, tmp_path / "first")
    yaml_file = tmp_path / "first" / CONFIG_NAME
    assert yaml.safe_load(yaml_file.read_text()) == config
    # same thread count as the merge above: float reductions then sum in the same order
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [str(BIN / command), str(yaml_file), str(tmp_path / "again")],
        check=True,
        capture_output=True,
        env=env,
    )
    again = load_file(tmp_path / "again" / "model.safetensors")
    for key in first:
        assert torch.equal(first[key], again[key]), key


def test_invalid_combinations_are_refused(domain_models, tiny_base):
    with pytest.raises(ValueError, match="ties merges task vectors"):
        mergekit_config("ties", "weights", domain_models, tiny_base, {})
    with pytest.raises(ValueError, match="unknown merge method"):
        mergekit_config("slerp9", "weights", domain_models, tiny_base, {})


@pytest.mark.parametrize("calibrate", [False, True])
def test_merge_models_records_entropies_and_loads(
    domain_models, tiny_base, shards, tmp_path, calibrate
):
    out = tmp_path / "merge"
    metrics = merge_models(
        JobSettings(),
        {"method": "karcher", "space": "weights"},
        domain_models,
        tiny_base,
        {},
        shards["heldout"],
        out,
        {**SETTINGS, "calibrate_entropy": calibrate},
    )
    entropy = metrics["entropy"]
    assert set(entropy["inputs"]) == set(DOMAINS)
    assert all(v["entropy"] > 0 for v in entropy["inputs"].values())
    assert entropy["merged"]["entropy"] > 0 and entropy["base"]["entropy"] > 0
    assert json.loads((out / "metrics.json").read_text())["entropy"] == entropy
    assert yaml.safe_load((out / CONFIG_NAME).read_text())["merge_method"] == "karcher"

    model = load_model(out)
    tok = load_tokenizer(out)
    blocks = heldout_blocks(tok, shards["heldout"], SETTINGS)
    measured = entropy_and_loss(model, blocks)["entropy"]
    if calibrate:
        assert metrics["calibration"]["after"]["entropy"] == pytest.approx(
            entropy["inputs_mean"], abs=1e-3
        )
        assert measured == pytest.approx(entropy["inputs_mean"], abs=1e-3)  # saved calibrated
    else:
        assert metrics["calibration"] is None
        assert measured == pytest.approx(entropy["merged"]["entropy"], abs=1e-5)
    generated = model.generate(
        **tok("The council", return_tensors="pt"), max_new_tokens=4, do_sample=False
    )
    assert generated.shape[1] > 2


def test_mergekit_loads_the_base_at_its_pinned_revision(tmp_path):
    """The merge's YAML names the base ``ref@revision``, and mergekit itself reads that back
    as the revision (its own parser, not ours)."""
    from mergekit.common import ModelReference as MergekitReference

    from stylemerge.models.reference import ModelReference

    base = ModelReference("Qwen/Qwen3-4B-Base", "0123abcd")
    config = mergekit_config("karcher", "deltas", {"a": "/m/a", "b": "/m/b"}, base.mergekit, {})
    parsed = MergekitReference.parse(config["base_model"])
    assert (parsed.model.path, parsed.model.revision) == ("Qwen/Qwen3-4B-Base", "0123abcd")
    unpinned = MergekitReference.parse(ModelReference("Qwen/Qwen3-4B-Base").mergekit)
    assert unpinned.model.revision is None


# --- precision: near-parallel inputs, as a real base's domain models -------------------------

NEAR = 9  # domain models


@pytest.fixture(scope="module")
def near_parallel(tmp_path_factory):
    """A base whose matrices have std 0.02 (stored in bfloat16, as real bases are) and nine
    domain models, each the base plus its own task vector of std 1e-4, stored in float32.
    Returns the directories, the base and the true mean task vector (float64)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, Qwen3Config

    root = tmp_path_factory.mktemp("near")
    config = Qwen3Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        architectures=["Qwen3ForCausalLM"],
    )
    shapes = AutoModelForCausalLM.from_config(config).state_dict()
    generator = torch.Generator().manual_seed(0)
    base = {}
    for key, value in shapes.items():
        if key == "lm_head.weight":  # tied
            continue
        matrix = value.dim() == 2
        base[key] = (
            (0.02 * torch.randn(value.shape, generator=generator)).bfloat16().float()
            if matrix
            else torch.ones_like(value)
        )
    deltas = [
        {
            k: 1e-4 * torch.randn(v.shape, generator=generator) * (v.dim() == 2)
            for k, v in base.items()
        }
        for _ in range(NEAR)
    ]

    def save(name, tensors, dtype):
        config.save_pretrained(root / name)
        save_file({k: v.to(dtype) for k, v in tensors.items()}, root / name / "model.safetensors")
        return root / name

    paths = {
        f"d{i}": save(f"d{i}", {k: base[k] + d[k] for k in base}, torch.float32)
        for i, d in enumerate(deltas)
    }
    mean = {k: sum(d[k].double() for d in deltas) / NEAR for k in base}
    return {
        "models": paths,
        "base": save("base", base, torch.bfloat16),
        "tensors": base,
        "mean": mean,
    }


def direction_kept(merged, near_parallel):
    """Cosine between (merge - base) and the true mean task vector, over all matrices."""
    keys = [k for k, v in near_parallel["tensors"].items() if v.dim() == 2]
    moved = torch.cat([(merged[k].double() - near_parallel["tensors"][k]).flatten() for k in keys])
    mean = torch.cat([near_parallel["mean"][k].flatten() for k in keys])
    return float(moved @ mean / (moved.norm() * mean.norm()))


@pytest.mark.parametrize("method", ["karcher", "karcher_weighted"])
def test_a_bfloat16_merge_of_near_parallel_models_is_computed_in_float32(
    near_parallel, tmp_path, method
):
    # measured: computed in bfloat16 the direction kept is 0.35 (the Karcher update
    # vanishes: dot products round to 1); in float32, saved in bfloat16, 0.76 (the rest is
    # the saved bfloat16's own rounding)
    models, base = near_parallel["models"], near_parallel["base"]
    config = mergekit_config(method, "weights", models, base, {}, dtype="bfloat16")
    merged = merged_tensors(config, tmp_path / "m")
    assert direction_kept(merged, near_parallel) > 0.7
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    assert (config["dtype"], config["out_dtype"]) == ("float32", "bfloat16")


def test_karcher_weighted_computes_in_float32_even_when_mergekit_is_asked_for_bfloat16(
    near_parallel, tmp_path
):
    # a YAML written by hand, computing in bfloat16: our method still computes in float32
    models, base = near_parallel["models"], near_parallel["base"]
    config = mergekit_config("karcher_weighted", "weights", models, base, {}, dtype="bfloat16")
    config["dtype"] = "bfloat16"
    assert direction_kept(merged_tensors(config, tmp_path / "m"), near_parallel) > 0.7


def test_domain_models_are_saved_in_float32_whatever_the_merge_dtype(tiny_base, shards, tmp_path):
    from peft import LoraConfig, get_peft_model

    from stylemerge.merge.run import apply_adapter

    lora = LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=["q_proj"],
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # a change to merge: B is not zero
    )
    model = get_peft_model(load_model(tiny_base), lora)
    key = "model.layers.0.self_attn.q_proj"
    layer = model.get_submodule(f"base_model.model.{key}")
    with torch.no_grad():  # a change of 1e-4, the size of a real adapter's
        layer.lora_B["default"].weight.mul_(1e-4 / layer.get_delta_weight("default").std())
        delta = layer.get_delta_weight("default").double()
    model.save_pretrained(tmp_path / "adapter")
    metrics = apply_adapter(
        JobSettings(),
        tiny_base,
        tmp_path / "adapter",
        shards["heldout"],
        tmp_path / "m",
        {**SETTINGS, "dtype": "bfloat16"},
    )
    saved = load_file(tmp_path / "m" / "model.safetensors")
    base = load_file(tiny_base / "model.safetensors")[f"{key}.weight"].double()
    change = saved[f"{key}.weight"].double() - base
    torch.testing.assert_close(change, delta, rtol=0, atol=1e-8)
    assert {t.dtype for t in saved.values()} == {torch.float32}
    assert metrics["dtype"] == "float32"
