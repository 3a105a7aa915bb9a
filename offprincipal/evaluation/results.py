"""The result file of one (suite, checkpoint), its compact samples file, reading back, paired comparison.

Result JSON (``SCHEMA``), top level: ``checkpoint`` (id, directory, the caller's provenance:
resolved revision or run/step), ``suite`` (filled settings), ``backend`` (name, model
arguments, context budget), ``versions`` (lm-eval, torch, transformers, vllm if present,
math-verify, datasets), ``tasks``. Per task: ``k``, ``n_problems``, ``n_samples``, the
``sampling`` settings, the ``data`` read (path, sha256, rows), ``problem_ids``, ``primary``
(the score the paper reports) and ``scores``: for each score its label, ``avg_at_k``,
``stderr`` (over problems), ``ci95`` (percentile bootstrap over problems), ``pass_at_k``
(unbiased, at k), ``per_problem`` accuracy and ``per_response`` correctness; then the
``truncation_rate`` and ``lm_eval_metrics`` (lm-eval's own aggregates, which must agree).

Samples file: gzip JSON Lines, one line per problem: task, doc id, problem id, the prompt as
rendered, the gold, the k responses, the extracted answers, per-response correctness under
each score, per-response truncation flags.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np

from offprincipal.evaluation import stats
from offprincipal.io import atomic_path, write_json

SCHEMA = "offprincipal.evaluation.result/1"
BOOTSTRAP = {"n_boot": 10000, "seed": 0}

SCORE_LABELS = {
    "is_equiv": "primary (Evalchemy): last \\boxed{} answer, lm-eval hendrycks_math is_equiv against the gold",
    "math_verify": "secondary (not Evalchemy): math-verify verify(parse('\\boxed{gold}'), parse(last \\boxed{} "
                   "of the response, or the whole response when it has none))",
    "toy_verifier": "primary: offprincipal.toy.task.is_correct (final integer after the last '=')",
}
MATH_SCORES = ("is_equiv", "math_verify")
TOY_SCORES = ("toy_verifier",)


class ResultError(ValueError):
    pass


def _finite(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def score_summary(name: str, correct: list[list[int]], k: int) -> dict:
    """Statistics of one score over problems (``correct[i]`` = the k 0/1 outcomes of problem i)."""
    per_problem = stats.per_problem_accuracy(correct)
    counts = np.array([sum(row) for row in correct])
    return {
        "label": SCORE_LABELS[name],
        "avg_at_k": float(per_problem.mean()),
        "stderr": _finite(stats.standard_error(per_problem)),
        "ci95": list(stats.bootstrap_ci(per_problem, **BOOTSTRAP)),
        "pass_at_k": float(np.mean(stats.pass_at_k(np.full(len(correct), k), counts, k))),
        "per_problem": per_problem.tolist(),
        "per_response": [list(map(int, row)) for row in correct],
    }


def write_result(path: str | os.PathLike, result: dict) -> None:
    write_json(path, result)


def write_samples(path: str | os.PathLike, lines: list[dict]) -> None:
    """gzip JSON Lines, written atomically; mtime 0 so equal contents give equal bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            for line in lines:
                gz.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))


def read_samples(path: str | os.PathLike) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ----------------------------------------------------------------------------- reading back

_TOP = ("schema", "checkpoint", "suite", "backend", "versions", "tasks")
_TASK = ("k", "n_problems", "n_samples", "sampling", "data", "problem_ids", "primary", "scores", "truncation_rate")
_SCORE = ("label", "avg_at_k", "stderr", "ci95", "pass_at_k", "per_problem", "per_response")


def validate_result(result: dict, source: str = "<result>") -> dict:
    """Check a result dict's structure and internal consistency; raise naming the field."""
    def bad(field: str, why: str):
        raise ResultError(f"{source}: field '{field}' {why}")

    if not isinstance(result, dict):
        raise ResultError(f"{source}: not a JSON object")
    for key in _TOP:
        if key not in result:
            bad(key, "is missing")
    if result["schema"] != SCHEMA:
        bad("schema", f"is {result['schema']!r}, expected {SCHEMA!r}")
    if not isinstance(result["tasks"], dict) or not result["tasks"]:
        bad("tasks", "must be a non-empty mapping")
    for task, rec in result["tasks"].items():
        for key in _TASK:
            if key not in rec:
                bad(f"tasks.{task}.{key}", "is missing")
        n, k = rec["n_problems"], rec["k"]
        if len(rec["problem_ids"]) != n:
            bad(f"tasks.{task}.problem_ids", f"has {len(rec['problem_ids'])} entries, n_problems is {n}")
        if len(set(rec["problem_ids"])) != n:
            bad(f"tasks.{task}.problem_ids", "repeats an id")
        if rec["n_samples"] != n * k:
            bad(f"tasks.{task}.n_samples", f"is {rec['n_samples']}, expected n_problems x k = {n * k}")
        if rec["primary"] not in rec["scores"]:
            bad(f"tasks.{task}.primary", f"names {rec['primary']!r}, not one of the scores {sorted(rec['scores'])}")
        for score, summary in rec["scores"].items():
            where = f"tasks.{task}.scores.{score}"
            for key in _SCORE:
                if key not in summary:
                    bad(f"{where}.{key}", "is missing")
            if len(summary["per_problem"]) != n:
                bad(f"{where}.per_problem", f"has {len(summary['per_problem'])} entries, n_problems is {n}")
            if len(summary["per_response"]) != n or any(len(r) != k for r in summary["per_response"]):
                bad(f"{where}.per_response", f"must be {n} lists of k = {k} outcomes")
            if not np.allclose(summary["per_problem"], [np.mean(r) for r in summary["per_response"]]):
                bad(f"{where}.per_problem", "disagrees with per_response")
            if not math.isclose(summary["avg_at_k"], float(np.mean(summary["per_problem"])), abs_tol=1e-12):
                bad(f"{where}.avg_at_k", "disagrees with the mean of per_problem")
    return result


def read_result(path: str | os.PathLike) -> dict:
    """A result file, validated (errors name the file and the field)."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such result file") from None
    except json.JSONDecodeError as err:
        raise ResultError(f"{path}: not valid JSON ({err})") from None
    return validate_result(result, str(path))


# ----------------------------------------------------------------------------- paired comparison


def _load(result) -> tuple[dict, str]:
    if isinstance(result, (str, os.PathLike)):
        return read_result(result), str(result)
    return validate_result(result), "<result>"


def aligned_per_problem(result_a, result_b, task: str, score: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-problem accuracy of A and B on ``task`` in the same problem order (matched by id),
    and the score used (``score`` defaults to the task's primary)."""
    a, src_a = _load(result_a)
    b, src_b = _load(result_b)
    for res, src in ((a, src_a), (b, src_b)):
        if task not in res["tasks"]:
            raise ResultError(f"{src}: has no task {task!r} (it has {sorted(res['tasks'])})")
    ta, tb = a["tasks"][task], b["tasks"][task]
    score = score or ta["primary"]
    for rec, src in ((ta, src_a), (tb, src_b)):
        if score not in rec["scores"]:
            raise ResultError(f"{src}: task {task!r} has no score {score!r} (it has {sorted(rec['scores'])})")
    ids_a, ids_b = ta["problem_ids"], tb["problem_ids"]
    if set(ids_a) != set(ids_b):
        only_a = sorted(set(ids_a) - set(ids_b), key=str)
        only_b = sorted(set(ids_b) - set(ids_a), key=str)
        raise ResultError(f"task {task!r}: {src_a} and {src_b} were evaluated on different problems "
                          f"({len(only_a)} only in the first, e.g. {only_a[:3]}; {len(only_b)} only in the second, "
                          f"e.g. {only_b[:3]})")
    pos_b = {pid: i for i, pid in enumerate(ids_b)}
    acc_a = np.asarray(ta["scores"][score]["per_problem"])
    acc_b = np.asarray(tb["scores"][score]["per_problem"])[[pos_b[pid] for pid in ids_a]]
    return acc_a, acc_b, score


def paired_difference(result_a, result_b, task: str, *, n_boot: int = 10000, seed: int = 0,
                      score: str | None = None) -> dict:
    """avg@k of A minus avg@k of B on ``task`` with a paired bootstrap 95% interval over problems.

    ``result_a`` / ``result_b`` are result dicts or paths. Both must hold ``task`` on the same
    problem ids (matched by id, so the order may differ); ``score`` defaults to the primary.
    """
    a, _ = _load(result_a)
    b, _ = _load(result_b)
    acc_a, acc_b, score = aligned_per_problem(a, b, task, score)
    out = stats.paired_bootstrap_diff(acc_a, acc_b, n_boot=n_boot, seed=seed)
    out.update({"task": task, "score": score, "a": a["checkpoint"]["id"], "b": b["checkpoint"]["id"],
                "avg_a": float(acc_a.mean()), "avg_b": float(acc_b.mean()),
                "k_a": a["tasks"][task]["k"], "k_b": b["tasks"][task]["k"],
                "n_boot": n_boot, "seed": seed})
    return out
