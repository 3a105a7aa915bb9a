"""Evaluation stage: AIME24, AIME25, AMC23, MATH-500 and the toy held-out sets through lm-eval.

Public API:

* :func:`evaluate` — one checkpoint on one suite with the ``hf`` or ``vllm`` backend; writes a
  fixed-path result JSON and gzip samples (:mod:`offprincipal.evaluation.runner`).
* :data:`PAPER_DEFAULTS`, :func:`with_defaults`, :func:`write_task_dir` — suite settings and
  their run-time lm-eval task files (:mod:`offprincipal.evaluation.suites`).
* :func:`read_result`, :func:`paired_difference` — reading results back and the paired
  bootstrap comparison of two checkpoints (:mod:`offprincipal.evaluation.results`).
* :mod:`offprincipal.evaluation.stats` — avg@k, pass@k, standard error, bootstrap intervals.

The static lm-eval task definitions live in ``offprincipal/evaluation/tasks/`` (usable with
``lm_eval --include_path``) and the shipped data in ``offprincipal/evaluation/data/``.
"""

from offprincipal.evaluation.results import paired_difference, read_result, read_samples
from offprincipal.evaluation.runner import evaluate, evaluate_lm
from offprincipal.evaluation.suites import (
    PAPER_DEFAULTS,
    TASKS_DIR,
    with_defaults,
    write_task_dir,
)

__all__ = [
    "PAPER_DEFAULTS",
    "TASKS_DIR",
    "evaluate",
    "evaluate_lm",
    "paired_difference",
    "read_result",
    "read_samples",
    "with_defaults",
    "write_task_dir",
]
