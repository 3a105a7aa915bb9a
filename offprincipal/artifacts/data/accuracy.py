"""Accuracy inputs of the artifacts: evaluation results (``eval/{suite}/{ckpt}.json``, written by
:mod:`offprincipal.evaluation`) and the artifact's paired comparisons (``eval/paired/{name}.csv``).

An :class:`Accuracy` is one checkpoint's avg@k on one task of the suite, or the mean over the
suite's tasks (the paper's "average" column), with its 95% bootstrap interval over problems.
A :class:`Difference` is a paired comparison of two checkpoints on the same problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv
from offprincipal.evaluation import stats
from offprincipal.evaluation.results import BOOTSTRAP, ResultError, read_result
from offprincipal.evaluation.stage import AVERAGE, PAIRED_COLUMNS


@dataclass(frozen=True)
class Accuracy:
    value: float
    lo: float
    hi: float
    task: str
    k: int | None
    n_problems: int

    def text(self, digits: int = 1) -> str:
        return f"{100 * self.value:.{digits}f} [{100 * self.lo:.{digits}f}, {100 * self.hi:.{digits}f}]"


@dataclass(frozen=True)
class Difference:
    a: str
    b: str
    diff: float
    lo: float
    hi: float
    n_problems: int

    def text(self, digits: int = 1) -> str:
        return f"{100 * self.diff:+.{digits}f} [{100 * self.lo:+.{digits}f}, {100 * self.hi:+.{digits}f}]"

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def read_evaluation(ctx: Context, path: str | os.PathLike, checkpoint: str | None) -> dict:
    """An evaluation result; it must be of the checkpoint the pair names."""
    try:
        result = read_result(path)
    except ResultError as err:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (evaluation result): {err}") from None
    if checkpoint is not None and result["checkpoint"]["id"] != checkpoint:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (evaluation result) is of checkpoint "
                                 f"{result['checkpoint']['id']!r}, the pair's checkpoint is {checkpoint!r}")
    return result


def evaluations(ctx: Context, side: str) -> list[dict]:
    """``side`` "base" or "ft": the evaluation of each pair's base / fine-tuned checkpoint."""
    key = {"base": "base_eval", "ft": "ft_eval"}[side]
    ckpt = {"base": "base", "ft": "finetuned"}[side]
    return [read_evaluation(ctx, f, ctx.pairs[pid].get(ckpt)) for pid, f in zip(ctx.pair_ids, ctx.files(key))]


def tasks_of(result: dict) -> list[str]:
    return list(result["tasks"])


def accuracy(result: dict, task: str | None = None, score: str | None = None) -> Accuracy:
    """avg@k on ``task`` (None: the only task, or the mean over the suite's tasks) by ``score``
    (None: each task's primary score)."""
    tasks = tasks_of(result)
    if task is None and len(tasks) == 1:
        task = tasks[0]
    if task is not None and task != AVERAGE:
        rec = result["tasks"][task]
        s = rec["scores"][score or rec["primary"]]
        return Accuracy(s["avg_at_k"], s["ci95"][0], s["ci95"][1], task, rec["k"], rec["n_problems"])
    per_task = [np.asarray(result["tasks"][t]["scores"][score or result["tasks"][t]["primary"]]["per_problem"])
                for t in tasks]
    lo, hi = stats.stratified_bootstrap_task_mean(per_task, **BOOTSTRAP)
    return Accuracy(float(np.mean([p.mean() for p in per_task])), lo, hi, AVERAGE, None,
                    int(sum(p.size for p in per_task)))


def base_accuracies(ctx: Context, task: str | None = None) -> dict[str, Accuracy]:
    """Accuracy per distinct base checkpoint, in the pairs' order."""
    out: dict[str, Accuracy] = {}
    for pid, result in zip(ctx.pair_ids, evaluations(ctx, "base")):
        out.setdefault(ctx.pairs[pid]["base"], accuracy(result, task))
    return out


def describe(result: dict) -> str:
    """What was evaluated and how, for a caption: tasks, k, problems, sampling."""
    parts = []
    for task, rec in result["tasks"].items():
        parts.append(f"{task}: avg@{rec['k']} on {rec['n_problems']} problems")
    rec = next(iter(result["tasks"].values()))
    sampling = rec["sampling"]
    how = (f"temperature {sampling.get('temperature')}, top-p {sampling.get('top_p')}, "
           f"up to {sampling.get('max_gen_toks')} new tokens; {result['backend']['name']} backend of lm-eval")
    return "; ".join(parts) + f" ({how}); intervals: 95% bootstrap over problems"


def read_paired(ctx: Context) -> pd.DataFrame:
    (path,) = ctx.files("paired", per_pair=False)
    return read_csv(ctx.name, path, PAIRED_COLUMNS, "paired accuracy comparisons")


def difference(ctx: Context, table: pd.DataFrame, a: str, b: str, task: str | None = None,
               score: str | None = None) -> Difference:
    """The paired comparison a minus b on ``task`` (None: the only task, or the average) by
    ``score`` (None: the primary score of the first task, which every task shares)."""
    rows = table[(table["a"] == a) & (table["b"] == b)]
    if rows.empty:
        raise ArtifactInputError(f"{ctx.name}: the paired comparisons hold no row for {a} minus {b}")
    tasks = [t for t in dict.fromkeys(rows["task"]) if t != AVERAGE]
    if task is None:
        task = tasks[0] if len(tasks) == 1 else AVERAGE
    rows = rows[rows["task"] == task]
    score = score or _primary_score(rows)
    rows = rows[rows["score"] == score]
    if len(rows) != 1:
        raise ArtifactInputError(f"{ctx.name}: the paired comparisons hold {len(rows)} rows for {a} minus {b} on "
                                 f"task {task!r}, score {score!r} (expected one)")
    r = rows.iloc[0]
    return Difference(a, b, float(r["diff"]), float(r["ci95_lo"]), float(r["ci95_hi"]), int(r["n_problems"]))


def _primary_score(rows: pd.DataFrame) -> str:
    # the result files list the primary score first; the paired table keeps that order
    return str(rows["score"].iloc[0])
