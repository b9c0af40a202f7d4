import json
import math
import os
import runpy
import types
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ANSWER_PATTERN, ROOT, TEST_DOMAINS, extract_answer, read_jsonl
from stylemerge.core.files import sha256_file
from stylemerge.core.job import JobSettings
from stylemerge.data import arithmetic
from stylemerge.data.shards import read_shard, write_shard_index
from stylemerge.evaluate.harness import evaluate_lm, hflm_class, lean_harness, make_hflm
from stylemerge.evaluate.task_data import (
    BPB,
    GSM8K,
    LAMBADA,
    LAMBADA_OOD,
    TEMPLATES,
    lambada_passages,
    prepare_task_data,
)

HARNESS_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"
SEED, HELDOUT_FRACTION = 7, 0.25
# small enough for seconds on one busy core; lambada from github_python too: the test shards
# hold only two held-out bbc_news documents
SETTINGS = {
    "tasks": [{"name": LAMBADA}, {"name": GSM8K}, {"name": BPB}],
    "batch_size": 8,
    "limit": None,
    "max_length": 512,  # the test model's max_position_embeddings is 128 (RoPE runs longer)
    "bootstrap_iters": 100,
    "samples": 2,
    "lambada": {
        "domains": ["bbc_news", "github_python"],
        "min_words": 20,
        "max_words": 120,
        "max_passages": 12,
    },
    "gsm8k": {"train": 12, "heldout": 6, "max_gen_toks": 16},
    "bpb": {"max_documents": 3},
}


def heldout(shards) -> dict:
    return {domain: shards[domain]["heldout"] for domain in TEST_DOMAINS}


@pytest.fixture(scope="module")
def task_dir(shards, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lm_tasks")
    return prepare_task_data(heldout(shards), out, SETTINGS, SEED, HELDOUT_FRACTION)


@pytest.fixture(scope="module")
def evaluated(tiny_base, shards, tmp_path_factory) -> tuple[Path, dict]:
    """One real lm-eval run of every packaged task, through the Snakemake script."""
    root = tmp_path_factory.mktemp("eval")
    out = root / "results" / "eval" / "base" / "lm_eval.json"
    index = root / "results" / "shards" / "heldout_index.json"
    write_shard_index(shards["heldout"], index)
    snakemake = types.SimpleNamespace(
        input=types.SimpleNamespace(model=str(tiny_base), heldout=str(index), ood=[]),
        params=types.SimpleNamespace(
            job={
                "seed": SEED,
                "device": "cpu",
                "precision": "fp32",
                "trust_remote_code": False,
                "allow_pickle_weights": False,
            },  # fmt: skip
            model={"ref": None, "revision": None},
            settings=SETTINGS,
            arithmetic_heldout_fraction=HELDOUT_FRACTION,
        ),
        resources=types.SimpleNamespace(tmpdir=str(root / "tmp")),
        output=[str(out)],
        log=[str(root / "logs" / "evaluate_lm" / "base.log")],
        wildcards=types.SimpleNamespace(eval_model="base"),
        threads=1,
        config={"seed": SEED, "evaluate": {"comparisons": {}}},
    )
    script = ROOT / "workflow" / "scripts" / "evaluate_lm.py"
    runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    return root, json.loads(out.read_text(encoding="utf-8"))


def harness_yaml(path: str) -> dict:
    return yaml.safe_load((HARNESS_TASKS / path).read_text(encoding="utf-8"))


def load_task(task_manager, spec):
    (task,) = task_manager.load([spec])["tasks"].values()
    return task


# --- lambada-style passages ---------------------------------------------------------------------


def test_lambada_passages_end_in_a_plain_word_with_single_spaces():
    text = (
        "The river rose overnight.\nResidents moved their cars   to higher ground! "
        'Water reached 2.5m. It then fell back to its usual level. "Never again," said Ann.'
    )
    passages = lambada_passages(text, min_words=4, max_words=12)
    # "2.5m." ends no passage (not a plain word): that passage runs on to "level"; the quoted
    # "Ann." is plain after its punctuation goes
    assert passages == [
        "The river rose overnight",
        "Residents moved their cars to higher ground",
        "Water reached 2.5m. It then fell back to its usual level",
        '"Never again," said Ann',
    ]
    # a run longer than max_words is dropped, the next passage starts after it
    assert lambada_passages("one two three four five. six seven eight.", 3, 4) == [
        "six seven eight"
    ]
    with pytest.raises(ValueError, match="min_words"):
        lambada_passages(text, min_words=5, max_words=4)


# --- the packaged tasks -------------------------------------------------------------------------


def test_prepare_task_data_writes_tasks_lm_eval_finds_alone(task_dir, shards):
    from lm_eval.tasks import TaskManager

    include = Path(task_dir["include_path"])
    manager = TaskManager(include_path=include, include_defaults=False)
    domain_tasks = [f"{BPB}_{d}" for d in sorted(TEST_DOMAINS)]
    assert set(manager.all_subtasks) == {LAMBADA, GSM8K, *domain_tasks}
    assert manager.all_groups == [BPB] and manager.all_tags == ["stylemerge"]
    for files in task_dir["tasks"].values():
        for info in files.values():
            assert sha256_file(info["file"]) == info["sha256"]
            assert len(Path(info["file"]).read_text().splitlines()) == info["documents"]
    # bits per byte: a domain's held-out documents as they are, at most max_documents
    for domain in TEST_DOMAINS:
        info = task_dir["tasks"][f"{BPB}_{domain}"]["test"]
        texts = [json.loads(line)["text"] for line in Path(info["file"]).read_text().splitlines()]
        assert texts == [r["text"] for r in read_shard(shards[domain]["heldout"])][:3]


def test_gsm8k_style_data_are_held_out_problems_with_train_shots(task_dir):
    files = task_dir["tasks"][GSM8K]
    docs = {
        split: [json.loads(line) for line in Path(files[split]["file"]).read_text().splitlines()]
        for split in ("train", "test")
    }
    assert len(docs["train"]) == 12 and len(docs["test"]) == 6
    for split, expected in (("train", "train"), ("test", "heldout")):
        for doc in docs[split]:
            assert arithmetic.problem_split(doc, HELDOUT_FRACTION) == expected
            assert doc["answer"].startswith("<think> ")
            assert extract_answer(doc["answer"]) == doc["number"]
    with pytest.raises(ValueError, match="ao3_english"):
        prepare_task_data(
            {},
            task_dir["include_path"] + "_x",
            {**SETTINGS, "lambada": {**SETTINGS["lambada"], "domains": ["ao3_english"]}},
            SEED,
            HELDOUT_FRACTION,
            tasks=[LAMBADA],
        )


def test_out_of_domain_lambada_task_reads_its_own_shards_outside_the_tag(shards, tmp_path):
    """stylemerge_lambada_ood: the same passages and template, from the out-of-domain shards
    (here bbc_news's train split, standing for text no domain trained on), under its own name
    and outside the tag stylemerge; without those shards, a clear error."""
    ood = {"elsewhere": shards["bbc_news"]["train"]}
    written = prepare_task_data({}, tmp_path, SETTINGS, SEED, HELDOUT_FRACTION, [LAMBADA_OOD], ood)
    task = yaml.safe_load((tmp_path / f"{LAMBADA_OOD}.yaml").read_text())
    assert task["task"] == LAMBADA_OOD and "tag" not in task
    assert (
        task["doc_to_target"]
        == yaml.safe_load((TEMPLATES / f"{LAMBADA}.yaml").read_text())["doc_to_target"]
    )
    docs = read_jsonl(written["tasks"][LAMBADA_OOD]["test"]["file"])
    ids = {r["id"] for r in read_jsonl(shards["bbc_news"]["train"])}
    assert docs and {d["document"] for d in docs} <= ids and len(docs) <= 12  # max_passages
    assert {d["domain"] for d in docs} == {"elsewhere"}
    with pytest.raises(ValueError, match="lambada_ood.sources"):
        prepare_task_data({}, tmp_path / "x", SETTINGS, SEED, HELDOUT_FRACTION, [LAMBADA_OOD])


def test_lambada_task_is_the_harness_lambada_openai_on_our_passages(task_dir):
    """The harness's own lambada_openai definition, given our data, renders every document
    exactly as our task does: context, then " " + the last word."""
    from lm_eval.tasks import TaskManager

    include = Path(task_dir["include_path"])
    ours = yaml.safe_load((include / f"{LAMBADA}.yaml").read_text())
    theirs = harness_yaml("lambada/lambada_openai.yaml")
    same = ("output_type", "test_split", "doc_to_text", "doc_to_target", "metric_list")
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}

    manager = TaskManager(include_path=include, include_defaults=False)
    task = load_task(manager, LAMBADA)
    mirror = load_task(
        manager,
        {
            **theirs,
            "task": "lambada_openai_here",
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": ours["dataset_kwargs"],
        },
    )
    docs = list(task.test_docs())
    assert len(docs) == 12 and {d["domain"] for d in docs} == {"bbc_news", "github_python"}
    for doc in docs:
        context, target = task.doc_to_text(doc), task.doc_to_target(doc)
        assert (context, target) == (mirror.doc_to_text(doc), mirror.doc_to_target(doc))
        assert context + target == doc["text"] and target == " " + doc["text"].split()[-1]
        assert target[1:].isalpha() and "\n" not in doc["text"] and "  " not in doc["text"]


def test_gsm8k_prompt_is_the_harness_gsm8k_prompt_and_the_trace_format(task_dir):
    """The harness's own gsm8k definition, given our data, builds the same 3-shot prompt as
    our task, which is stylemerge.data.arithmetic's few-shot format with think tags."""
    from lm_eval.tasks import TaskManager

    include = Path(task_dir["include_path"])
    ours = yaml.safe_load((include / f"{GSM8K}.yaml").read_text())
    theirs = harness_yaml("gsm8k/gsm8k.yaml")
    same = ("doc_to_text", "doc_to_target", "metric_list", "filter_list", "output_type")
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    strict = next(f for f in theirs["filter_list"] if f["name"] == "strict-match")
    assert strict["filter"][0]["regex_pattern"] == ANSWER_PATTERN.pattern  # the tests' oracle
    assert ours["generation_kwargs"] == {**theirs["generation_kwargs"], "max_gen_toks": 16}
    assert ours["num_fewshot"] == 3

    manager = TaskManager(include_path=include, include_defaults=False)
    task = load_task(manager, GSM8K)
    mirror = load_task(
        manager,
        {
            **theirs,
            "task": "gsm8k_here",
            "tag": [],
            "dataset_name": None,
            "dataset_path": "json",
            "dataset_kwargs": ours["dataset_kwargs"],
        },
    )
    task.set_fewshot_seed(SEED)
    mirror.set_fewshot_seed(SEED)
    train = {d["question"]: d for d in task.training_docs()}
    for doc in task.test_docs():
        prompt = task.fewshot_context(doc, num_fewshot=3)
        assert prompt == mirror.fewshot_context(doc, num_fewshot=3)
        *shots, last = prompt.split(arithmetic.FEWSHOT_DELIMITER)
        assert last == arithmetic.format_question(doc) and len(shots) == 3
        examples = [train[shot.split("\n", 1)[0].removeprefix("Question: ")] for shot in shots]
        as_problem = [
            {
                "question": e["question"],
                "answer": e["number"],
                "reasoning": e["answer"].split("<think> ", 1)[1].split(" </think>", 1)[0],
            }
            for e in examples
        ]
        assert prompt == arithmetic.fewshot_prompt(as_problem, doc)
        assert prompt.count("<think>") == prompt.count("</think>") == 3


# --- lm-eval runs -------------------------------------------------------------------------------


def test_lm_eval_runs_every_packaged_task_to_the_fixed_path(evaluated):
    root, result = evaluated
    out_dir = root / "results" / "eval" / "base"
    assert sorted(p.name for p in out_dir.iterdir()) == ["lm_eval.json"]
    assert list((root / "tmp").iterdir()) == []  # the task data were temporary
    tasks = result["tasks"]
    assert set(tasks) == {LAMBADA, GSM8K, *(f"{BPB}_{d}" for d in TEST_DOMAINS)}

    lambada = tasks[LAMBADA]
    assert lambada["n_samples"] == {"original": 12, "effective": 12}
    assert math.isfinite(lambada["metrics"]["perplexity"]["none"])
    assert lambada["metrics"]["perplexity"]["none"] > 1
    assert 0 <= lambada["metrics"]["acc"]["none"] <= 1
    assert lambada["higher_is_better"] == {"perplexity": False, "acc": True}
    # per-document values: the perplexity is exp(-mean) of the targets' log-likelihoods
    per_doc = lambada["per_document"]
    assert per_doc["doc_id"] == list(range(12))
    lls = per_doc["values"]["perplexity"]["none"]
    assert math.isclose(math.exp(-sum(lls) / len(lls)), lambada["metrics"]["perplexity"]["none"])
    assert sum(per_doc["values"]["acc"]["none"]) / 12 == lambada["metrics"]["acc"]["none"]
    # and the held-out document each passage was cut from: the unit intervals resample
    assert len(per_doc["document"]) == 12
    assert {d.split("/")[0] for d in per_doc["document"]} <= set(TEST_DOMAINS)

    gsm = tasks[GSM8K]
    assert gsm["n_shot"] == 3 and gsm["n_samples"]["effective"] == 6
    assert set(gsm["metrics"]["exact_match"]) == {"strict-match", "flexible-extract"}
    assert len(gsm["generations"]) == 2 and gsm["generation_kwargs"]["max_gen_toks"] == 16
    correct = gsm["per_document"]["values"]["exact_match"]["strict-match"]
    assert len(correct) == 6 and set(correct) <= {0.0, 1.0}
    assert sum(correct) / 6 == gsm["metrics"]["exact_match"]["strict-match"]
    assert gsm["per_document"]["document"] == gsm["per_document"]["doc_id"]  # each its own
    assert gsm["dataset"]["kwargs"]["data_files"] == {
        "train": "data/gsm8k_train.jsonl",
        "test": "data/gsm8k_test.jsonl",
    }

    for domain in TEST_DOMAINS:
        metrics = tasks[f"{BPB}_{domain}"]["metrics"]
        assert set(metrics) == {"bits_per_byte", "byte_perplexity", "word_perplexity"}
        bpb = metrics["bits_per_byte"]["none"]
        assert 0 < bpb < 16 and math.isclose(2**bpb, metrics["byte_perplexity"]["none"])
        pairs = tasks[f"{BPB}_{domain}"]["per_document"]["values"]["bits_per_byte"]["none"]
        ll, size = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        assert math.isclose(-ll / size / math.log(2), bpb)
    group = result["groups"][BPB]
    assert sorted(group["tasks"]) == sorted(f"{BPB}_{d}" for d in TEST_DOMAINS)
    assert group["metrics"]["bits_per_byte"]["none"] > 0

    info = result["lm_eval"]
    assert info["version"] == "0.4.13" and info["include_defaults"] is False
    assert info["device"] == "cpu" and info["seeds"]["fewshot_seed"] == SEED
    provenance = result["provenance"]
    assert provenance["seed"] == SEED and provenance["config_sha256"]
    assert provenance["packages"]["lm_eval"] == "0.4.13"
    assert result["task_data"][LAMBADA]["test"]["file"] == "data/lambada_test.jsonl"
    log = (root / "logs" / "evaluate_lm" / "base.log").read_text()
    assert "Running loglikelihood_rolling requests" in log


def test_the_tables_read_intervals_from_a_real_result(evaluated):
    from stylemerge.report.tables import bpb_table, gsm8k_table, lambada_table

    _, result = evaluated
    evals = {"base": result, "again": result}  # the same passages twice: a paired change of 0
    lambada = lambada_table(evals).set_index("model").loc["again"]
    assert lambada["perplexity_ci_low"] < lambada["perplexity"] < lambada["perplexity_ci_high"]
    assert lambada["vs_base_ci_low_pct"] == lambada["vs_base_ci_high_pct"] == 0.0
    assert lambada["passages"] == 12
    bpb = bpb_table(evals, TEST_DOMAINS).iloc[0]
    for domain in TEST_DOMAINS:
        assert bpb[f"{domain}_ci_low"] <= bpb[domain] <= bpb[f"{domain}_ci_high"]
    gsm = gsm8k_table(evals, {"base": "again"}).iloc[0]
    assert gsm["problems"] == 6 and gsm["mcnemar_p"] == 1.0
    assert gsm["original_ci_low"] <= gsm["accuracy_original"] <= gsm["original_ci_high"]


def oracle_generate(answers):
    """An HFLM._model_generate that answers each prompt's last question correctly, in the
    trace format, and runs on into the next question (as a model would)."""

    def generate(self, context, max_length, stop, **kwargs):
        rows = []
        for row, mask in zip(context.tolist(), kwargs["attention_mask"].tolist(), strict=True):
            prompt = self.tokenizer.decode([t for t, m in zip(row, mask, strict=True) if m])
            question = prompt.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")
            reply = f" {answers[question]}\n\nQuestion: And then?"
            rows.append(row + self.tokenizer(reply, add_special_tokens=False)["input_ids"])
        width, pad = max(map(len, rows)), self.tokenizer.pad_token_id or 0
        return torch.tensor([row + [pad] * (width - len(row)) for row in rows])

    return generate


def test_generations_keep_think_tags_and_score(task_dir, tiny_base, tmp_path, monkeypatch):
    test_file = task_dir["tasks"][GSM8K]["test"]["file"]
    docs = [json.loads(line) for line in Path(test_file).read_text().splitlines()]
    monkeypatch.setattr(
        hflm_class(), "_model_generate", oracle_generate({d["question"]: d["answer"] for d in docs})
    )
    out = tmp_path / "results" / "eval" / "oracle" / "lm_eval.json"
    settings = {
        **SETTINGS,
        "tasks": [{"name": GSM8K, "num_fewshot": 1}],
        "batch_size": 4,
        "limit": 4,
        "max_length": 512,
        "samples": 4,
    }
    result = evaluate_lm(
        JobSettings(seed=SEED, provenance={"seed": SEED}),
        tiny_base,
        out,
        settings,
        include_path=task_dir["include_path"],
    )
    gsm = json.loads(out.read_text())["tasks"][GSM8K]
    assert gsm == result["tasks"][GSM8K]
    assert gsm["n_shot"] == 1 and gsm["n_samples"]["effective"] == 4
    assert gsm["metrics"]["exact_match"]["strict-match"] == 1.0
    for generation in gsm["generations"]:
        assert generation["generation"].startswith(" <think> ")
        assert " </think> #### " in generation["generation"]
        assert "Question:" not in generation["generation"]  # cut at the stop sequence
        assert generation["filtered"]["strict-match"] == generation["doc"]["number"]


def test_think_tags_survive_decoding_even_when_special(tiny_base):
    from lm_eval.models.huggingface import HFLM

    lm = make_hflm(JobSettings(), tiny_base)
    lm.tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    text = " <think> 3 * 4 = 12 </think> #### 12"
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"] + [lm.eot_token_id]
    assert "<think>" not in HFLM.tok_decode(lm, ids)  # what lm-eval itself would return
    assert lm.tok_decode(ids) == text  # think tags kept, the end-of-text token still skipped
    assert lm.tok_decode(ids, skip_special_tokens=False).endswith(text + lm.tokenizer.eos_token)
    assert str(lm.device) == "cpu"


def test_lean_harness_renders_the_same_and_restores_lm_eval(monkeypatch):
    import lm_eval.evaluator
    import lm_eval.utils

    monkeypatch.delenv("DISABLE_MULTIPROC", raising=False)
    before = (lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template)
    doc = {"question": "What is 2 + 3?", "answer": "5"}
    template = "Question: {{question}}\nAnswer: {{answer | regex_replace('5', 'five')}}"
    expected = lm_eval.utils.apply_template(template, doc)
    with lean_harness():
        assert lm_eval.utils.apply_template(template, doc) == expected
        assert lm_eval.utils.apply_template(template, doc) == expected  # from the cache
        results = {}
        lm_eval.evaluator.add_env_info(results)
        assert results == {}  # no pip list, no collect_env
        assert os.getenv("DISABLE_MULTIPROC")  # the bootstrap stays in-process
    assert (lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template) == before
    assert "DISABLE_MULTIPROC" not in os.environ


def test_task_errors_name_the_task(task_dir, tiny_base, tmp_path):
    out = tmp_path / "lm_eval.json"
    with pytest.raises(ValueError, match="stylemerge_nope.*stylemerge_gsm8k"):
        evaluate_lm(
            JobSettings(),
            tiny_base,
            out,
            {**SETTINGS, "tasks": [{"name": "stylemerge_nope"}]},
            include_path=task_dir["include_path"],
        )
    with pytest.raises(ValueError, match="prepare_task_data"):
        evaluate_lm(JobSettings(), tiny_base, out, {**SETTINGS, "tasks": [{"name": LAMBADA}]})
    assert not out.exists()
