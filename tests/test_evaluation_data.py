"""The shipped evaluation files: digests against SOURCES.md, tamper detection, field mapping."""

import hashlib
import json
import re
import shutil

import pytest

from offprincipal.evaluation import benchmarks
from offprincipal.evaluation.benchmarks import BENCHMARKS, DataIntegrityError, load_rows
from offprincipal.evaluation.tasks import utils as task_utils


def _sources_digests() -> dict:
    text = (benchmarks.DATA_DIR / "SOURCES.md").read_text()
    block = text.split("## sha256", 1)[1].split("```")[1]
    return {name: digest for digest, name in re.findall(r"([0-9a-f]{64})\s+(\S+)", block)}


def test_shipped_files_match_sources_md_and_row_counts():
    digests = _sources_digests()
    assert set(digests) == {b.filename for b in BENCHMARKS.values()}
    for bench in BENCHMARKS.values():
        data = bench.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == digests[bench.filename] == bench.sha256
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        assert len(rows) == bench.rows
        got, prov = load_rows(bench.name)
        assert got == rows and prov["sha256"] == bench.sha256 and prov["rows"] == bench.rows


def test_an_altered_shipped_file_is_refused(tmp_path, monkeypatch):
    for bench in BENCHMARKS.values():
        shutil.copy(bench.path, tmp_path / bench.filename)
    target = tmp_path / "amc23.json"
    data = bytearray(target.read_bytes())
    data[data.index(b'"answer":27')+ 10] = ord("8")  # 27 -> 28 on the first problem
    target.write_bytes(bytes(data))
    monkeypatch.setattr(benchmarks, "DATA_DIR", tmp_path)
    with pytest.raises(DataIntegrityError, match="benchmark 'amc23'.*sha256.*altered"):
        load_rows("amc23")
    load_rows("aime24")  # the untouched copies still load


def test_another_data_file_is_checked_against_the_given_sha256(tmp_path):
    rows = [json.loads(line) for line in BENCHMARKS["aime24"].path.read_text().splitlines()[:3]]
    path = tmp_path / "aime24_first3.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    got, prov = load_rows("aime24", path, digest)
    assert got == rows and prov == {"path": str(path.resolve()), "sha256": digest, "rows": 3}
    assert load_rows("aime24", path)[1]["sha256"] == digest  # no digest given: read, and recorded
    with pytest.raises(DataIntegrityError, match="aime24.*expected 0000"):
        load_rows("aime24", path, "0" * 64)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "problem": "p"}) + "\n")
    with pytest.raises(DataIntegrityError, match="line 1 lacks field 'expected_answer'"):
        load_rows("aime24", bad)
    with pytest.raises(KeyError, match="unknown benchmark"):
        load_rows("aime23")


def test_task_documents_map_each_benchmark_fields():
    raw = {name: [json.loads(line) for line in b.path.read_text().splitlines() if line.strip()]
           for name, b in BENCHMARKS.items()}
    amc, _ = task_utils.math_docs("amc23")
    # AMC23's question field is `question` and its golds are ints
    assert amc[0] == {"id": "0", "problem": raw["amc23"][0]["question"], "answer": "27"}
    aime24, _ = task_utils.math_docs("aime24")
    assert aime24[0]["answer"] == raw["aime24"][0]["expected_answer"]
    assert aime24[0]["problem"] == raw["aime24"][0]["problem"]
    math500, _ = task_utils.math_docs("math500")
    assert math500[0]["id"] == raw["math500"][0]["unique_id"]
    assert math500[0]["answer"] == raw["math500"][0]["answer"]
    aime25, _ = task_utils.math_docs("aime25")
    assert [d["id"] for d in aime25][:2] == ["I-1", "I-2"]


def test_float_golds_in_a_data_file_are_written_as_integers(tmp_path):
    # the Qwen2.5-Math copy of AMC23 stores "27.0"; such a file must still score
    path = tmp_path / "amc23_float.jsonl"
    path.write_text(json.dumps({"id": 0, "question": "q", "answer": "27.0"}) + "\n")
    docs, _ = task_utils.math_docs("amc23", path)
    assert docs[0]["answer"] == "27"
    assert task_utils.process_math_results(docs[0], [["\\boxed{27}", "\\boxed{27.0}"]]) == {
        "is_equiv_avg_at_k": 0.5, "math_verify_avg_at_k": 1.0}


def test_process_results_refuses_a_single_response():
    # the default take_first filter hands over one string; iterating it would score characters
    doc = {"id": "p", "answer": "2"}
    with pytest.raises(ValueError, match="take_first_k"):
        task_utils.process_math_results(doc, ["\\boxed{2}"])
    with pytest.raises(ValueError, match="take_first_k"):
        task_utils.process_toy_results({"id": "1+1=", "prompt": "1+1=", "answer": "2"}, ["2"])
