import hashlib
import json

import pytest

from conftest import read_jsonl, write_jsonl
from stylemerge.core.files import DataError
from stylemerge.data.shards import build_shards, is_heldout, read_shard
from stylemerge.data.sources import builtin_corpora, read_source

DOMAINS = {
    "github_python",
    "github_javascript",
    "github_cpp",
    "arxiv_cs",
    "arxiv_math",
    "arxiv_physics",
    "wikipedia_english",
    "bbc_news",
    "ao3_english",
}


def shard(tmp_path, source, settings, domain="d", out="out"):
    out = tmp_path / out / domain
    manifest = build_shards(
        source, domain, settings, out / "train.jsonl", out / "heldout.jsonl", out / "manifest.json"
    )
    return manifest, read_jsonl(out / "train.jsonl"), read_jsonl(out / "heldout.jsonl")


def local(paths, **extra):
    return {
        "type": "local",
        "paths": [str(p) for p in paths],
        "format": "auto",
        "text_field": "text",
        "id_field": None,
        **extra,
    }


def test_builtin_corpus_covers_nine_domains_with_enough_text():
    assert set(builtin_corpora()) == DOMAINS
    for domain in DOMAINS:
        docs = list(read_source({"type": "builtin"}, domain))
        assert len(docs) >= 20, domain
        assert sum(len(d.text.encode()) for d in docs) >= 20_000, domain
        assert len({d.text for d in docs}) == len(docs), f"{domain}: duplicate documents"


def test_builtin_shards_and_manifest(tmp_path, shard_settings):
    manifest, train, heldout = shard(
        tmp_path, {"type": "builtin"}, shard_settings, domain="bbc_news"
    )
    out = tmp_path / "out" / "bbc_news"
    assert manifest["counts"]["kept"] == len(train) + len(heldout) == manifest["counts"]["read"]
    for name, records in (("train", train), ("heldout", heldout)):
        split = manifest["splits"][name]
        assert split["documents"] == len(records) > 0
        assert split["characters"] == sum(len(r["text"]) for r in records)
        assert split["sha256"] == hashlib.sha256((out / f"{name}.jsonl").read_bytes()).hexdigest()
    assert set(train[0]) == {"id", "domain", "text", "origin", "truncated"}
    assert train[0]["domain"] == "bbc_news"
    assert manifest["filters"] == {
        k: shard_settings[k] for k in ("min_chars", "max_chars", "max_documents", "dedupe")
    }
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_an_out_of_domain_source_is_held_out_whole(tmp_path, shard_settings):
    """No train path: every kept document is held out (text the run never trains on)."""
    whole, _, split = shard(tmp_path, {"type": "builtin"}, shard_settings, domain="ao3_english")
    out = tmp_path / "ood"
    manifest = build_shards(
        {"type": "builtin"}, "ao3_english", shard_settings, None, out / "h.jsonl", out / "m.json"
    )
    assert list(manifest["splits"]) == ["heldout"] and manifest["heldout_fraction"] == 1.0
    heldout = read_jsonl(out / "h.jsonl")
    assert len(heldout) == manifest["counts"]["kept"] == whole["counts"]["kept"] > len(split)
    assert not (out / "train.jsonl").exists()


def test_builtin_corpus_can_be_named_explicitly(tmp_path, shard_settings):
    _, train, _ = shard(
        tmp_path, {"type": "builtin", "corpus": "arxiv_math"}, shard_settings, domain="maths"
    )
    assert all(r["id"].startswith("arxiv_math/") for r in train)


def test_unknown_builtin_corpus(tmp_path, shard_settings):
    with pytest.raises(DataError, match="no builtin corpus 'nope'.*available: ao3_english"):
        shard(tmp_path, {"type": "builtin"}, shard_settings, domain="nope")


def test_local_text_jsonl_and_json_sources(tmp_path, shard_settings):
    (tmp_path / "txt").mkdir()
    for i in range(3):
        (tmp_path / "txt" / f"doc{i}.txt").write_text(f"plain text document number {i}")
    write_jsonl(
        tmp_path / "a.jsonl", [{"text": f"json lines record {i}", "k": i} for i in range(3)]
    )
    (tmp_path / "b.json").write_text(
        json.dumps([f"uncheatable style string {i}" for i in range(3)])
    )
    (tmp_path / "c.json").write_text(
        json.dumps([{"body": f"object list item {i}"} for i in range(2)])
    )

    docs = list(
        read_source(
            local([tmp_path / "txt" / "*.txt", tmp_path / "a.jsonl", tmp_path / "b.json"]), "d"
        )
    )
    assert [d.text for d in docs[:3]] == [f"plain text document number {i}" for i in range(3)]
    assert docs[0].id.endswith("doc0.txt")
    assert docs[3].origin == {"path": str(tmp_path / "a.jsonl"), "line": 1}
    assert docs[6].text == "uncheatable style string 0" and docs[6].origin["index"] == 0
    assert len(docs) == 9

    objects = list(read_source(local([tmp_path / "c.json"], text_field="body"), "d"))
    assert [d.text for d in objects] == ["object list item 0", "object list item 1"]


def test_local_id_field(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "abc", "uid": 7}])
    (doc,) = read_source(local([tmp_path / "a.jsonl"], id_field="uid"), "d")
    assert doc.id == "7"


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b'{"text": "fine"}\n{"text": broken\n', r"a\.jsonl:2: malformed JSON"),
        (b'{"text": "fine"}\n{"body": "no text field"}\n', r"a\.jsonl:2: no field 'text'"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"a\.jsonl:2: not valid UTF-8"),
        (b'{"text": 5}\n', r"a\.jsonl:1: field 'text' is int"),
        (b'["a list"]\n', r"a\.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, pattern):
    (tmp_path / "a.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=pattern):
        list(read_source(local([tmp_path / "a.jsonl"]), "d"))


def test_non_utf8_text_file(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"good start \xff\xfe bad")
    with pytest.raises(DataError, match=r"x\.txt: not valid UTF-8 at byte 11"):
        list(read_source(local([tmp_path / "x.txt"]), "d"))


def test_unmatched_glob_is_an_error(tmp_path):
    with pytest.raises(DataError, match="domain 'd': no files match"):
        list(read_source(local([tmp_path / "missing" / "*.txt"]), "d"))


def test_hf_source_from_a_local_dataset(tmp_path, shard_settings):
    datasets = pytest.importorskip("datasets")
    rows = {
        "content": [f"hub document {i} " + "x" * i for i in range(40)],
        "category": ["news" if i % 2 else "code" for i in range(40)],
    }
    (tmp_path / "ds" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "ds" / "data" / "test.parquet"))
    spec = {
        "type": "hf",
        "path": str(tmp_path / "ds"),
        "name": None,
        "revision": None,
        "split": "test",
        "data_files": None,
        "text_field": "content",
        "id_field": None,
        "where": {"category": "news"},
        "streaming": True,
    }
    manifest, train, heldout = shard(tmp_path, spec, shard_settings)
    texts = {r["text"] for r in train + heldout}
    assert texts == {rows["content"][i] for i in range(1, 40, 2)}
    assert train[0]["origin"]["dataset"] == str(tmp_path / "ds")

    spec_capped = {**spec, "streaming": False}
    capped = {**shard_settings, "max_documents": 5}
    manifest, train, heldout = shard(tmp_path, spec_capped, capped, domain="capped")
    assert len(train) + len(heldout) == 5
    assert manifest["counts"]["stopped_at_max_documents"] is True

    with pytest.raises(
        DataError, match=r"ds\[test\] record 1: no field 'text' \(fields: content, category\)"
    ):
        list(read_source({**spec, "text_field": "text"}, "d"))


def test_split_is_a_function_of_the_id():
    ids = [f"doc-{i}" for i in range(2000)]
    first = [is_heldout(i, 0.2) for i in ids]
    assert first == [is_heldout(i, 0.2) for i in ids]
    assert 0.15 < sum(first) / len(ids) < 0.25


def test_adding_documents_does_not_move_existing_ones(tmp_path, shard_settings):
    def corpus(n):
        path = tmp_path / f"c{n}.jsonl"
        write_jsonl(path, [{"text": f"document number {i} with some text"} for i in range(n)])
        return local([path])

    _, train_a, heldout_a = shard(tmp_path, corpus(40), shard_settings, domain="a")
    _, train_b, heldout_b = shard(tmp_path, corpus(80), shard_settings, domain="b")
    assert {r["id"] for r in train_a} <= {r["id"] for r in train_b}
    assert {r["id"] for r in heldout_a} <= {r["id"] for r in heldout_b}
    # and rebuilding gives byte-identical shards
    _, train_c, heldout_c = shard(tmp_path, corpus(40), shard_settings, domain="a", out="again")
    assert (train_c, heldout_c) == (train_a, heldout_a)


def test_filters_dedupe_truncate_and_count(tmp_path, shard_settings):
    records = [{"text": "short"}]  # below min_chars=10
    records += [{"text": f"unique document {i}"} for i in range(12)]
    records += [{"text": "  unique document 3  "}]  # duplicate after stripping
    records += [{"text": "L" * 1500}]  # truncated to max_chars=1000
    write_jsonl(tmp_path / "a.jsonl", records)
    manifest, train, heldout = shard(tmp_path, local([tmp_path / "a.jsonl"]), shard_settings)
    counts = manifest["counts"]
    assert counts == {
        "read": 15,
        "kept": 13,
        "too_short": 1,
        "duplicates": 1,
        "truncated": 1,
        "stopped_at_max_documents": False,
    }
    long = [r for r in train + heldout if r["text"].startswith("L")]
    assert len(long) == 1 and len(long[0]["text"]) == 1000 and long[0]["truncated"] is True

    kept_dupes = {**shard_settings, "dedupe": False}
    manifest, train, heldout = shard(
        tmp_path, local([tmp_path / "a.jsonl"]), kept_dupes, domain="dupes"
    )
    assert manifest["counts"]["kept"] == 14
    assert len({r["id"] for r in train + heldout}) == 14  # equal texts still get distinct ids


def test_empty_domain_after_filtering_names_domain_and_filters(tmp_path, shard_settings):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "tiny"}, {"text": "small"}])
    with pytest.raises(
        DataError,
        match=r"domain 'd' is empty after filtering.*2 shorter than "
        r"min_chars.*'min_chars': 10",
    ):
        shard(tmp_path, local([tmp_path / "a.jsonl"]), shard_settings)
    assert not (tmp_path / "out" / "d" / "manifest.json").exists()


def test_empty_split_is_an_error(tmp_path, shard_settings):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "only one document here"}])
    with pytest.raises(DataError, match="split is empty"):
        shard(tmp_path, local([tmp_path / "a.jsonl"]), shard_settings)


def test_read_shard_rejects_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="shard not found"):
        list(read_shard(tmp_path / "none.jsonl"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: shard is empty"):
        list(read_shard(tmp_path / "empty.jsonl"))


def test_shard_index_names_every_domain_and_catches_stale_shards(tmp_path):
    from stylemerge.data.shards import read_shard_index, write_shard_index

    paths = []
    for domain in ("bbc_news", "ao3_english"):
        (tmp_path / domain).mkdir()
        paths.append(tmp_path / domain / "heldout.jsonl")
        paths[-1].write_text(json.dumps({"id": "1", "domain": domain, "text": "x" * 300}) + "\n")
    write_shard_index(paths, tmp_path / "heldout_index.json")
    assert read_shard_index(tmp_path / "heldout_index.json") == {
        "bbc_news": str(paths[0]),
        "ao3_english": str(paths[1]),
    }
    paths[1].write_text(json.dumps({"id": "2", "domain": "ao3_english", "text": "y"}) + "\n")
    with pytest.raises(DataError, match=r"heldout_index.json: shard .*ao3_english.* changed"):
        read_shard_index(tmp_path / "heldout_index.json")
    paths[1].unlink()
    with pytest.raises(DataError, match=r"heldout_index.json: shard .*ao3_english.* not found"):
        read_shard_index(tmp_path / "heldout_index.json")
