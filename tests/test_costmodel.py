"""The cost model (stylemerge-cost): parameter counts, hand-computed FLOPs, paper.yaml."""

import json
import re

import pytest
import yaml

from conftest import ROOT, SCHEMA, TINY
from stylemerge.cli.cost import load_config, main, parse_params
from stylemerge.evaluate.task_data import LAMBADA_OOD
from stylemerge.resources.data import CHARS_PER_TOKEN
from stylemerge.resources.jobs import mem_requests
from stylemerge.resources.sizes import Architecture, CostError, known_models, model_size
from stylemerge.resources.stages import Assumptions, estimate
from stylemerge.workflow.config import validate_config


class CountingTokenizer:
    """What build_tiny_model reads from a tokenizer: its length and three token ids."""

    bos_token_id = None
    eos_token_id = 0
    pad_token_id = 0

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def test_known_architectures_have_their_published_parameter_counts():
    known = known_models()  # src/stylemerge/resources/known_models.yaml
    assert known["Qwen/Qwen3-4B-Base"].parameters() == 4_022_468_096
    assert known["HuggingFaceTB/SmolLM2-360M"].parameters() == 361_821_120
    assert known["HuggingFaceTB/SmolLM2-135M"].parameters() == 134_515_008
    assert known["SmolLM2-135M-Instruct.Q4_1.gguf"] == known["HuggingFaceTB/SmolLM2-135M"]


@pytest.mark.parametrize("architecture", ["qwen3", "llama"])
@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_matches_transformers(architecture, tied, tmp_path):
    from stylemerge.models.reference import build_tiny_model

    tiny = {**TINY, "architecture": architecture, "tie_word_embeddings": tied}
    model = build_tiny_model(CountingTokenizer(300), tiny)
    model.config.save_pretrained(tmp_path)  # config.json only: model_size reads that
    size = model_size(str(tmp_path), {})
    assert size.parameters == model.num_parameters()
    untied_input = 0 if tied else 300 * TINY["hidden_size"]
    assert size.compute_parameters == size.parameters - untied_input


def test_embedded_default_sizes_its_tiny_models_as_built():
    from stylemerge.models.reference import build_tiny_model

    config = load_config(ROOT / "config" / "config.yaml", SCHEMA)
    e = estimate(config)
    for name in ("base", "general_proxy"):
        model = config["models"][name]
        vocab = model["tokenizer"]["vocab_size"] + (2 if model["tokenizer"]["think_tokens"] else 0)
        built = build_tiny_model(CountingTokenizer(vocab), model["tiny"])
        assert e.sizes[name].parameters == built.num_parameters()
    stages = e.stages()
    assert stages["pretrain"]["gpu_hours"] > 0  # tiny models are pretrained here
    assert e.data["bbc_news"].basis == "builtin (counted)"
    assert e.data["bbc_news"].heldout_documents > 0


# A config small enough to compute by hand: one hub domain, models sized by --params.
HAND = {
    "device": "cuda",
    "domains": {"news": {"source": {"type": "hf", "path": "org/news"}}},
    "shards": {"heldout_fraction": 0.5, "max_documents": 10, "max_chars": 4000},
    "models": {"base": {"ref": "org/base"}, "general_proxy": {"ref": "org/proxy"}},
    "proxy": {"steps": 10, "batch_size": 2, "seq_len": 100, "eval_blocks": 4},
    "grpo": {
        "prompt_tokens": 30,
        "eval_prompts": 2,
        "eval_samples": 3,
        "rewards": {"style_contrast": {"weight": 1.0}},
        "trainer": {
            "max_steps": 5,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "num_generations": 4,
            "max_completion_length": 70,
            "beta": 0.0,
            "activation_checkpointing": False,
        },
    },
    "merge": {
        "variants": {"karcher": {"method": "karcher"}},
        "chosen": "karcher",
        "entropy_blocks": 3,
        "entropy_seq_len": 100,
    },
    "think": {
        "compare_base": False,
        "steps": 10,
        "batch_size": 2,
        "max_length": 100,
        "data": {"source": "builtin", "train": 20, "heldout": 5, "shots": 1},
    },
    "evaluate": {
        "domain_models": False,
        "lm_eval": {"tasks": [{"name": "stylemerge_bpb"}], "lambada": {"domains": ["news"]}},
        "diversity": {"prompts": 2, "samples": 2, "prompt_tokens": 10, "max_new_tokens": 20},
    },
}
N_BASE, N_PROXY = 1e9, 1e8
# 100 TFLOP/s peak: 50 TFLOP/s sustained for training and scoring, 25 for generation
HAND_ASSUMPTIONS = Assumptions(gpu_peak_tflops=100, utilisation=0.5, generation_utilisation=0.25)
COMPUTE, GENERATE = 50e12 * 3600, 25e12 * 3600  # FLOPs per GPU-hour


@pytest.fixture
def hand():
    config = validate_config(HAND, SCHEMA)
    return estimate(config, HAND_ASSUMPTIONS, {"org/base": N_BASE, "org/proxy": N_PROXY})


def test_hand_computed_config(hand):
    # hub data assumed: 10 documents, half held out, each 4000 characters (max_chars)
    # = 1000 tokens: 5000 held-out tokens
    assert hand.data["news"].heldout_tokens == 5000
    flops = {(i["stage"], i["item"]): i["flops"] for i in hand.items()}
    hours = {(i["stage"], i["item"]): i["gpu_hours"] for i in hand.items()}

    # proxy: 10 steps x 2 blocks x 100 tokens at 6N; 4 held-out blocks (of 50), before
    # and after, at 2N
    proxy = 2000 * 6 * N_PROXY + 2 * 4 * 100 * 2 * N_PROXY
    assert flops[("proxy", "news")] == pytest.approx(proxy, rel=1e-12)
    assert hours[("proxy", "news")] == pytest.approx(proxy / COMPUTE, rel=1e-12)

    # GRPO: 5 steps x (4 x 2) completions = 40, of 30 + 70 = 100 tokens: 4000 tokens
    generation = 4000 * 2 * N_BASE  # sampled
    training = 4000 * 4 * N_BASE  # LoRA on a frozen base, no activation checkpointing
    rewards = 2 * 4000 * 2 * N_PROXY  # domain and general proxy (style_contrast)
    # no sampling-policy pass (no vLLM, steps aligned), no reference pass (beta 0)
    eval_samples = 2 * 2 * 3  # before and after, 2 prompts x 3 samples
    eval_generation = eval_samples * 100 * 2 * N_BASE
    eval_scoring = 2 * eval_samples * 100 * 2 * N_PROXY
    compute = training + rewards + eval_scoring
    sampled = generation + eval_generation
    assert flops[("grpo", "news")] == pytest.approx(compute + sampled, rel=1e-12)
    assert hours[("grpo", "news")] == pytest.approx(
        compute / COMPUTE + sampled / GENERATE, rel=1e-12
    )

    # merge: 3 blocks x 100 tokens per entropy measurement at 2N
    assert flops[("merge", "apply_adapter/news")] == pytest.approx(300 * 2 * N_BASE)
    assert flops[("merge", "karcher")] == pytest.approx(2 * 300 * 2 * N_BASE)  # base, merge

    # think: traces (1 shot + 1) x 60 tokens = 120, cut to max_length 100
    think = 10 * 2 * 100 * 4 * N_BASE + 2 * 5 * 100 * 2 * N_BASE
    assert flops[("think", "karcher")] == pytest.approx(think)
    assert ("think", "base") not in flops  # compare_base: false

    # evaluate: base, the merge, its think model; bpb over 5000 held-out tokens and
    # diversity sampling of 2 x 2 x (10 + 20) tokens
    for model in ("base", "karcher", "think_karcher"):
        assert flops[("evaluate", model)] == pytest.approx((5000 + 120) * 2 * N_BASE)
    assert len([k for k in flops if k[0] == "evaluate"]) == 3

    # the totals against the hand figures above (not against the rows they are summed from)
    merge = 300 * 2 * N_BASE + 2 * 300 * 2 * N_BASE
    evaluate_compute, evaluate_sampled = 3 * 5000 * 2 * N_BASE, 3 * 120 * 2 * N_BASE
    total = hand.total()
    assert total["flops"] == pytest.approx(
        proxy + compute + sampled + merge + think + evaluate_compute + evaluate_sampled, rel=1e-12
    )
    assert total["gpu_hours"] == pytest.approx(
        (proxy + compute + merge + think + evaluate_compute) / COMPUTE
        + (sampled + evaluate_sampled) / GENERATE,
        rel=1e-12,
    )


def test_grpo_passes_follow_the_trainer_settings():
    config = validate_config(HAND, SCHEMA)
    trainer = config["grpo"]["trainer"]
    trainer.update(beta=0.04, use_vllm=True, activation_checkpointing=True, num_iterations=2)
    e = estimate(config, HAND_ASSUMPTIONS, {"org/base": N_BASE, "org/proxy": N_PROXY})
    rows = {r.component: r for r in e.rows if r.stage == "grpo"}
    # 40 completions trained, generated once per 2 iterations
    assert rows["generation (prompt + completion)"].tokens == 20 * 100
    assert rows["policy training (LoRA)"].tokens == 40 * 100
    assert rows["policy training (LoRA)"].factor == 4 + 2  # recompute
    assert rows["sampling-policy log-probs"].tokens == 20 * 100  # vLLM importance sampling
    assert rows["reference log-probs (beta > 0)"].tokens == 20 * 100


def test_utilisation_scales_gpu_hours_not_flops(hand):
    config = validate_config(HAND, SCHEMA)
    params = {"org/base": N_BASE, "org/proxy": N_PROXY}
    half = estimate(config, Assumptions(100, 0.25, 0.125), params)
    assert half.total()["flops"] == pytest.approx(hand.total()["flops"])
    assert half.total()["gpu_hours"] == pytest.approx(2 * hand.total()["gpu_hours"])


def test_lm_eval_task_sizes_follow_limit_and_passages():
    config = validate_config(HAND, SCHEMA)
    lm = config["evaluate"]["lm_eval"]
    lm["tasks"] = [{"name": n} for n in ("stylemerge_bpb", "stylemerge_lambada", LAMBADA_OOD)]
    lm["lambada"].update(min_words=40, max_words=120, max_passages=10)
    lm["lambada_ood"]["sources"] = {"wikipedia_english": {"type": "builtin"}}
    lm["limit"] = 2
    e = estimate(config, HAND_ASSUMPTIONS, {"org/base": N_BASE, "org/proxy": N_PROXY})
    tokens = {r.component: r.tokens for r in e.rows if r.item == "base"}
    # bpb: the first 2 of 5 held-out documents of 1000 tokens
    assert tokens["lm_eval stylemerge_bpb"] == 2000
    # lambada: 2 passages (limit) of (40 + 120) / 2 words x 6 / 4 tokens per word; the
    # out-of-domain text too (the builtin corpus holds far more)
    assert tokens["lm_eval stylemerge_lambada"] == tokens[f"lm_eval {LAMBADA_OOD}"] == 2 * 120
    # without limit or cap: every passage of the out-of-domain corpus, at most all its text
    lm["limit"] = lm["lambada"]["max_passages"] = None
    e = estimate(config, HAND_ASSUMPTIONS, {"org/base": N_BASE, "org/proxy": N_PROXY})
    whole = {r.component: r.tokens for r in e.rows if r.item == "base"}[f"lm_eval {LAMBADA_OOD}"]
    corpus = ROOT / "src" / "stylemerge" / "corpus" / "wikipedia_english"
    chars = sum(len(p.read_text().strip()) for p in corpus.glob("*.txt"))
    assert 10 * 2 * 120 < whole <= chars / CHARS_PER_TOKEN


def test_paper_config_estimates_every_stage_and_domain():
    config = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    e = estimate(config)
    assert e.sizes["base"].parameters == 4_022_468_096
    assert e.sizes["general_proxy"].parameters == 361_821_120
    stages = e.stages()
    assert "pretrain" not in stages  # hub models: nothing is pretrained
    for stage in ("proxy", "grpo", "merge", "think", "evaluate"):
        assert stages[stage]["gpu_hours"] > 0, stage
    hours = {(i["stage"], i["item"]): i["gpu_hours"] for i in e.items()}
    assert len(config["domains"]) == 9
    for domain in config["domains"]:
        assert hours[("proxy", domain)] > 0
        assert hours[("grpo", domain)] > 0
        assert hours[("merge", f"apply_adapter/{domain}")] > 0
    for variant in config["merge"]["variants"]:
        assert hours[("merge", variant)] > 0
        assert hours[("evaluate", variant)] > 0
    assert hours[("evaluate", "grpo_wave")] > 0  # the comparison, a known hub model
    # the proxy stage by hand: per domain 500 steps x 16 blocks x 1024 tokens at 6N, and the
    # held-out loss before and after on 64 blocks of each of the 9 domains at 2N (hub data:
    # 200 held-out documents of 8000 characters, 390 blocks, per domain)
    n_proxy = 361_821_120  # tied embeddings: every parameter is in a matrix product
    per_domain = 500 * 16 * 1024 * 6 * n_proxy + 2 * 9 * 64 * 1024 * 2 * n_proxy
    assert stages["proxy"]["flops"] == pytest.approx(9 * per_domain, rel=1e-12)


def test_command_line_json_and_table(capsys):
    paper = str(ROOT / "config" / "paper.yaml")
    assert main([paper, "--format", "json", "--utilisation", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["assumptions"]["utilisation"] == 0.5
    assert report["assumptions"]["generation_utilisation"] == 0.5
    assert set(report["stages"]) == {"proxy", "grpo", "merge", "think", "evaluate"}
    assert report["total"]["gpu_hours"] > 0

    assert main([paper, "--gpu-peak-tflops", "312", "--generation-utilisation", "0.1"]) == 0
    table = capsys.readouterr().out
    assert "GPU peak 312 TFLOP/s" in table
    assert "Qwen/Qwen3-4B-Base: 4,022,468,096 parameters" in table
    for stage in ("proxy", "grpo", "merge", "think", "evaluate", "total"):
        assert f"\n  {stage} " in table


def test_unknown_model_needs_params(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(HAND))
    assert main([str(config)]) == 2
    assert "--params org/base=COUNT" in capsys.readouterr().err
    assert main([str(config), "--params", "org/base=1B", "--params", "general_proxy=100M"]) == 0
    assert "1,000,000,000 parameters" in capsys.readouterr().out


def test_invalid_inputs_are_reported():
    with pytest.raises(CostError, match="REF=COUNT"):
        parse_params(["org/base"])
    with pytest.raises(CostError, match="REF=COUNT"):
        parse_params(["org/base=-3"])
    assert parse_params(["a=4.02e9", "b=360M", "c=1_000"]) == {"a": 4.02e9, "b": 3.6e8, "c": 1e3}
    config = validate_config(HAND, SCHEMA)
    with pytest.raises(CostError, match="utilisation"):
        estimate(config, Assumptions(100, 1.5), {"org/base": 1, "org/proxy": 1})
    with pytest.raises(CostError, match="parameter count unknown"):
        model_size("org/unknown", {})


def test_architecture_from_a_hub_config():
    qwen3 = {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "tie_word_embeddings": True,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    assert Architecture.from_hf_config(qwen3) == known_models()["Qwen/Qwen3-4B-Base"]


@pytest.mark.workflow
def test_requested_jobs_match_the_dag_of_the_smol_ablation(tmp_path):
    """The cost model counts the jobs Snakemake plans, the MARA ablation's arm included."""
    from test_workflow import copy_workflow, planned, snakemake

    workdir = copy_workflow(tmp_path, {})
    plan_text = snakemake(workdir, "all", "-n", "--cores", "2", "--configfile",
                          "config/smol.yaml").stdout  # fmt: skip
    plan = planned(plan_text)
    config = load_config(ROOT / "config" / "smol.yaml", SCHEMA)
    assert config["ablation"]["mara"]
    e = estimate(config)
    jobs = {stage: r["jobs"] for stage, r in e.requested.items()}
    assert jobs["grpo"] == plan["train_adapter"] == 2 * len(config["domains"])
    assert jobs["merge"] == plan["apply_adapter"] + plan["merge_models"]
    assert jobs["evaluate"] == plan["evaluate_lm"] + plan["measure_diversity"]
    items = {(i["stage"], i["item"]) for i in e.items()}
    assert ("grpo", "bbc_news-mara") in items and ("merge", "karcher-mara") in items
    assert ("evaluate", "domain_bbc_news-mara") in items  # diversity only: no lm-eval rows
    lm_rows = {
        r.item for r in e.rows if r.stage == "evaluate" and r.component.startswith("lm_eval")
    }
    assert "domain_bbc_news-mara" not in lm_rows and "karcher-mara" in lm_rows
    # every planned job requests the memory stylemerge.resources.memory gives it, and the tables'
    # mapping names the same jobs (as their benchmark files)
    requests = mem_requests(config)
    jobs = planned_jobs(plan_text)
    checked = 0
    for rule, items in requests.items():
        assert len(items) == plan.get(rule, 0), rule
        for item, mem_mb in items.items():
            assert int(jobs[(rule, item)]["mem_mb"]) == mem_mb, (rule, item)
            checked += 1
    assert checked == sum(plan.get(rule, 0) for rule in requests) > 30


def planned_jobs(stdout: str) -> dict[tuple[str, str], dict[str, str]]:
    """(rule, job named as its benchmark file: the wildcard values joined) -> resources, from
    a dry run's job listing."""
    jobs = {}
    for block in re.split(r"^(?:local)?rule ", stdout, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        item = "".join(
            pair.split("=", 1)[1] for pair in (wildcards.group(1).split(", ") if wildcards else ())
        )
        jobs[(rule, item)] = dict(pair.split("=", 1) for pair in found.group(1).split(", "))
    return jobs


# --- GPU requests: the config, the cost model and profiles/slurm agree ----------------------


def cuda_configs() -> dict[str, dict]:
    """The shipped configs that run on a GPU (device: cuda), as Snakemake reads them."""
    from stylemerge.workflow.config import deep_merge

    def load(name):
        return yaml.safe_load((ROOT / "config" / name).read_text())

    configs = {
        "paper.yaml": load("paper.yaml"),
        "smol.yaml + smol-gpu.yaml": deep_merge(load("smol.yaml"), load("smol-gpu.yaml")),
    }
    validated = {name: validate_config(raw, SCHEMA) for name, raw in configs.items()}
    assert all(config["device"] == "cuda" for config in validated.values())
    return validated


@pytest.mark.parametrize("name", ["paper.yaml", "smol.yaml + smol-gpu.yaml"])
def test_gpu_rules_request_a_gpu_in_the_configs_that_run_on_cuda(name):
    """Every job that puts its models on the GPU requests one (the Snakemake resource gpu,
    which --resources gpu=N counts locally), merges included: their entropy runs on it."""
    from stylemerge.resources.rules import GPU_RULES, job_items, job_settings

    config = cuda_configs()[name]
    items = job_items(config)
    for rule in GPU_RULES:
        assert items[rule], rule
        for item in items[rule]:
            assert job_settings(config, rule, item)["gpus"] >= 1, (rule, item)
    assert not [note for note in estimate(config).notes if "requests no GPU" in note]


def test_cost_model_notes_a_gpu_job_without_a_gpu():
    from stylemerge.workflow.config import deep_merge

    raw = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config = validate_config(deep_merge(raw, {"merge": {"gpus": 0}}), SCHEMA)
    notes = [note for note in estimate(config).notes if "requests no GPU" in note]
    assert [note.split()[0] for note in notes] == ["apply_adapter", "merge_models"]


def test_requested_gpu_hours_are_what_the_slurm_profile_reserves_for_paper_yaml():
    """stylemerge-cost's requested GPU-hours for config/paper.yaml equal the GPU-hours
    profiles/slurm holds: its GPU rules' jobs x the config's runtime_min x the profile's gpu."""
    from stylemerge.resources.rules import job_items, job_settings

    config = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    reserved = 0.0
    for rule, items in job_items(config).items():
        gpus = profile["set-resources"].get(rule, {}).get("gpu", 0)
        for item in items:
            reserved += job_settings(config, rule, item)["runtime_min"] / 60 * gpus
    assert estimate(config).total()["requested"]["gpu_hours"] == pytest.approx(reserved)


def test_readme_quotes_the_gpu_hours_stylemerge_cost_prints_for_paper_yaml(capsys):
    """The README's figures for config/paper.yaml, as `stylemerge-cost config/paper.yaml`
    prints them in its per-stage table."""
    assert main([str(ROOT / "config" / "paper.yaml")]) == 0
    table = capsys.readouterr().out.split("\nPer stage (requested", 1)[1].split("\n\n", 1)[0]
    printed = {}  # stage -> (GPU-h, requested GPU-h)
    for line in table.splitlines()[3:]:
        cells = line.split()
        printed[cells[0]] = (cells[2], cells[-1])
    readme = " ".join((ROOT / "README.md").read_text().split())
    found = re.search(
        r"for `config/paper.yaml` at the defaults it prints (\S+) GPU-hours in all "
        r"\(grpo (\S+), evaluate (\S+)\), against (\S+) GPU-hours of run time that the config "
        r"requests for its GPU jobs \(the `requested GPU-h` column: proxy (\S+), grpo (\S+), "
        r"merge (\S+), think (\S+), evaluate (\S+?)[;)]",
        readme,
    )
    assert found, "README: the stylemerge-cost figures for config/paper.yaml are not found"
    total, grpo, evaluate, requested, *per_stage = found.groups()
    assert (total, grpo, evaluate) == tuple(
        printed[stage][0] for stage in ("total", "grpo", "evaluate")
    )
    assert requested == printed["total"][1]
    stages = ("proxy", "grpo", "merge", "think", "evaluate")
    assert tuple(per_stage) == tuple(printed[stage][1] for stage in stages)


def test_replicates_multiply_the_seed_dependent_stages_only():
    config = load_config(ROOT / "config" / "smol.yaml", SCHEMA)
    one = estimate(config)
    three = estimate({**config, "replicates": [1234, 7, 42]})
    for stage in ("pretrain", "proxy"):
        assert three.requested.get(stage) == one.requested.get(stage)
    for stage in ("grpo", "merge", "think", "evaluate"):
        assert three.requested[stage]["jobs"] == 3 * one.requested[stage]["jobs"]
    total = sum(r.flops for r in one.rows if r.stage == "grpo")
    assert sum(r.flops for r in three.rows if r.stage == "grpo") == pytest.approx(3 * total)
    assert any("x3 seeds" in note for note in three.notes)
