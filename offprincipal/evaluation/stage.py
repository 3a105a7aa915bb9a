"""The evaluation stage's two jobs: evaluate one (suite, checkpoint) named by its manifest, and
tabulate an artifact's paired accuracy comparisons.

Both are what ``workflow/scripts/evaluate.py`` and ``paired-evaluations.py`` call. The
checkpoint's manifest (``checkpoints/{ckpt}.json``, written by the fetch, toy, intervention or
training rules) is stored in the result as its provenance: the resolved Hub commit, or the run
and step that saved it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from offprincipal.evaluation import stats
from offprincipal.evaluation.results import aligned_per_problem, paired_difference, read_result
from offprincipal.io import write_table

#: the task name of the rows that average a multi-task suite (the paper's "average" column)
AVERAGE = "average"
PAIRED_COLUMNS = ("a", "b", "task", "score", "avg_a", "avg_b", "diff", "ci95_lo", "ci95_hi", "n_problems",
                  "k_a", "k_b", "n_boot", "seed")


def suite_settings(suite: dict) -> dict:
    """A config suite as offprincipal.evaluation takes it (the config's ``note`` is for readers)."""
    return {k: v for k, v in suite.items() if k != "note"}


def evaluate_manifest(manifest, *, suite: dict, backend: str, backend_args: dict, result_path,
                      samples_path, datasets_dir=None, threads: int = 1) -> dict:
    """Evaluate the checkpoint a manifest names on one suite; write the result and samples files."""
    from offprincipal.evaluation.runner import evaluate

    record = json.loads(Path(manifest).read_text())
    ckpt = record.get("name") or Path(manifest).stem
    if not record.get("path"):
        raise ValueError(f"checkpoint '{ckpt}': manifest {manifest} names no local 'path' to evaluate")
    result = evaluate(record["path"], suite=suite_settings(suite), backend=backend, backend_args=backend_args,
                      result_path=result_path, samples_path=samples_path, provenance=record,
                      datasets_dir=datasets_dir, threads=threads, checkpoint_id=ckpt)
    if result["checkpoint"]["id"] != ckpt:  # the file's checkpoint is the one its path names
        raise RuntimeError(f"evaluation of '{ckpt}' wrote a result for '{result['checkpoint']['id']}'")
    return result


def paired_table(contrasts: list[tuple[str, str]], results: dict[str, str | os.PathLike], *,
                 n_boot: int = 10000, seed: int = 0) -> pd.DataFrame:
    """One row per (contrast, task, score): avg@k of a minus avg@k of b with a paired bootstrap
    95% interval over the problems both were evaluated on. ``results``: checkpoint -> result file."""
    loaded = {ckpt: read_result(path) for ckpt, path in results.items()}
    rows = []
    for a, b in contrasts:
        for ckpt in (a, b):
            if ckpt not in loaded:
                raise KeyError(f"paired comparison {a} vs {b}: no evaluation result of checkpoint '{ckpt}'")
        tasks = loaded[a]["tasks"]
        for task, record in tasks.items():
            if task not in loaded[b]["tasks"]:
                raise ValueError(f"paired comparison {a} vs {b}: '{b}' was not evaluated on task {task!r}")
            for score in _scores(record):
                d = paired_difference(loaded[a], loaded[b], task, score=score, n_boot=n_boot, seed=seed)
                rows.append({**{k: d[k] for k in PAIRED_COLUMNS if k in d},
                             "ci95_lo": d["ci95"][0], "ci95_hi": d["ci95"][1]})
        if len(tasks) > 1:
            shared = [sc for sc in _scores(next(iter(tasks.values()))) if all(sc in r["scores"] for r in tasks.values())]
            for score in shared:
                rows.append(_average_row(loaded[a], loaded[b], list(tasks), score, n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def _scores(record: dict) -> list[str]:
    """A task's scores, primary first (readers take the first row of a comparison as the primary)."""
    return [record["primary"], *sorted(set(record["scores"]) - {record["primary"]})]


def _average_row(a: dict, b: dict, tasks: list[str], score: str, *, n_boot: int, seed: int) -> dict:
    """The mean over tasks of a minus b, paired within each task (tasks resampled independently)."""
    pairs = [aligned_per_problem(a, b, task, score)[:2] for task in tasks]
    d = stats.paired_bootstrap_task_mean(pairs, n_boot=n_boot, seed=seed)
    return {"a": a["checkpoint"]["id"], "b": b["checkpoint"]["id"], "task": AVERAGE, "score": score,
            "avg_a": float(sum(x.mean() for x, _ in pairs) / len(pairs)),
            "avg_b": float(sum(y.mean() for _, y in pairs) / len(pairs)),
            "diff": d["diff"], "ci95_lo": d["ci95"][0], "ci95_hi": d["ci95"][1], "n_problems": d["n_problems"],
            "k_a": None, "k_b": None, "n_boot": n_boot, "seed": seed}


def write_paired_table(contrasts, results: dict, out_csv, **kwargs) -> pd.DataFrame:
    table = paired_table([tuple(c) for c in contrasts], results, **kwargs)
    if table.empty:
        raise ValueError(f"{out_csv}: no paired comparisons to write")
    write_table(table, out_csv)
    return table
