"""The benchmark's exported records: what a run commits so a fresh machine resumes it."""

from __future__ import annotations

import gzip
import json

from bench.validation.run import Cache, digest, export_records, import_records


def _item(kind: str, n: int) -> tuple[dict, dict]:
    inputs = {"task": "t", "model": f"m{n}", "kind": kind}
    key = digest(inputs)
    return {"kind": kind, "key": key}, {"dice": [0.5 + n / 10], "inputs": inputs}


def test_export_then_import_fills_an_empty_cache(tmp_path):
    pairs = [_item("finetune", 0), _item("score", 1), _item("finetune", 2)]
    items = [it for it, _ in pairs]
    records = {it["key"]: rec for it, rec in pairs[:2]}  # the third is not computed yet
    path = tmp_path / "out" / "records.jsonl.gz"
    assert export_records(path, items, records) == 2

    cache = Cache(tmp_path / "cache")
    assert import_records(path, items, cache) == 2
    for it, rec in pairs[:2]:
        assert cache.get(it["kind"], it["key"]) == rec
    assert cache.get("finetune", pairs[2][0]["key"]) is None
    assert import_records(path, items, cache) == 0  # already cached: nothing taken twice


def test_export_is_byte_stable(tmp_path):
    pairs = [_item("score", n) for n in range(3)]
    items = [it for it, _ in pairs]
    records = {it["key"]: rec for it, rec in pairs}
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    export_records(a, items, records)
    export_records(b, list(reversed(items)), dict(reversed(records.items())))
    assert a.read_bytes() == b.read_bytes()


def test_import_rejects_records_whose_inputs_do_not_hash_to_their_key(tmp_path):
    (it_ok, rec_ok), (it_bad, rec_bad), (it_kind, rec_kind) = _item("score", 0), _item("score", 1), _item("finetune", 2)
    path = tmp_path / "records.jsonl.gz"
    lines = [
        {"kind": "score", "key": it_ok["key"], "record": rec_ok},
        {"kind": "score", "key": it_bad["key"], "record": {**rec_bad, "inputs": {**rec_bad["inputs"], "model": "edited"}}},
        {"kind": "score", "key": it_kind["key"], "record": rec_kind},  # right inputs, wrong kind
        {"kind": "score", "key": digest({"x": 1}), "record": {"inputs": {"x": 1}}},  # not in the plan
    ]
    with gzip.open(path, "wt") as fh:
        fh.write("".join(json.dumps(x) + "\n" for x in lines))
    cache = Cache(tmp_path / "cache")
    assert import_records(path, [it_ok, it_bad, it_kind], cache) == 1
    assert cache.get("score", it_ok["key"]) == rec_ok
    assert cache.get("score", it_bad["key"]) is None
    assert cache.get("finetune", it_kind["key"]) is None


def test_import_of_a_missing_file_takes_nothing(tmp_path):
    assert import_records(tmp_path / "absent.jsonl.gz", [_item("score", 0)[0]], Cache(tmp_path / "c")) == 0
