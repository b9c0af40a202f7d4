"""A comparison model that cannot be evaluated (not found, or pickle weights only): its
evaluation jobs record it unavailable with the reason, and the tables stay complete."""

import json
import runpy
import types
from pathlib import Path

import httpx2
import pandas as pd
import pytest
import torch
from test_tables import adapter, lm_eval, merge, noisy_lls, think

from conftest import ROOT, SCHEMA
from stylemerge.cli.cost import load_config
from stylemerge.core.job import JOB_CONFIG_KEYS, JobSettings
from stylemerge.models.availability import (
    UNAVAILABLE,
    looks_local,
    skip_unavailable_comparison,
    unavailable_reason,
)
from stylemerge.models.reference import ModelReference
from stylemerge.report.build import RunResults, TableSettings, make_tables
from stylemerge.workflow.snakemake_job import comparison_name

REASONS = {
    "pickle only": "no safetensors weights (weights: pytorch_model.bin)",
    "missing": "not found: no directory",
}


def comparison_dir(root: Path, case: str) -> Path:
    """The comparison model's directory: pickle weights only, or none at all."""
    path = root / "wave"
    if case == "pickle only":
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
        torch.save({"lm_head.weight": torch.zeros(2, 2)}, path / "pytorch_model.bin")
    return path


def run_script(script: str, ref: Path, out: Path, log: Path, name="wave"):
    """A workflow script as its rule runs it (evaluate.smk: the model is an input where it
    is a directory, else a reference in params), ``name`` a comparison model."""
    config = load_config(ROOT / "config" / "config.yaml", SCHEMA)
    config["evaluate"]["comparisons"] = {name: str(ref)}
    local = ref.is_dir()
    snakemake = types.SimpleNamespace(
        config=config,
        threads=1,
        rule=script,
        wildcards=types.SimpleNamespace(eval_model=name),
        log=[str(log)],
        input=types.SimpleNamespace(model=str(ref) if local else [], heldout=str(log) + ".none"),
        output=[str(out)],
        params=types.SimpleNamespace(
            job={key: config[key] for key in JOB_CONFIG_KEYS},
            model={"ref": None if local else str(ref), "revision": None},
            settings={},
            arithmetic_heldout_fraction=0.5,
        ),
        resources=types.SimpleNamespace(),
    )
    runpy.run_path(
        str(ROOT / "workflow" / "scripts" / f"{script}.py"), init_globals={"snakemake": snakemake}
    )


def write_diversity(out: Path, texts: list[str]) -> Path:
    out.mkdir(parents=True)
    rows = [
        {"domain": "bbc_news", "prompt_index": 0, "prompt": "p", "sample_index": k, "text": t}
        for k, t in enumerate(texts)
    ]
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    value = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_prompts": 1}
    metrics = {"bbc_news": {"distinct_1": value, "ead_1": value, "self_diversity": value}}
    (out / "metrics.json").write_text(json.dumps({"domains": metrics}))
    return out


@pytest.mark.parametrize("case", list(REASONS))
def test_an_unavailable_comparison_is_recorded_and_every_table_is_still_made(tmp_path, case):
    ref = comparison_dir(tmp_path, case)
    eval_dir = tmp_path / "eval"
    logs = tmp_path / "logs"
    run_script("evaluate_lm", ref, eval_dir / "wave" / "lm_eval.json", logs / "lm_eval.log")
    run_script("measure_diversity", ref, eval_dir / "wave" / "diversity", logs / "div.log")
    for log in ("lm_eval.log", "div.log"):  # the job's own log says which model, and why
        text = (logs / log).read_text()
        assert REASONS[case] in text and f"comparison model wave ({ref}) is unavailable" in text
        assert "ERROR" in text and "Traceback" not in text

    evals = [eval_dir / "wave" / "lm_eval.json"]
    lls = noisy_lls(n=50, seed=8)
    for model, result in (
        ("base", lm_eval(None, 0.3, bpb={"bbc_news": 1.3}, lls=lls)),
        ("karcher", lm_eval(None, 0.3, 0.5, {"bbc_news": 1.2}, lls=noisy_lls(50, 0.1, 9, lls))),
    ):
        evals.append(eval_dir / model / "lm_eval.json")
        evals[-1].parent.mkdir(parents=True)
        evals[-1].write_text(json.dumps(result))
    diversity = [
        write_diversity(eval_dir / "base" / "diversity", ["a a b", "a b b"]),
        write_diversity(eval_dir / "karcher" / "diversity", ["a b c", "a b d"]),
        eval_dir / "wave" / "diversity",
    ]
    results = tmp_path / "results"
    frames = make_tables(
        RunResults(
            [_write(results / "adapters" / "bbc_news", adapter(0.1, 0.02))],
            [_write(results / "merges" / "karcher", merge([4.0, 5.0], 4.4, 4.8))],
            [_write(results / "think" / "karcher", think(2.0, 1.9))],
            evals,
            diversity,
            tmp_path / "no-benchmarks",
        ),
        TableSettings(domains=["bbc_news"], chosen="karcher", comparison="wave"),
        tmp_path / "tables",
    )
    why = f"{ref}: {REASONS[case]}"
    assert set(frames) == {
        "card",
        *("lambada", "gsm8k_think", "bits_per_byte", "diversity"),
        *("adapters", "merges", "think", "cost"),
    }
    lambada = frames["lambada"].set_index("model")
    assert list(lambada.index) == ["base", "karcher", "wave"]
    assert lambada.loc["wave", UNAVAILABLE].startswith(why)
    assert pd.isna(lambada.loc["karcher", UNAVAILABLE])
    assert lambada.loc["karcher", "ppl_change_vs_base_pct"] < 0  # the rest is still measured
    for column in ("ppl_change_vs_comparison_pct", "vs_comparison_ci_low_pct"):
        assert (lambada[column] == UNAVAILABLE).all()
    assert frames["bits_per_byte"].set_index("model").loc["wave", UNAVAILABLE].startswith(why)
    assert frames["bits_per_byte"].set_index("model").loc["karcher", "bbc_news"] == 1.2
    diversity_rows = frames["diversity"].set_index("model")
    assert diversity_rows.loc["wave", "domain"] == "bbc_news"
    assert diversity_rows.loc["wave", UNAVAILABLE].startswith(why)
    assert diversity_rows.loc["karcher", "distinct_1_change_vs_base_pct"] > 0
    card = frames["card"].set_index("claim").loc["lambada perplexity vs wave"]
    assert card["verdict"] == "unavailable" and card["card"] == -3.21
    assert card["detail"].startswith(f"comparison model wave unavailable: {why}")
    assert frames["card"].set_index("claim").loc["lambada perplexity vs base", "ours"] < 0
    written = pd.read_csv(tmp_path / "tables" / "lambada.csv").set_index("model")
    assert written.loc["karcher", "ppl_change_vs_comparison_pct"] == UNAVAILABLE
    assert REASONS[case] in (tmp_path / "tables" / "card.md").read_text()


def _write(path: Path, metrics: dict) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_only_a_comparison_is_recorded_unavailable(tmp_path):
    ref = ModelReference(str(comparison_dir(tmp_path, "pickle only")))
    out = tmp_path / "lm_eval.json"
    assert not skip_unavailable_comparison(None, ref, JobSettings(), out)  # loading fails it
    assert not out.exists()
    # pickle weights allowed: it is loaded; a directory without weights is broken: it fails
    assert unavailable_reason(ref, allow_pickle_weights=True) is None
    (tmp_path / "wave" / "pytorch_model.bin").unlink()
    assert unavailable_reason(ref) is None
    (tmp_path / "wave" / "model.safetensors").write_bytes(b"")
    assert unavailable_reason(ref) is None
    wildcards = types.SimpleNamespace(eval_model="karcher")
    config = {"evaluate": {"comparisons": {"wave": "org/wave"}}}
    assert comparison_name(types.SimpleNamespace(wildcards=wildcards, config=config)) is None
    assert looks_local("/a/b") and looks_local("results/models/x") and looks_local("./x")
    assert not looks_local("Lambent/Qwen3-4B-Base-Continued-GRPO-Wave")


def _hub_error(kind: str):
    from huggingface_hub import errors

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/x"))
    return getattr(errors, kind)("gone", response=response)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("RepositoryNotFoundError", "not found on the Hugging Face hub"),
        ("RevisionNotFoundError", "not found on the Hugging Face hub: no revision 'abc'"),
        (["config.json", "pytorch_model.bin"], "no safetensors weights (weights: pytorch_model"),
        (["config.json", "model.safetensors"], None),
    ],
)
def test_a_hub_comparison_not_found_or_without_safetensors(monkeypatch, answer, expected):
    from huggingface_hub import HfApi, constants

    def model_info(self, repo_id, revision=None, files_metadata=False):
        if isinstance(answer, str):
            raise _hub_error(answer)
        return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=f) for f in answer])

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", model_info)
    reason = unavailable_reason(ModelReference("Lambent/Wave", "abc"))
    assert reason == expected or reason.startswith(expected)


def test_a_gated_or_unreachable_hub_comparison_still_fails(monkeypatch):
    from huggingface_hub import HfApi, constants

    def gated(self, *args, **kwargs):
        raise _hub_error("GatedRepoError")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", gated)
    with pytest.raises(OSError):
        unavailable_reason(ModelReference("Lambent/Wave"))


def test_the_memory_request_of_a_missing_local_comparison_needs_no_size(tmp_path):
    from stylemerge.resources.jobs import job_mem_mb

    config = load_config(ROOT / "config" / "config.yaml", SCHEMA)
    config["evaluate"]["comparisons"] = {"wave": str(tmp_path / "gone")}
    assert job_mem_mb(config, "evaluate_lm", "wave") > 0
