"""offprincipal.training.data: the real ``snapshot_download(repo_type="dataset")``, offline,
against a locally laid-out Hugging Face cache, and the conversion to verl's parquet format."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants as hf_constants

from offprincipal.training.data import (
    DAPO_PREFIX,
    DAPO_SUFFIX,
    TRAIN_FILE,
    DatasetError,
    build_hub_dataset,
    build_toy_dataset,
    last_boxed,
)

COMMIT = "1111111111111111111111111111111111111111"
OTHER = "2222222222222222222222222222222222222222"
TEMPLATE = "{question} Let's think step by step and output the final answer within \\boxed{}."


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No token, offline, and an endpoint nothing listens on (as tests/test_hub.py)."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")


def _parquet_bytes(rows: list[dict], tmp: Path) -> bytes:
    path = tmp / f".{len(rows)}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path.read_bytes()


def populate_dataset_cache(cache: Path, repo: str, files: dict[str, bytes], *, commit: str = COMMIT, refs=("main",)) -> Path:
    """``files`` as a cached snapshot of dataset ``repo@commit`` (huggingface_hub 2.x layout)."""
    storage = cache / ("datasets--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    listing = {}
    for name, data in files.items():
        lfs = name.endswith(".parquet")
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        entry = {"size": len(data), "blob_id": blob_id}
        if lfs:
            entry.update(lfs_sha256=hashlib.sha256(data).hexdigest(), lfs_size=len(data))
        listing[name] = entry
        blob = storage / "blobs" / (hashlib.sha256(data).hexdigest() if lfs else blob_id)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    (storage / "trees").mkdir(exist_ok=True)
    (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return snapshot


def dapo_row(problem: str, answer: str) -> dict:
    text = f"{DAPO_PREFIX} The last line of your response should be of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}{DAPO_SUFFIX}"
    return {"data_source": "math_dapo", "prompt": [{"role": "user", "content": text}], "ability": "MATH",
            "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"}, "extra_info": {"index": "x"}}


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "cache"
    dapo = [dapo_row("What is $1+1$?", "2"), dapo_row("Find $x$ if $2x = 6$.", "3")] * 50  # stored ~100 times each
    populate_dataset_cache(cache, "org/DAPO", {"data/dapo.parquet": _parquet_bytes(dapo, tmp_path), "README.md": b"# d\n"},
                           commit=COMMIT)
    math = [
        {"problem": "What is $1+1$?", "solution": "Add: $1+1=\\boxed{2}$.", "level": "Level 1"},  # also in DAPO
        {"problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.", "solution": "We get $\\boxed{\\frac{3}{4}}$.", "level": "Level 2"},
        {"problem": "Simplify $\\sqrt{8}$.", "solution": "It is $\\boxed{2\\sqrt{2}}$", "level": "Level 3"},
        {"problem": "A problem without a boxed answer.", "solution": "No box here.", "level": "Level 5"},
    ]
    populate_dataset_cache(cache, "org/MATH", {"data/train-00000-of-00001.parquet": _parquet_bytes(math, tmp_path),
                                               "data/test-00000-of-00001.parquet": _parquet_bytes(math[:1], tmp_path)},
                           commit=OTHER, refs=("main",))
    return cache


PARTS = [
    {"repo": "org/DAPO", "revision": COMMIT, "files": ["data/dapo.parquet"], "question": "prompt.0.content",
     "question_format": "dapo_prompt", "answer": "reward_model.ground_truth", "data_source": "dapo_math_17k"},
    {"repo": "org/MATH", "revision": "main", "files": ["data/train-*.parquet"], "question": "problem",
     "answer": "solution", "answer_format": "last_boxed", "data_source": "math"},
]


def test_fetch_convert_and_deduplicate(cache, tmp_path, caplog):
    out, manifest = tmp_path / "ds", tmp_path / "ds.json"
    record = build_hub_dataset("dapo_math", {"parts": PARTS, "dedup": True, "prompt_template": TEMPLATE}, out, manifest, cache_dir=cache)
    assert json.loads(manifest.read_text()) == record
    rows = pq.read_table(out / TRAIN_FILE).to_pylist()
    # 100 DAPO rows -> 2 problems; MATH adds 2 new ones (1+1 is a duplicate, one has no boxed answer)
    assert [(r["extra_info"]["question"], r["reward_model"]["ground_truth"], r["data_source"]) for r in rows] == [
        ("What is $1+1$?", "2", "dapo_math_17k"),
        ("Find $x$ if $2x = 6$.", "3", "dapo_math_17k"),
        ("Compute $\\frac{1}{2}+\\frac{1}{4}$.", "\\frac{3}{4}", "math"),
        ("Simplify $\\sqrt{8}$.", "2\\sqrt{2}", "math"),
    ]
    assert rows[0]["prompt"] == [{"role": "user", "content": TEMPLATE.replace("{question}", "What is $1+1$?")}]
    assert all(r["ability"] == "math" and r["reward_model"]["style"] == "rule" for r in rows)
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2, 3]
    assert record["rows"] == 4 and record["duplicates_dropped"] == 99
    dapo, math = record["parts"]
    assert (dapo["commit"], dapo["pinned"], dapo["files"], dapo["rows_read"], dapo["rows_kept"]) == (COMMIT, True, ["data/dapo.parquet"], 100, 2)
    # a branch is resolved through the cached ref and the commit recorded (a mutable pin, warned about)
    assert (math["revision"], math["commit"], math["pinned"]) == ("main", OTHER, False)
    assert math["files"] == ["data/train-00000-of-00001.parquet"] and math["rows_without_answer"] == 1
    assert "mutable pin" in caplog.text
    assert rows[2]["extra_info"]["source_commit"] == OTHER


def test_without_dedup_every_row_stays(cache, tmp_path):
    record = build_hub_dataset("d", {"parts": PARTS[:1], "dedup": False, "prompt_template": TEMPLATE}, tmp_path / "d",
                               tmp_path / "d.json", cache_dir=cache)
    assert record["rows"] == 100


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"question": "problem_text"}, r"row 0: no field 'problem_text' or 'solution' \(row has \['level', 'problem', 'solution'\]\)"),
        ({"files": ["data/validation-*.parquet"]}, "no data files matching"),
        ({"revision": "v9"}, "could not fetch org/MATH@v9"),
        ({"question_format": "dapo_prompt"}, "not a DAPO-Math-17k prompt"),
    ],
)
def test_errors_name_the_dataset_and_the_cause(cache, tmp_path, edit, match):
    part = {**PARTS[1], **edit}
    with pytest.raises(DatasetError, match=match) as err:
        build_hub_dataset("math", {"parts": [part], "prompt_template": TEMPLATE}, tmp_path / "m", tmp_path / "m.json", cache_dir=cache)
    assert "'math'" in str(err.value)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.json").exists()


def test_last_boxed():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_toy_task_in_verl_format(tmp_path):
    from offprincipal.toy.task import build_datasets, load_split

    data = tmp_path / "toy"
    build_datasets(data, 0, tasks=["add_sub_d2"], train_size=8, test_size=2, pretrain_size=4, rl_task="add_sub_d2")
    record = build_toy_dataset("add_sub_d2", "add_sub_d2", data, tmp_path / "out", tmp_path / "out.json")
    rows = pq.read_table(tmp_path / "out" / TRAIN_FILE).to_pylist()
    problems = load_split(data, "add_sub_d2", "train")
    assert record["rows"] == len(rows) == len(problems) == 8
    assert [r["prompt"][0]["content"] for r in rows] == [p["prompt"] for p in problems]
    assert [r["reward_model"]["ground_truth"] for r in rows] == [str(p["answer"]) for p in problems]
    assert {r["data_source"] for r in rows} == {"toy/add_sub_d2"}
