"""stylemerge_gsm8k_think: gsm8k's own data with think-tagged answers (paper scale), and the
gsm8k_think table's rows for it beside the stock gsm8k."""

from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SCHEMA, write_jsonl
from stylemerge.data import arithmetic
from stylemerge.evaluate.task_data import GSM8K_THINK, prepare_task_data
from stylemerge.report.claims import card_table
from stylemerge.report.tables import gsm8k_table
from stylemerge.report.values import reported
from stylemerge.workflow.config import ConfigError, validate_config

HARNESS_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"
SEED = 11


def record(n: int, split: str) -> dict:
    """A GSM8k record, its rationale with calculator annotations as in openai/gsm8k."""
    a, b = n + 2, 3 if split == "train" else 7
    return {
        "question": f"A box holds {a} rows of {b} pens. How many pens are in {n + 1} boxes?",
        "answer": f"One box holds {a}*{b} = <<{a}*{b}={a * b}>>{a * b} pens.\n"
        f"So {n + 1} boxes hold {a * b}*{n + 1} = <<{a * b}*{n + 1}={a * b * (n + 1)}>>"
        f"{a * b * (n + 1)} pens.\n#### {a * b * (n + 1):,}",
    }


@pytest.fixture(scope="module")
def gsm8k_dir(tmp_path_factory) -> Path:
    """A local GSM8k-format data set (train and test splits): what datasets.load_dataset
    reads in place of openai/gsm8k, with no network."""
    root = tmp_path_factory.mktemp("gsm8k")
    for split, count in (("train", 12), ("test", 5)):
        write_jsonl(root / f"{split}.jsonl", [record(n, split) for n in range(count)])
    return root


def settings(gsm8k_dir: Path, **overrides) -> dict:
    think = {
        "path": str(gsm8k_dir),
        "name": None,
        "revision": None,
        "test_split": "test",
        "fewshot_split": "train",
        "strip_calculator": True,
        "max_gen_toks": 24,
    }
    return {"gsm8k_think": {**think, **overrides}}


def test_the_task_shows_think_tagged_exemplars_in_the_training_format(gsm8k_dir, tmp_path):
    """gsm8k's own task definition, on gsm8k's records with the answers written as the think
    traces are: every 3-shot prompt plus its target is exactly a training trace
    (arithmetic.format_trace) of the same problems, calculator annotations removed."""
    from lm_eval.tasks import TaskManager

    written = prepare_task_data({}, tmp_path, settings(gsm8k_dir), SEED, 0.2, (GSM8K_THINK,))
    assert set(written["tasks"]) == {GSM8K_THINK}
    files = written["tasks"][GSM8K_THINK]
    assert {split: files[split]["documents"] for split in files} == {"train": 12, "test": 5}
    ours = yaml.safe_load((tmp_path / f"{GSM8K_THINK}.yaml").read_text())
    theirs = yaml.safe_load((HARNESS_TASKS / "gsm8k" / "gsm8k.yaml").read_text())
    same = ("doc_to_text", "doc_to_target", "metric_list", "filter_list", "output_type")
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    assert ours["generation_kwargs"] == {**theirs["generation_kwargs"], "max_gen_toks": 24}
    assert ours["num_fewshot"] == 3 and "stylemerge" not in ours["tag"]  # the tag: no hub

    raw = {
        split: list(arithmetic.from_gsm8k(record(n, split) for n in range(count)))
        for split, count in (("train", 12), ("test", 5))
    }
    train = {p["question"]: p for p in raw["train"]}
    task = TaskManager(include_path=tmp_path, include_defaults=False).load([GSM8K_THINK])
    (task,) = task["tasks"].values()
    task.set_fewshot_seed(SEED)
    docs = list(task.test_docs())
    assert [d["question"] for d in docs] == [p["question"] for p in raw["test"]]
    for doc, problem in zip(docs, raw["test"], strict=True):
        prompt = task.fewshot_context(doc, num_fewshot=3)
        *shots, _ = prompt.split(arithmetic.FEWSHOT_DELIMITER)
        examples = [train[shot.split("\n", 1)[0].removeprefix("Question: ")] for shot in shots]
        assert len(examples) == 3
        target = task.doc_to_target(doc)
        assert prompt + arithmetic.TARGET_DELIMITER + target == arithmetic.format_trace(
            examples, problem
        )
        assert prompt.count("<think>") == prompt.count("</think>") == 3 and "<<" not in prompt
        assert target.startswith("<think> ") and target.endswith(f" #### {problem['answer']}")
        assert "," not in problem["answer"]  # "#### 1,008" became 1008, as the traces have it

    kept = prepare_task_data(
        {}, tmp_path / "kept", settings(gsm8k_dir, strip_calculator=False), SEED, 0.2,
        (GSM8K_THINK,),
    )  # fmt: skip
    assert "<<" in Path(kept["tasks"][GSM8K_THINK]["test"]["file"]).read_text()


def test_paper_runs_it_on_the_think_pairs_in_the_traces_format():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    tasks = {t["name"]: t for t in paper["evaluate"]["lm_eval"]["tasks"]}
    assert tasks[GSM8K_THINK] == {"name": GSM8K_THINK, "num_fewshot": 3, "models": "think"}
    assert tasks["gsm8k"].get("models", "all") == "all"
    paper["think"]["data"]["strip_calculator"] = False
    with pytest.raises(ConfigError, match=r"gsm8k_think\.strip_calculator': True where think"):
        validate_config(paper, SCHEMA)
    paper["evaluate"]["lm_eval"]["gsm8k_think"]["strip_calculator"] = False
    validate_config(paper, SCHEMA)


def result(task: str, correct: list[int]) -> dict:
    return {
        "tasks": {
            task: {
                "metrics": {"exact_match": {"strict-match": sum(correct) / len(correct)}},
                "n_samples": {"effective": len(correct)},
                "per_document": {
                    "doc_id": list(range(len(correct))),
                    "values": {"exact_match": {"strict-match": [float(c) for c in correct]}},
                },
            }
        }
    }


def merged(*results: dict) -> dict:
    return {"tasks": {k: v for r in results for k, v in r["tasks"].items()}}


def test_the_table_reports_the_think_task_and_the_stock_gsm8k():
    """Original vs optimised rows on both prompts, the think-tagged one first (the card's
    claim reads it); the stock prompt's accuracy does not move (the tags never appear)."""
    stock = [1] * 9 + [0]
    evals = {
        "karcher": merged(result("gsm8k", stock), result(GSM8K_THINK, [1] * 6 + [0] * 4)),
        "think_karcher": merged(result("gsm8k", stock), result(GSM8K_THINK, [1] * 9 + [0])),
        "base": result("gsm8k", [1] * 5 + [0] * 5),  # its think task did not run
        "think_base": result("gsm8k", [1] * 5 + [0] * 5),
    }
    frame = gsm8k_table(evals, {"karcher": "think_karcher", "base": "think_base"})
    rows = frame[["model", "task", "accuracy_original", "accuracy_optimised", "change_points"]]
    assert rows.astype(object).where(rows.notna(), None).values.tolist() == [
        ["karcher", GSM8K_THINK, 60.0, 90.0, pytest.approx(30.0)],
        ["karcher", "gsm8k", 90.0, 90.0, 0.0],
        ["base", None, None, None, None],
        ["base", "gsm8k", 50.0, 50.0, 0.0],
    ]
    assert frame.iloc[0]["mcnemar_b"] == 0 and frame.iloc[0]["mcnemar_c"] == 3
    card = card_table({"gsm8k_think": frame}, reported(), "karcher")
    claim = card[card["claim"].str.startswith("gsm8k")].iloc[0]
    assert claim["ours"] == pytest.approx(30.0)


def test_the_stylemerge_tag_beside_it_still_writes_its_data(monkeypatch, tmp_path):
    """The tag stylemerge names the hub-free packaged tasks; the think task named beside it
    gets its data written too."""
    from stylemerge.core.job import JobSettings
    from stylemerge.evaluate import harness as evaluate

    wanted = []
    monkeypatch.setattr(
        evaluate,
        "prepare_task_data",
        lambda shards, out, settings, seed, fraction, tasks, ood_shards: (
            wanted.append(tasks) or {"include_path": str(out), "tasks": {}}
        ),
    )
    monkeypatch.setattr(evaluate, "evaluate_lm", lambda *args: None)
    tasks = [{"name": "stylemerge"}, {"name": GSM8K_THINK}]
    evaluate.run_lm_eval(JobSettings(), "m", {}, tmp_path / "out.json", {"tasks": tasks}, 0.2)
    assert GSM8K_THINK in wanted[0] and "stylemerge_gsm8k" in wanted[0]
