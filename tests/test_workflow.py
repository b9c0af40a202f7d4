"""Snakemake itself, run on a temporary copy of the workflow with a reduced config."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, TINY_SHAPE

pytestmark = pytest.mark.workflow

PRETRAIN = {
    "steps": 30,
    "batch_size": 8,
    "seq_len": 32,
    "learning_rate": 0.01,
    "eval_blocks": 16,
    "threads": 1,
}
REDUCED = {
    "seed": 7,
    "precision": "fp32",
    "evaluate": {
        "lm_eval": {
            "tasks": [
                {"name": "stylemerge_lambada_ood"},  # ao3_english: no domain of this run
                {"name": "stylemerge_lambada"},
                # as in config/config.yaml: only where the gsm8k_think table reads it
                {"name": "stylemerge_gsm8k", "num_fewshot": 1, "models": "think"},
                {"name": "stylemerge_bpb"},
            ],
            "max_length": 512,
            "bootstrap_iters": 0,
            "samples": 1,
            "lambada": {"domains": ["bbc_news"], "max_passages": 8},
            "lambada_ood": {"sources": {"ao3_english": {"type": "builtin"}}},
            "gsm8k": {"train": 8, "heldout": 4, "max_gen_toks": 32},
            "bpb": {"max_documents": 2},
        },
        "diversity": {"prompts": 4, "samples": 2, "max_new_tokens": 8, "bootstrap": 50},
    },
    "think": {
        "steps": 3,
        "batch_size": 4,
        "max_length": 256,
        "data": {"train": 12, "heldout": 6, "shots": 1},
        "threads": 1,
        "precision": "bf16",  # a stage's own precision reaches its jobs
    },
    "merge": {
        "variants": {
            "karcher": {"method": "karcher"},
            "karcher_deltas": {"method": "karcher", "space": "deltas"},
        },
        "entropy_blocks": 4,
        "entropy_seq_len": 32,
        "threads": 1,
    },
    "proxy": {"steps": 10, "batch_size": 8, "seq_len": 32, "eval_blocks": 8, "threads": 1},
    "grpo": {
        # 10 proxy steps on 1 M-parameter models need not specialise; the gate that stops
        # GRPO on such a proxy has its own tests (test_grpo); here the machinery runs on
        "require_specialised_proxy": False,
        "prompt_tokens": 12,
        "prompts_per_document": 2,
        "max_prompts": 16,
        "eval_prompts": 4,
        "eval_samples": 2,
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "trainer": {
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 8,
            "save_steps": 2,
        },
        "threads": 1,
    },
    "domains": {
        "bbc_news": {"source": {"type": "builtin"}},
        "notes": {
            "source": {"type": "local", "paths": ["data/notes/*.txt"]},
            "shards": {"min_chars": 20},
        },
    },
    "models": {
        "base": {
            "tokenizer": {"vocab_size": 400},
            "tiny": {"architecture": "qwen3", **TINY_SHAPE},
            "pretrain": PRETRAIN,
        },
        "general_proxy": {
            "tokenizer": {"vocab_size": 350, "think_tokens": False},
            "tiny": {"architecture": "llama", **TINY_SHAPE},
            "pretrain": PRETRAIN,
        },
    },
}


def snakemake(workdir, *args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def copy_workflow(dest, config, git=False):
    """The workflow with ``config`` as its config.yaml in ``dest``; with ``git``, committed
    there as a repository (as users run it: provenance then records a revision)."""
    for part in ("Snakefile", "workflow", "config", "profiles", "slurm", "envs", "src"):
        src = ROOT / part
        if src.is_symlink():  # slurm -> profiles/slurm (`--profile slurm`)
            (dest / part).symlink_to(src.readlink())
        elif src.is_dir():
            shutil.copytree(
                src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy(src, dest / part)
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    notes = dest / "data" / "notes"
    notes.mkdir(parents=True)
    for i in range(12):
        (notes / f"note{i:02d}.txt").write_text(
            f"Lab note {i}: the sample was stirred for {i + 3} minutes at room temperature, "
            f"then left to settle overnight before weighing.\n"
        )
    if git:
        identity = ["-c", "user.name=stylemerge tests", "-c", "user.email=tests@invalid"]
        for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "run"]):
            subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    return dest


def test_builds_shards_tokenizers_and_models(workflow_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results = workflow_run / "results"
    for domain in ("bbc_news", "notes"):
        manifest = json.loads((results / "shards" / domain / "manifest.json").read_text())
        assert manifest["counts"]["kept"] == sum(
            s["documents"] for s in manifest["splits"].values()
        )
        assert manifest["provenance"]["seed"] == 7
        assert manifest["provenance"]["packages"]["snakemake"] == "9.27.1"
    assert (
        json.loads((results / "shards" / "notes" / "manifest.json").read_text())["filters"][
            "min_chars"
        ]
        == 20
    )

    for name, arch in (("base", "Qwen3ForCausalLM"), ("general_proxy", "LlamaForCausalLM")):
        model_dir = results / "models" / name
        metrics = json.loads((model_dir / "metrics.json").read_text())
        assert metrics["heldout_loss"] < metrics["heldout_loss_untrained"]
        assert (results / "benchmarks" / "pretrain_model" / f"{name}.tsv").is_file()
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
        assert type(model).__name__ == arch
        tok = AutoTokenizer.from_pretrained(model_dir)
        out = model.generate(
            **tok("Lab note", return_tensors="pt"), max_new_tokens=4, do_sample=False
        )
        assert out.shape[1] > 2
    base_tok = AutoTokenizer.from_pretrained(results / "models" / "base")
    assert (
        base_tok.decode(base_tok("<think>x</think>")["input_ids"], skip_special_tokens=True)
        == "<think>x</think>"
    )
    for log in ("build_shards/notes", "train_tokenizer/base", "pretrain_model/general_proxy"):
        assert (workflow_run / "logs" / f"{log}.log").is_file()


def test_rerun_has_nothing_to_do(workflow_run):
    assert "Nothing to be done" in snakemake(workflow_run, "-n", "--cores", "2", "all").stdout


def planned(stdout: str) -> dict[str, int]:
    """Rule -> job count from a dry run's "Job stats" table."""
    if "Job stats:" not in stdout:
        return {}
    counts = {}
    for line in stdout.split("Job stats:")[1].splitlines()[3:]:  # after "job count" and "---"
        row = line.split()
        if len(row) != 2 or not row[1].isdigit():
            break
        counts[row[0]] = int(row[1])
    return counts


def test_changing_one_domain_reruns_only_that_domain(workflow_run, tmp_path):
    config = yaml.safe_load((workflow_run / "config" / "config.yaml").read_text())
    config["domains"]["notes"]["shards"]["min_chars"] = 25
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    plan = snakemake(workflow_run, "all", "-n", "--cores", "2", "--configfile", str(changed))
    assert planned(plan.stdout)["build_shards"] == 1
    assert "output: results/shards/notes/train.jsonl" in plan.stdout
    assert "output: results/shards/bbc_news/train.jsonl" not in plan.stdout


def test_changing_one_domains_grpo_settings_reruns_only_its_adapter(workflow_run, tmp_path):
    config = yaml.safe_load((workflow_run / "config" / "config.yaml").read_text())
    config["domains"]["bbc_news"]["grpo"] = {"trainer": {"beta": 0.1}}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    plan = snakemake(workflow_run, "all", "-n", "--cores", "2", "--configfile", str(changed))
    assert planned(plan.stdout) == {
        "train_adapter": 1,
        "apply_adapter": 1,
        "merge_models": 2,
        "optimize_think_tokens": 1,
        "evaluate_lm": 4,
        "measure_diversity": 4,
        "make_tables": 1,
        "all": 1,
        "total": 15,
    }
    assert "wildcards: replicate=, domain=bbc_news" in plan.stdout  # seed 7: today's paths


def test_proxies_and_adapters(workflow_run):
    from peft import PeftConfig

    results = workflow_run / "results"
    for domain in ("bbc_news", "notes"):
        proxy = json.loads((results / "proxies" / domain / "metrics.json").read_text())
        assert set(proxy["heldout_loss_after"]) == {"bbc_news", "notes"}
        assert proxy["heldout_loss_after"][domain] < proxy["heldout_loss_before"][domain]
        adapter = results / "adapters" / domain
        assert PeftConfig.from_pretrained(adapter).r == 4
        metrics = json.loads((adapter / "metrics.json").read_text())
        assert metrics["steps"] == 3 and "style_contrast" in metrics["heldout"]
        assert (adapter / "log_history.csv").is_file()
        assert not (results / "checkpoints" / domain).exists()


def test_merges(workflow_run):
    from transformers import AutoModelForCausalLM

    results = workflow_run / "results"
    for name in ("karcher", "karcher_deltas"):
        merged = results / "merges" / name
        metrics = json.loads((merged / "metrics.json").read_text())
        assert set(metrics["entropy"]["inputs"]) == {"bbc_news", "notes"}
        assert metrics["entropy"]["merged"]["entropy"] > 0
        assert (merged / "mergekit_config.yml").is_file()
        assert AutoModelForCausalLM.from_pretrained(merged, use_safetensors=True) is not None
    for domain in ("bbc_news", "notes"):
        assert (results / "domain_models" / domain / "model.safetensors").is_file()


def test_think_tokens_of_the_chosen_merge_and_the_base(workflow_run):
    from transformers import AutoModelForCausalLM

    for name in ("karcher", "base"):
        out = workflow_run / "results" / "think" / name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["frozen_max_abs_change_overall"] == 0.0
        assert metrics["steps"] == 3
        assert AutoModelForCausalLM.from_pretrained(out, use_safetensors=True) is not None


def test_tables(workflow_run):
    import pandas as pd

    tables = workflow_run / "results" / "tables"
    adapters = pd.read_csv(tables / "adapters.csv")
    assert sorted(adapters["domain"]) == ["bbc_news", "notes"]
    assert sorted(pd.read_csv(tables / "merges.csv")["merge"]) == ["karcher", "karcher_deltas"]
    both = pd.read_csv(tables / "lambada.csv")
    # one row per model and text: out-of-domain (ao3_english, sharded whole) and in-domain
    assert list(dict.fromkeys(both["text"])) == ["out-of-domain", "in-domain"]
    ood = both[both["text"] == "out-of-domain"].set_index("model")
    ood_shard = json.loads(
        (workflow_run / "results" / "shards_ood" / "ao3_english" / "manifest.json").read_text()
    )
    assert list(ood_shard["splits"]) == ["heldout"] and ood_shard["heldout_fraction"] == 1.0
    assert ood["documents"].max() > 1 and (ood["perplexity"] > 1).all()
    lambada = both[both["text"] == "in-domain"].set_index("model")
    assert {"base", "karcher", "think_karcher", "domain_notes"} <= set(lambada.index)
    assert lambada.loc["base", "ppl_change_vs_base_pct"] == 0.0
    assert (lambada["perplexity"] > 1).all()
    # a new run records per-document values: every change has its interval
    assert lambada["vs_base_ci_low_pct"].notna().all()
    assert (lambada["perplexity_ci_low"] <= lambada["perplexity"]).all()
    bpb = pd.read_csv(tables / "bits_per_byte.csv")
    assert list(bpb.columns)[:4] == ["model", "bbc_news", "bbc_news_ci_low", "bbc_news_ci_high"]
    assert (bpb["notes"] > 0).all() and bpb["notes_ci_high"].notna().all()
    card = pd.read_csv(tables / "card.csv")
    assert card.loc[0, "claim"] == "lambada perplexity vs base" and card["ci_low"].notna().any()
    verdicts = {"agrees", "opposite", "not significant", "uninformative", "not measured"}
    assert set(card["verdict"]) <= verdicts
    assert (card["seeds"].dropna() == 1).all()  # one seed, and the card says so
    # the card reads the out-of-domain row; n is documents, fewer than the passages
    lambada_claim = card.set_index("claim").loc["lambada perplexity vs base"]
    assert lambada_claim["ours"] == pytest.approx(ood.loc["karcher", "ppl_change_vs_base_pct"])
    assert "out-of-domain text" in lambada_claim["detail"]
    passages = int(ood.loc["karcher", "passages"])  # 8, one from each of 8 documents
    assert lambada_claim["n"] == ood.loc["karcher", "documents"] <= passages
    assert f"{passages} passages" in lambada_claim["detail"]
    # n is documents: the in-domain mirror's passages come from fewer held-out documents
    assert lambada.loc["karcher", "documents"] < lambada.loc["karcher", "passages"]
    diversity = pd.read_csv(tables / "diversity.csv")
    assert set(diversity["domain"]) == {"bbc_news", "notes"}
    assert (diversity["distinct_1"] > 0).all()
    base = diversity[diversity["model"] == "base"]
    assert (base["distinct_1_change_vs_base_pct"] == 0).all()
    gsm8k = pd.read_csv(tables / "gsm8k_think.csv")
    assert sorted(gsm8k["model"]) == ["base", "karcher"]
    assert (gsm8k["problems"] == 4).all() and gsm8k["accuracy_optimised"].notna().all()
    for model in ("domain_notes", "karcher_deltas"):  # models: think skips the others
        tasks = json.loads((workflow_run / "results" / "eval" / model / "lm_eval.json").read_text())
        assert "stylemerge_gsm8k" not in tasks["tasks"] and tasks["tasks"], model
    cost = pd.read_csv(tables / "cost.csv")
    assert {"pretrain_model", "train_adapter", "merge_models"} <= set(cost["rule"])
    # every job that loads a model has its request beside its peak, and stayed under it
    requested = cost[cost["rule"].isin(["pretrain_model", "train_adapter", "evaluate_lm"])]
    assert (requested["mem_mb_requested"] > 0).all() and not cost["over_request"].any()
    provenance = json.loads((tables / "provenance.json").read_text())
    assert provenance["seed"] == REDUCED["seed"] and provenance["config_sha256"]


def test_every_result_records_its_stages_precision(workflow_run):
    """Each job's metrics record the precision its stage asked for (think: bf16, the rest:
    the top-level fp32), what ran, and why; think's rows trained under it."""
    results = workflow_run / "results"
    found = {}
    for path in [*results.rglob("metrics.json"), *results.rglob("lm_eval.json")]:
        stage = path.relative_to(results).parts[0]
        if stage == "tokenizers":  # no model runs there
            continue
        found[stage] = json.loads(path.read_text())["provenance"]["precision"]
        expected = "bf16" if stage == "think" else "fp32"
        assert found[stage]["requested"] == expected, path
        assert found[stage]["used"] in ("bf16", "fp32") and found[stage]["why"], path
    stages = {"models", "proxies", "adapters", "domain_models", "merges", "think", "eval"}
    assert stages <= set(found), set(found)
    think = json.loads((results / "think" / "karcher" / "metrics.json").read_text())
    used = think["provenance"]["precision"]["used"]
    assert think["precision"]["autocast"] == ("bfloat16" if used == "bf16" else None)
    assert think["precision"]["trained_rows"] == ["float32"]


def test_model_card_of_the_chosen_merge(workflow_run):
    import pandas as pd

    results = workflow_run / "results"
    merge = results / "merges" / "karcher"
    text = (merge / "README.md").read_text()
    assert text == (results / "tables" / "model_card.md").read_text()
    assert not (results / "merges" / "karcher_deltas" / "README.md").exists()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert {"base_model", "license", "library_name", "tags"} <= set(meta)
    assert (meta["base_model"], meta["license"]) == ("base", "apache-2.0")
    assert meta["library_name"] == "transformers" and "karcher" in meta["tags"]
    assert "datasets" not in meta  # builtin and local sources only
    assert "```yaml\n" + (merge / "mergekit_config.yml").read_text() + "```" in body
    for claim in pd.read_csv(results / "tables" / "card.csv")["claim"]:
        assert f"| {claim} " in body, claim
    revision = json.loads((merge / "metrics.json").read_text())["provenance"]["git"]["revision"]
    assert revision and f"| git revision | `{revision}` |" in body
    assert "hf upload <user>/<repo> results/merges/karcher" in body
    assert meta["base_model_relation"] == "merge"
    # what users download twice: the merge, and the merge with its think rows optimised,
    # each with its card and the run's measured claims about it in its model-index
    think = results / "think" / "karcher"
    think_text = (think / "README.md").read_text()
    assert think_text == (results / "tables" / "model_card_think.md").read_text()
    think_meta = yaml.safe_load(think_text[4:].split("\n---\n", 1)[0])
    assert think_meta["base_model_relation"] == "merge" and "think-tokens" in think_meta["tags"]
    assert "hf upload <user>/<repo> results/think/karcher" in think_text
    claims = {
        card: [r["dataset"]["name"] for r in m.get("model-index", [{}])[0].get("results", [])]
        for card, m in (("merge", meta), ("think", think_meta))
    }
    measured = pd.read_csv(results / "tables" / "card.csv").dropna(subset=["ours"])
    assert sorted(claims["merge"] + claims["think"]) == sorted(measured["claim"])
    assert claims["think"] and all("think" in claim for claim in claims["think"])
    # README.md came after the merge, into its directory: Snakemake reads the directory's
    # time from .snakemake_timestamp, so nothing downstream of the merge is outdated
    assert (merge / "README.md").stat().st_mtime > (merge / ".snakemake_timestamp").stat().st_mtime
    assert (think / "README.md").stat().st_mtime > (think / ".snakemake_timestamp").stat().st_mtime
    assert "Nothing to be done" in snakemake(workflow_run, "-n", "--cores", "2", "all").stdout


def test_report_holds_every_table_and_figure_with_its_caption(workflow_run, tmp_path):
    figures = workflow_run / "results" / "figures"
    names = {
        "reward_curves.png",
        "diversity_by_domain.png",
        "perplexity_by_model.png",
        "quality_diversity.png",
        "grpo_curves.png",
        "style_fluency.png",
        "bits_per_byte.png",
    }
    assert {p.name for p in figures.glob("*.png")} == names
    report = tmp_path / "report.html"
    snakemake(workflow_run, "all", "--report", str(report))
    html = report.read_text()
    # every figure and table file is a result of the report (rule code never names them)
    for name in (*names, "card.csv", "lambada.csv", "diversity.csv", "gsm8k_think.csv", "cost.csv"):
        assert name in html, name
    # captions from workflow/report/*.rst, rendered per file
    assert "GRPO training reward per step" in html
    assert "Cost of every job" in html


def test_editing_a_local_source_file_reruns_its_domain(workflow_run):
    note = workflow_run / "data" / "notes" / "note03.txt"
    text, stat = note.read_text(), note.stat()
    note.write_text(text + "Added a line.\n")
    try:
        plan = snakemake(workflow_run, "all", "-n", "--cores", "2").stdout
    finally:  # workflow_run is shared by the session: leave it as it was
        note.write_text(text)
        os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned(plan)["build_shards"] == 1
    assert "output: results/shards/notes/train.jsonl" in plan
    assert "output: results/shards/bbc_news/train.jsonl" not in plan


def test_invalid_config_stops_before_any_job(tmp_path):
    bad = {**REDUCED, "shards": {"min_char": 5}}
    workdir = copy_workflow(tmp_path, bad)
    result = snakemake(workdir, "-n", "--cores", "1", "all", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'shards.min_char': unknown key (did you mean 'min_chars'?)" in output
    assert not (workdir / "results").exists()


def test_paper_config_plans_hub_models_without_building_any(tmp_path):
    workdir = copy_workflow(tmp_path, REDUCED)
    plan = snakemake(workdir, "all", "-n", "--cores", "8", "--configfile", "config/paper.yaml")
    assert planned(plan.stdout) == {
        "build_shards": 9,
        "index_shards": 1,
        "train_proxy": 9,
        "train_adapter": 9,
        "apply_adapter": 9,
        "merge_models": 5,
        "optimize_think_tokens": 2,
        "evaluate_lm": 9,
        "measure_diversity": 9,
        "make_tables": 1,
        "all": 1,
        "total": 64,
    }
    # GPU jobs ask for a GPU (the Slurm profile maps the resource to the cluster's form)
    adapter_job = plan.stdout.split("rule train_adapter:")[1].split("\n\n")[0]
    assert "gpu=1" in adapter_job


def test_a_second_seed_runs_only_its_own_jobs_and_the_card_pools_both(workflow_run, tmp_path):
    """replicates [7, 11] after the seed-7 run: the plan holds seed 11's GRPO-onward jobs
    alone (shards, tokenizers, models and proxies are shared), they run under seeds/11/ with
    seed 11, and results/pooled holds the card over both seeds."""
    import pandas as pd

    config = yaml.safe_load((workflow_run / "config" / "config.yaml").read_text())
    config["replicates"] = [7, 11]
    two = tmp_path / "two_seeds.yaml"
    two.write_text(yaml.safe_dump(config))
    plan = snakemake(workflow_run, "all", "-n", "--cores", "2", "--configfile", str(two))
    counts = planned(plan.stdout)
    assert counts["train_adapter"] == 2 and counts["make_tables"] == 1
    assert counts["pool_replicates"] == 1
    for shared in ("build_shards", "train_tokenizer", "pretrain_model", "train_proxy"):
        assert shared not in counts
    lines = plan.stdout.splitlines()
    outputs = [line.split("output: ", 1)[1] for line in lines if "output: " in line]
    assert all(o.startswith(("results/seeds/11/", "results/pooled")) for o in outputs), outputs

    snakemake(workflow_run, "--cores", "2", "all", "--configfile", str(two))
    seed11 = workflow_run / "results" / "seeds" / "11"
    adapter = json.loads((seed11 / "adapters" / "bbc_news" / "metrics.json").read_text())
    assert adapter["provenance"]["seed"] == 11
    first = workflow_run / "results" / "adapters" / "bbc_news" / "metrics.json"
    first = json.loads(first.read_text())
    assert first["provenance"]["seed"] == 7
    # the shared proxy was used by both: no second copy
    assert not (seed11 / "proxies").exists()
    assert (seed11 / "tables" / "card.csv").is_file()
    pooled = pd.read_csv(workflow_run / "results" / "pooled" / "card.csv")
    assert list(pooled["claim"]) == list(
        pd.read_csv(workflow_run / "results" / "tables" / "card.csv")["claim"]
    )
    lambada = pooled.set_index("claim").loc["lambada perplexity vs base"]
    assert lambada["seeds"] == 2 and "seeds 7: " in lambada["detail"]
    assert lambada["ci_low"] <= lambada["ours"] <= lambada["ci_high"]
    pooled_lambada = pd.read_csv(workflow_run / "results" / "pooled" / "lambada.csv")
    assert pooled_lambada.loc[0, "vs_base_seeds"] == 2
    # with the default config (replicates unset) the run is seed 7's again: nothing to do
    assert "Nothing to be done" in snakemake(workflow_run, "-n", "--cores", "2", "all").stdout
