"""Training data for the verl backend: Hub datasets at pinned revisions, written as verl parquet.

One dataset of the config's ``datasets`` section is one parquet file in verl's RL format
(``verl/utils/dataset/rl_dataset.py``), one row per problem:

``prompt``         ``[{"role": "user", "content": <prompt_template with the problem>}]``
``data_source``    where the row comes from (the reward function dispatches on it)
``ability``        ``"math"``
``reward_model``   ``{"style": "rule", "ground_truth": <reference answer>}``
``extra_info``     ``{"index", "source_repo", "source_commit", "question"}``

A Hub dataset is the union of its ``parts``, each a repo fetched with
``huggingface_hub.snapshot_download(repo_type="dataset")`` restricted to its ``files``
patterns. The resolved commit is the snapshot directory's name and is recorded in the
dataset's manifest (a ``main`` revision is a mutable pin). Problems repeated within or
across parts are dropped after the first (``dedup``), e.g. DAPO-Math-17k stores each of its
~17k problems about 100 times. Toy datasets (``source: toy``) are a toy task's train split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from offprincipal.io import atomic_dir, write_json

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.parquet"
DATA_SUFFIXES = (".parquet", ".jsonl", ".json")

#: DAPO-Math-17k's prompt around each problem (BytedTsinghua-SIA/DAPO-Math-17k)
DAPO_PREFIX = "Solve the following math problem step by step."
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


class DatasetError(ValueError):
    """A dataset cannot be built as configured; the message names the dataset and the cause."""


# ---------------------------------------------------------------------------- reading fields


def field(row: dict, path: str):
    """``row``'s value at a dotted path; integer parts index lists (``prompt.0.content``)."""
    value = row
    for part in path.split("."):
        if isinstance(value, dict):
            if part not in value:
                raise KeyError(path)
            value = value[part]
        elif isinstance(value, (list, tuple)) and re.fullmatch(r"-?\d+", part):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def strip_dapo_prompt(text: str) -> str:
    """The problem inside a DAPO-Math-17k prompt (its instruction removed)."""
    if not text.startswith(DAPO_PREFIX) or "\n\n" not in text or DAPO_SUFFIX not in text:
        raise ValueError("not a DAPO-Math-17k prompt (instruction prefix or 'Remember to put your answer' suffix missing)")
    body = text.split("\n\n", 1)[1]
    return body.split(DAPO_SUFFIX, 1)[0].strip()


def question_key(question: str) -> str:
    """What two copies of one problem share: the text with whitespace runs collapsed."""
    return " ".join(question.split())


# ---------------------------------------------------------------------------- files


def read_records(path: str | os.PathLike) -> list[dict]:
    """The rows of one data file (.parquet, .jsonl, or a .json list of objects) as plain dicts."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json":
        obj = json.loads(path.read_text())
        if isinstance(obj, dict):  # {"data": [...]} or {"train": [...]}: one list inside
            lists = [v for v in obj.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DatasetError(f"{path}: a JSON object with {len(lists)} lists; expected a list of rows")
            obj = lists[0]
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise DatasetError(f"{path}: expected a JSON list of objects")
        return obj
    raise DatasetError(f"{path}: unsupported data file type (known: {', '.join(DATA_SUFFIXES)})")


def fetch_part(name: str, part: dict, *, cache_dir: str | os.PathLike | None) -> dict:
    """Download one part's data files; ``{"repo", "revision", "commit", "pinned", "path", "files"}``."""
    import huggingface_hub
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.utils import filter_repo_objects

    from offprincipal.checkpoints.hub import is_commit

    repo, revision = part["repo"], part["revision"]
    pinned = is_commit(revision)
    if not pinned:
        logger.warning(
            "dataset %r: revision %r of %s is a branch or tag, a mutable pin; the manifest records the commit it "
            "resolves to now. Freeze it to that commit in the config.",
            name,
            revision,
            repo,
        )
    try:
        path = huggingface_hub.snapshot_download(
            repo_id=repo, repo_type="dataset", revision=revision, cache_dir=cache_dir, allow_patterns=list(part["files"])
        )
    except Exception as err:
        hint = " HF_HUB_OFFLINE is set and the snapshot is not in the cache." if hf_constants.is_offline_mode() else ""
        raise DatasetError(
            f"dataset {name!r}: could not fetch {repo}@{revision} (files {part['files']}) from the Hugging Face Hub: "
            f"{type(err).__name__}: {err}.{hint}"
        ) from err
    snapshot = Path(path).absolute()
    commit = snapshot.name
    if not is_commit(commit) or (pinned and commit != revision):
        raise DatasetError(f"dataset {name!r}: snapshot_download returned {snapshot}, not a snapshot of a commit")
    found = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    files = [f for f in filter_repo_objects(found, allow_patterns=list(part["files"])) if f.endswith(DATA_SUFFIXES)]
    if not files:
        raise DatasetError(
            f"dataset {name!r}: {repo}@{commit} has no data files matching {part['files']} (snapshot holds {found[:10]})"
        )
    return {"repo": repo, "revision": revision, "commit": commit, "pinned": pinned, "path": str(snapshot), "files": files}


# ---------------------------------------------------------------------------- rows


def part_problems(name: str, part: dict, fetched: dict) -> Iterator[tuple[str, str | None]]:
    """``(question, answer)`` per row of a fetched part (answer None when it has none)."""
    qfmt, afmt = part.get("question_format", "plain"), part.get("answer_format", "plain")
    for rel in fetched["files"]:
        for i, row in enumerate(read_records(Path(fetched["path"]) / rel)):
            where = f"dataset {name!r}: {part['repo']} file {rel} row {i}"
            try:
                question, answer = field(row, part["question"]), field(row, part["answer"])
            except (KeyError, IndexError):
                raise DatasetError(
                    f"{where}: no field {part['question']!r} or {part['answer']!r} (row has {sorted(row)})"
                ) from None
            question = "" if question is None else str(question)
            if qfmt == "dapo_prompt":
                try:
                    question = strip_dapo_prompt(question)
                except ValueError as err:
                    raise DatasetError(f"{where}: {err}") from None
            answer = None if answer is None else str(answer).strip()
            if answer and afmt in ("last_boxed", "boxed_or_plain"):
                boxed = last_boxed(answer)
                answer = boxed.strip() if boxed is not None else (answer if afmt == "boxed_or_plain" else None)
            yield question.strip(), answer or None


def verl_row(question: str, answer: str, *, template: str, data_source: str, index: int, repo: str, commit: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": template.replace("{question}", question)}],
        "data_source": data_source,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"index": index, "source_repo": repo, "source_commit": commit, "question": question},
    }


def write_parquet(rows: Iterable[dict], out_dir: str | os.PathLike) -> Path:
    """Rows into ``out_dir/train.parquet`` (the directory is replaced atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    if not rows:
        raise DatasetError(f"{out_dir}: no rows to write")
    with atomic_dir(out_dir) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp / TRAIN_FILE)
        (tmp / TRAIN_FILE).chmod(0o644)
    return Path(out_dir) / TRAIN_FILE


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_hub_dataset(name: str, spec: dict, out_dir, manifest, *, cache_dir=None) -> dict:
    """Fetch every part of a Hub dataset, convert, deduplicate, write parquet and manifest."""
    rows, seen, parts = [], set(), []
    duplicates = 0
    for part in spec["parts"]:
        fetched = fetch_part(name, part, cache_dir=cache_dir)
        source = part.get("data_source", part["repo"])
        read = kept = no_answer = 0
        for question, answer in part_problems(name, part, fetched):
            read += 1
            if not question or answer is None:
                no_answer += 1
                continue
            key = question_key(question)
            if spec.get("dedup", True) and key in seen:
                duplicates += 1
                continue
            seen.add(key)
            rows.append(
                verl_row(
                    question, answer, template=spec["prompt_template"], data_source=source, index=len(rows),
                    repo=part["repo"], commit=fetched["commit"],
                )
            )
            kept += 1
        if kept == 0:
            raise DatasetError(f"dataset {name!r}: part {part['repo']} gave no usable rows ({read} read, {no_answer} without an answer)")
        parts.append({**{k: v for k, v in fetched.items() if k != "path"}, "snapshot": fetched["path"], "data_source": source,
                      "rows_read": read, "rows_kept": kept, "rows_without_answer": no_answer})
    path = write_parquet(rows, out_dir)
    record = {
        "name": name, "source": "hub", "path": str(path.resolve()), "rows": len(rows), "duplicates_dropped": duplicates,
        "dedup": spec.get("dedup", True), "prompt_template": spec["prompt_template"], "parts": parts,
        "sha256": _sha256(path),
    }
    write_json(manifest, record)
    return record


def build_toy_dataset(name: str, task: str, toy_data_dir, out_dir, manifest) -> dict:
    """A toy task's train split in verl's format (data_source ``toy/<task>``; the prompt is the
    toy prompt itself, the ground truth its integer answer)."""
    from offprincipal.toy.task import load_split

    problems = load_split(toy_data_dir, task, "train")
    rows = [
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "data_source": f"toy/{task}",
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(p["answer"])},
            "extra_info": {"index": i, "source_repo": None, "source_commit": None, "question": p["prompt"]},
        }
        for i, p in enumerate(problems)
    ]
    path = write_parquet(rows, out_dir)
    record = {"name": name, "source": "toy", "task": task, "path": str(path.resolve()), "rows": len(rows), "sha256": _sha256(path)}
    write_json(manifest, record)
    return record
